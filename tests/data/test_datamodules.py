"""DataModules: batch plans, the no-padding evaluation sampler, batch shapes and dtypes."""

from __future__ import annotations

import types

import pytest
import torch
from torch.utils.data import DistributedSampler

from deconvnet.config import load_config
from deconvnet.data.datamodules import (
    Stage1DataModule,
    Stage2DataModule,
    WholeImageDataModule,
    batch_plan,
    build_datamodule,
)
from deconvnet.data.samplers import EvalDistributedSampler
from deconvnet.errors import UserError


def make_cfg(root, cache, *overrides: str):
    return load_config(None, [
        f"data.root={root}", "data.train_split=train", "data.batch_size=4", "data.num_workers=0",
        f"data.proposals.cache_dir={cache}", "data.proposals.method=ground_truth",
        "data.proposals.min_size=8", "data.proposals.workers=1", *overrides,
    ])


def attach_trainer(module, world_size: int, rank: int) -> None:
    """What the DataModule reads from a Lightning trainer under DDP."""
    module.trainer = types.SimpleNamespace(world_size=world_size, global_rank=rank)


def test_batch_plan():
    assert batch_plan(64, 1) == (64, 1)
    assert batch_plan(64, 4) == (16, 1)
    assert batch_plan(64, 1, per_device=8) == (8, 8)  # the official 8 x iter_size 8
    assert batch_plan(64, 2, per_device=8) == (8, 4)
    assert batch_plan(1, 1) == (1, 1)
    with pytest.raises(UserError, match="cannot be split evenly over 3 devices"):
        batch_plan(64, 3)
    with pytest.raises(UserError, match="per_device_batch_size=6"):
        batch_plan(64, 2, per_device=6)
    with pytest.raises(UserError):
        batch_plan(0, 1)


@pytest.mark.parametrize("size", [1, 2, 7, 11, 24])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_eval_sampler_gives_every_index_exactly_once(size, world):
    dataset = list(range(size))
    seen = []
    for rank in range(world):
        sampler = EvalDistributedSampler(dataset, num_replicas=world, rank=rank)
        indices = list(sampler)
        assert indices == list(range(rank, size, world)) and len(sampler) == len(indices)
        seen += indices
    assert sorted(seen) == dataset  # each once, no padding
    # a DistributedSampler subclass: Lightning leaves it in place instead of wrapping it
    assert isinstance(EvalDistributedSampler(dataset, 1, 0), DistributedSampler)


def _check_window_batch(batch, batch_size: int, size: int) -> None:
    assert set(batch) == {"image", "label"}
    assert batch["image"].shape == (batch_size, 3, size, size) and batch["image"].dtype == torch.uint8
    assert batch["label"].shape == (batch_size, size, size) and batch["label"].dtype == torch.int64
    values = set(batch["label"].unique().tolist())
    assert values <= set(range(21)) | {255}


def test_stage1_datamodule_batches(synthetic_voc, tmp_path):
    module = Stage1DataModule(make_cfg(synthetic_voc, tmp_path, "data.crop_size=64", "data.window_size=72"))
    module.setup("fit")
    loader = module.train_dataloader()
    assert loader.drop_last and len(loader) == len(module.train_set) // 4
    _check_window_batch(next(iter(loader)), 4, 64)
    val = module.val_dataloader()
    assert not val.drop_last and isinstance(val.sampler, EvalDistributedSampler)
    _check_window_batch(next(iter(val)), 4, 64)
    # validation windows are neither balanced nor augmented: one per val instance
    assert len(module.val_set) == len(module.val_set.index)


