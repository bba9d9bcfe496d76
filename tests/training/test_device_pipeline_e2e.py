"""data.pipeline=device end to end: a few stage-1 steps, validation and precise BN on windows
cut by the module's on_after_batch_transfer from the decoded store."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from deconvnet.config import load_config
from deconvnet.training.checkpoints import read_checkpoint
from deconvnet.training.run import train

from .conftest import EXPERIMENTS

pytestmark = pytest.mark.slow


class SeeBatches(Callback):
    """Records the shape and dtype of what training and validation steps received."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, tuple, torch.dtype]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seen.append(("train", tuple(batch["image"].shape), batch["image"].dtype))

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.seen.append(("val", tuple(batch["image"].shape), batch["image"].dtype))


def test_stage1_trains_on_windows_cut_on_the_device(tiny, tmp_path):
    cfg = load_config(EXPERIMENTS / "table1" / "stage1.yaml",
                      tiny("device", data__pipeline="device", data__cache_dir=tmp_path / "cache"))
    seen = SeeBatches()
    final = train(cfg, callbacks=[seen])
    assert read_checkpoint(final)["global_step"] == 2
    assert ("train", (4, 3, 64, 64), torch.uint8) in seen.seen
    assert ("val", (4, 3, 64, 64), torch.uint8) in seen.seen
    assert list((tmp_path / "cache").glob("train-*.json")) and list((tmp_path / "cache").glob("val-*.json"))
