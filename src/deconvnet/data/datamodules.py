"""Lightning DataModules: stage 1, stage 2 and whole images. Each takes the whole
experiment config (``cfg``, a DictConfig of :class:`deconvnet.config.ExperimentConfig`).

Batches: ``cfg.data.batch_size`` is the GLOBAL batch (64, the paper's 8 x iter_size 8).
Each process loads ``cfg.data.per_device_batch_size`` examples, or batch_size / world size
when that is None; :func:`batch_plan` gives the gradient accumulation that keeps the
global batch whatever the number of devices (the trainer sets accumulate_grad_batches
from it).

Training loaders shuffle (Lightning swaps in a ``DistributedSampler`` under DDP) and drop
the last incomplete batch. Validation and evaluation loaders use
:class:`~deconvnet.data.samplers.EvalDistributedSampler` under DDP, so every image or
window is evaluated by exactly one process and none twice; being a ``DistributedSampler``
subclass, Lightning leaves it in place (``use_distributed_sampler`` may stay True).

Heavy work (reading the split lists and file headers, indexing all instances,
proposals) happens once, in ``prepare_data`` / ``setup``.
"""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from deconvnet.data.datasets import (
    InstanceIndex,
    Stage1Dataset,
    Stage2Dataset,
    WholeImageDataset,
    pad_collate,
)
from deconvnet.data.loader import UserErrorDataLoader
from deconvnet.data.official import data_source, official_datasets
from deconvnet.data.samplers import EvalDistributedSampler, distributed_context
from deconvnet.data.windows import window_params
from deconvnet.errors import UserError


def batch_plan(global_batch: int, world_size: int, per_device: int | None = None,
               min_per_device: int = 1, why: str = "") -> tuple[int, int]:
    """(per-device batch, gradient accumulation steps) so that
    per_device x world_size x accumulation == global_batch.

    per_device None: global_batch / world_size, no accumulation. Raises UserError when the
    numbers do not divide, or when a device would get fewer than ``min_per_device`` examples
    (``why`` says what needs them); the message names the key to change.
    """
    if global_batch < 1 or world_size < 1:
        raise UserError(f"data.batch_size ({global_batch}) and the number of devices ({world_size}) must be >= 1")
    if per_device is not None and int(per_device) < min_per_device:
        raise UserError(
            f"data.per_device_batch_size={per_device} is fewer than the {min_per_device} examples per "
            f"device that {why or 'training'} needs; raise data.per_device_batch_size to "
            f"{min_per_device} or more (or unset it: data.per_device_batch_size=null)"
        )
    if per_device is None and global_batch < min_per_device * world_size:
        fewer = " or use fewer devices (trainer.devices)" if world_size > 1 else ""
        raise UserError(
            f"data.batch_size={global_batch} (the global batch) over {world_size} device(s) gives "
            f"{global_batch // world_size} example(s) per device, fewer than the {min_per_device} "
            f"that {why or 'training'} needs; raise data.batch_size to {min_per_device * world_size} "
            f"or more{fewer}"
        )
    if per_device is None:
        if global_batch % world_size:
            raise UserError(
                f"data.batch_size={global_batch} (the global batch) cannot be split evenly over "
                f"{world_size} devices; choose a multiple of {world_size} or set "
                "data.per_device_batch_size"
            )
        return global_batch // world_size, 1
    per_device = int(per_device)
    if per_device < 1 or global_batch % (per_device * world_size):
        raise UserError(
            f"data.batch_size={global_batch} (the global batch) is not a multiple of "
            f"data.per_device_batch_size={per_device} x {world_size} devices; change one of them "
            "so that gradient accumulation can keep the global batch"
        )
    return per_device, global_batch // (per_device * world_size)


def open_split(cfg, split: str):
    """The reader of one split of cfg.data.root (checks lists, files and sizes once); a
    recipe's synthetic set (cfg.data.synthetic) is made first when missing; with
    cfg.data.store, the split's decoded store (built first when missing or stale)."""
    from deconvnet.data.synthetic import ensure_synthetic
    from deconvnet.data.voc import VOCSegmentationIndex

    ensure_synthetic(cfg)
    reader = VOCSegmentationIndex(cfg.data.root, split)
    if not cfg.data.get("store", False):
        return reader
    from deconvnet.data.store import open_store

    return open_store(reader, cfg.data.cache_dir)