def test_stage2_datamodule_prepares_proposals_then_batches(synthetic_voc, tmp_path):
    module = build_datamodule(make_cfg(synthetic_voc, tmp_path, "data.kind=stage2", "data.crop_size=48",
                                       "data.window_size=56"))
    assert isinstance(module, Stage2DataModule)
    module.prepare_data()
    assert len(list(tmp_path.glob("train-ground_truth-*.npz"))) == 1
    module.setup("fit")
    # the paper: proposal windows only, class-balanced on the best-overlapping instance's class
    proposal_counts = module.train_set.proposal_table.class_counts()
    counts = module.train_set.table.class_counts()
    present = proposal_counts > 0
    assert present.sum() > 1 and (counts[present] == proposal_counts.max()).all() and (counts[~present] == 0).all()
    _check_window_batch(next(iter(module.train_dataloader())), 4, 48)
    # the seed's mix: the stage-1 examples (balanced as in stage 1) plus the proposal windows
    mixed = build_datamodule(make_cfg(synthetic_voc, tmp_path, "data.kind=stage2", "data.crop_size=48",
                                      "data.window_size=56", "data.stage2_include_stage1=true"))
    mixed.setup("fit")
    stage1 = Stage1DataModule(module.cfg)
    stage1.setup("fit")
    assert len(mixed.train_set) == len(stage1.train_set) + len(module.train_set)
    # stage 2 reads the top data.proposals.train_top_k proposals (a cache of its own when it differs)
    fewer = build_datamodule(make_cfg(synthetic_voc, tmp_path, "data.kind=stage2", "data.crop_size=48",
                                      "data.window_size=56", "data.proposals.train_top_k=1",
                                      "data.balance_classes=false"))
    fewer.prepare_data()
    fewer.setup("fit")
    assert len(list(tmp_path.glob("train-ground_truth-*.npz"))) == 2
    images = fewer.train_set.proposal_table.image_index
    assert len(images) == len(set(images.tolist())) > 0  # at most one window per image


def test_per_device_batch_follows_the_world_size(synthetic_voc, tmp_path):
    module = Stage1DataModule(make_cfg(synthetic_voc, tmp_path, "data.crop_size=32", "data.window_size=32"))
    module.setup("fit")
    attach_trainer(module, world_size=2, rank=0)
    assert module.per_device_batch_size() == 2 and module.accumulate_grad_batches() == 1
    assert module.train_dataloader().batch_size == 2
    module.cfg.data.per_device_batch_size = 1
    assert module.per_device_batch_size() == 1 and module.accumulate_grad_batches() == 2


def test_whole_image_eval_loader(synthetic_voc, tmp_path):
    module = WholeImageDataModule(make_cfg(synthetic_voc, tmp_path))
    module.setup("validate")
    reader = module.eval_dataset().reader
    batches = list(module.eval_dataloader())
    assert len(batches) == len(reader)
    for i, batch in enumerate(batches):
        height, width = reader.sizes[i]
        assert batch["image"].shape == (1, 3, height, width) and batch["image"].dtype == torch.uint8
        assert batch["label"].shape == (1, height, width) and batch["label"].dtype == torch.int64
        assert batch["id"] == [reader.ids[i]]
        assert batch["index"].dtype == torch.int64 and batch["index"].tolist() == [i]

    # under DDP, rank r of w gets images r, r + w, ...: every image once over the ranks
    seen = []
    for rank in range(2):
        attach_trainer(module, world_size=2, rank=rank)
        indices = [int(b["index"]) for b in module.val_dataloader()]
        assert indices == list(range(rank, len(reader), 2))
        seen += indices
    assert sorted(seen) == list(range(len(reader)))


def test_whole_image_training_batches_are_padded(synthetic_voc, tmp_path):
    module = WholeImageDataModule(make_cfg(synthetic_voc, tmp_path, "data.batch_size=2",
                                           "data.max_image_size=96"))
    module.setup("fit")
    batch = next(iter(module.train_dataloader()))
    assert batch["image"].shape[:2] == (2, 3) and max(batch["image"].shape[2:]) <= 96
    assert batch["label"].shape == (2, *batch["image"].shape[2:]) and batch["label"].dtype == torch.int64


def test_unknown_kind(synthetic_voc, tmp_path):
    with pytest.raises(UserError, match="data.kind"):
        build_datamodule(make_cfg(synthetic_voc, tmp_path, "data.kind=fancy"))


def test_lightning_keeps_the_eval_sampler_and_distributes_training(synthetic_voc, tmp_path):
    """Lightning's own check (2.6): it only swaps in its padding DistributedSampler when the
    loader's sampler is not already a DistributedSampler."""
    import lightning as L

    trainer = L.Trainer(strategy="ddp", accelerator="cpu", devices=2, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False)
    module = WholeImageDataModule(make_cfg(synthetic_voc, tmp_path, "data.batch_size=2"))
    module.setup("fit")
    attach_trainer(module, world_size=2, rank=1)
    connector = trainer._data_connector
    assert not connector._requires_distributed_sampler(module.val_dataloader())
    assert connector._requires_distributed_sampler(module.train_dataloader())
