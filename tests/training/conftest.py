"""Fixtures for the training tests: W&B kept offline and local, tiny training overrides.

Training runs in these tests use networks at 1/16 width, 64-px windows, batches of 4 and
a few optimiser steps on the session's synthetic VOC tree.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

REPO = Path(__file__).resolve().parents[2]
EXPERIMENTS = REPO / "experiments"


@pytest.fixture(autouse=True)
def _quiet_offline_wandb(offline_wandb: Path) -> None:  # (also autouse for the whole suite)
    """Nothing reaches the network or the user's W&B folders; logging is offline."""


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    """One intra-op thread: tiny networks gain nothing from more, and a busy 2-core machine
    makes OpenMP threads wait on each other for seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny(synthetic_voc: Path, tmp_path: Path) -> Callable[..., list[str]]:
    """tiny(name, **extra) -> overrides for a few-step CPU run writing into tmp_path/name."""

    def overrides(name: str, window: bool = True, **extra: object) -> list[str]:
        values: dict[str, object] = {
            "name": name,
            "output_dir": tmp_path / name,
            "data.root": synthetic_voc,
            "data.synthetic": None,  # the demo recipes name their own set; this is another one
            "data.train_split": "train",
            "data.val_split": "val",
            "data.batch_size": 4,
            "data.num_workers": 0,
            "data.proposals.cache_dir": tmp_path / "proposals",  # the shared tree stays read-only
            "data.proposals.min_size": 16,
            "model.width": 0.0625,
            "model.pretrained": "none",
            "schedule.max_steps": 2,
            "schedule.val_every_n_steps": 2,
            "schedule.precise_bn_batches": 2,
            "trainer.accelerator": "cpu",
            "trainer.devices": 1,
            "trainer.limit_val_batches": 2,
            "trainer.log_every_n_steps": 1,
            "logger.mode": "disabled",
            "logger.log_images": 2,
        }
        if window:
            values.update({"model.input_size": 64, "data.window_size": 72, "data.crop_size": 64})
        else:
            values.update({"data.max_image_size": 96, "data.batch_size": 1})
        values.update({key.replace("__", "."): value for key, value in extra.items()})
        return [f"{key}={'null' if value is None else value}" for key, value in values.items()]

    return overrides


class Capture(Callback):
    """Records the training state when fit starts (after any resume) and when it ends."""

    def __init__(self) -> None:
        self.start: dict = {}
        self.end: dict = {}

    @staticmethod
    def _state(trainer, pl_module) -> dict:
        return {
            "step": trainer.global_step,
            "net": {k: v.detach().clone() for k, v in pl_module.net.state_dict().items()},
            "optimizer": copy.deepcopy(trainer.optimizers[0].state_dict()),
            "accumulate": trainer.accumulate_grad_batches,
        }

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = self._state(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self.end = self._state(trainer, pl_module)


class AtStep(Callback):
    """Calls ``action(trainer, pl_module)`` before the first batch of optimiser step ``step``."""

    def __init__(self, step: int, action: Callable) -> None:
        self.step, self.action = step, action

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            self.action(trainer, pl_module)