def window_pipeline(cfg) -> str:
    """cfg.data.pipeline (workers | device; the schema checks the choice); device needs the store."""
    pipeline = str(cfg.data.get("pipeline", "workers"))
    if pipeline == "device" and not cfg.data.get("store", False):
        raise UserError("data.pipeline=device cuts windows from the decoded store: set data.store=true "
                        "(or data.pipeline=workers)")
    return pipeline


class _DeconvNetData(L.LightningDataModule):
    """What the three DataModules share: batch sizes, loaders, the distributed context."""

    def __init__(self, cfg) -> None:
        super().__init__()
        self.cfg = cfg
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

    # ---- the distributed context ---------------------------------------------------------
    def _world(self) -> tuple[int, int]:
        """(world size, global rank): from the attached trainer, else the process group."""
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return int(trainer.world_size), int(trainer.global_rank)
        return distributed_context()

    def per_device_batch_size(self) -> int:
        data = self.cfg.data
        return batch_plan(int(data.batch_size), self._world()[0], data.per_device_batch_size)[0]

    def accumulate_grad_batches(self) -> int:
        data = self.cfg.data
        return batch_plan(int(data.batch_size), self._world()[0], data.per_device_batch_size)[1]

    # ---- loaders --------------------------------------------------------------------------
    def _loader(self, dataset: Dataset, batch_size: int, train: bool, collate_fn=None) -> DataLoader:
        workers = int(self.cfg.data.num_workers)
        sampler = None
        if not train:
            world, rank = self._world()
            sampler = EvalDistributedSampler(dataset, num_replicas=world, rank=rank)
        return UserErrorDataLoader(  # a worker's UserError reaches the caller as itself
            dataset, batch_size=batch_size, shuffle=train if sampler is None else False,
            sampler=sampler, drop_last=train, num_workers=workers,
            persistent_workers=workers > 0, pin_memory=torch.cuda.is_available(),
            collate_fn=collate_fn,
        )

    def _require(self, dataset: Dataset | None, what: str) -> Dataset:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() has not built the {what} set yet")
        return dataset

    def train_dataloader(self) -> DataLoader:
        dataset = self._require(self.train_set, "training")
        batch = self.per_device_batch_size()
        if len(dataset) < batch:
            raise UserError(
                f"the training set of split '{self.cfg.data.train_split}' has {len(dataset)} examples, "
                f"fewer than one per-device batch ({batch}); lower data.batch_size"
            )
        return self._loader(dataset, batch, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._require(self.val_set, "validation"), self.per_device_batch_size(), train=False)


class Stage1DataModule(_DeconvNetData):
    """Stage 1: one window per annotated instance of cfg.data.train_split (class-balanced by
    default); validation on the same windows of cfg.data.val_split, not augmented or balanced."""

    def setup(self, stage: str | None = None) -> None:
        data = self.cfg.data
        if data_source(self.cfg) == "official":  # the release's lists (data/official.py)
            if self.train_set is None:
                self.train_set, self.val_set = official_datasets(self.cfg)
            return
        if self.train_set is None and stage in (None, "fit"):
            reader = open_split(self.cfg, data.train_split)
            self.train_set = self._training_set(reader, InstanceIndex.build(reader))
        if self.val_set is None and stage in (None, "fit", "validate"):
            reader = open_split(self.cfg, data.val_split)
            self.val_set = Stage1Dataset(
                reader, InstanceIndex.build(reader), **window_params(data), balance=False,
                train=False, window_size=data.window_size, crop_size=data.crop_size)
        if window_pipeline(self.cfg) == "device":
            self._windows_on_device()

    def _windows_on_device(self) -> None:
        """data.pipeline=device: the loaders yield window descriptions, cut by the training
        module's on_after_batch_transfer from ``window_sources`` (see data/device_windows.py)."""
        from deconvnet.data.device_windows import DeviceWindowSource, WindowSpecs

        if not hasattr(self, "window_sources"):
            self.window_sources = {}
        for name in ("train", "val"):
            dataset = getattr(self, f"{name}_set")
            if dataset is not None and not isinstance(dataset, WindowSpecs):
                setattr(self, f"{name}_set", WindowSpecs(dataset, name))
                self.window_sources[name] = DeviceWindowSource(dataset.reader, dataset.crop_size)

    def _training_set(self, reader, index: InstanceIndex) -> Dataset:
        data = self.cfg.data
        return Stage1Dataset(reader, index, **window_params(data), balance=data.balance_classes,
                             train=True, window_size=data.window_size, crop_size=data.crop_size,
                             seed=int(self.cfg.seed))


def training_proposal_config(cfg):
    """``cfg`` with data.proposals.top_k = data.proposals.train_top_k: the proposal cache
    stage 2 reads (the same file as evaluation's when the two numbers agree)."""
    from omegaconf import OmegaConf

    return OmegaConf.merge(cfg, {"data": {"proposals": {"top_k": int(cfg.data.proposals.train_top_k)}}})


class Stage2DataModule(Stage1DataModule):
    """Stage 2: windows of the top data.proposals.train_top_k proposals of each image of
    cfg.data.train_split whose box has IoU >= cfg.data.iou_threshold with a ground-truth box
    (plus the stage-1 examples with data.stage2_include_stage1). Proposals are computed and
    cached in ``prepare_data`` (once per node), then read in ``setup``. Validation: the
    stage-1 windows of cfg.data.val_split, as in stage 1."""

    def prepare_data(self) -> None:
        from deconvnet.data.proposals import ensure_proposals

        if data_source(self.cfg) == "official":
            return  # the release's windows need no proposals
        ensure_proposals(training_proposal_config(self.cfg), self.cfg.data.train_split)

    def _training_set(self, reader, index: InstanceIndex) -> Dataset:
        from deconvnet.data.proposals import load_proposals

        data = self.cfg.data
        proposals = load_proposals(training_proposal_config(self.cfg), data.train_split, reader=reader)
        return Stage2Dataset(reader, proposals, index, iou_threshold=data.iou_threshold,
                             **window_params(data), balance=data.balance_classes,
                             include_stage1=data.stage2_include_stage1,
                             top_k=int(data.proposals.train_top_k),
                             extended=bool(data.proposals.extended), train=True,
                             window_size=data.window_size, crop_size=data.crop_size,
                             seed=int(self.cfg.seed))


class WholeImageDataModule(_DeconvNetData):
    """Whole images: FCN-8s training on cfg.data.train_split (longer side capped at
    cfg.data.max_image_size when set; batches of different sizes are padded with 0 / 255)
    and evaluation loaders (batch 1, original size, every image once across processes)."""

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self._eval_sets: dict[str, WholeImageDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        data = self.cfg.data
        if self.train_set is None and stage in (None, "fit"):
            self.train_set = WholeImageDataset(open_split(self.cfg, data.train_split), data.max_image_size)
        if stage in (None, "fit", "validate"):
            self.val_set = self.eval_dataset(data.val_split)
        if stage in ("test", "predict"):
            self.eval_dataset(self.cfg.eval.split)

    def eval_dataset(self, split: str | None = None) -> WholeImageDataset:
        split = str(split or self.cfg.data.val_split)
        if split not in self._eval_sets:
            self._eval_sets[split] = WholeImageDataset(open_split(self.cfg, split))
        return self._eval_sets[split]

    def eval_dataloader(self, split: str | None = None) -> DataLoader:
        """Batch-1 loader over ``split`` (default cfg.data.val_split): dicts
        {"image": uint8 1x3xHxW, "label": int64 1xHxW, "id": [str], "index": int64 [1]}."""
        return self._loader(self.eval_dataset(split), batch_size=1, train=False)

    def train_dataloader(self) -> DataLoader:
        dataset = self._require(self.train_set, "training")
        batch = self.per_device_batch_size()
        collate = pad_collate if batch > 1 else None
        return self._loader(dataset, batch, train=True, collate_fn=collate)

    def val_dataloader(self) -> DataLoader:
        return self.eval_dataloader(self.cfg.data.val_split)

    def test_dataloader(self) -> DataLoader:
        return self.eval_dataloader(self.cfg.eval.split)

    def predict_dataloader(self) -> DataLoader:
        return self.eval_dataloader(self.cfg.eval.split)


DATAMODULES = {"stage1": Stage1DataModule, "stage2": Stage2DataModule, "whole": WholeImageDataModule}


def build_datamodule(cfg) -> _DeconvNetData:
    """The DataModule named by cfg.data.kind (stage1 | stage2 | whole)."""
    kind = str(cfg.data.kind)
    if kind not in DATAMODULES:
        raise UserError(f"data.kind: unknown kind '{kind}'; choose one of {', '.join(DATAMODULES)}")
    return DATAMODULES[kind](cfg)
