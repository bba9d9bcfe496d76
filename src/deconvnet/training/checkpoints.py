"""Training checkpoint files: atomic writes, the last/final checkpoints, resume discovery.

Layout of a training run's ``output_dir``::

    config.yaml              resolved config + git revision
    wandb_run_id.txt         the W&B run this output_dir logs to (resumed with it)
    checkpoints/last.ckpt    the latest training state (model, optimiser, schedule, step),
                             rewritten after every validation and at the end of training
    checkpoints/final.ckpt   the finished network (after precise BN): what evaluation uses

Every file is written to a temporary name and moved into place with ``os.replace``, so a
crash or a full disk never leaves a half-written checkpoint behind the last good one.
Reading checkpoints (``read_checkpoint``, ``load_network``...) lives in
:mod:`deconvnet.runtime.checkpoints`, shared with evaluation; this module holds the
training side: where the files are and the Lightning callbacks that write them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO

from deconvnet.runtime.atomic import save_atomic
from deconvnet.runtime.checkpoints import (  # noqa: F401 - re-exported: reading lives in runtime
    NET_PREFIX,
    RECORD_KEY,
    checkpoint_model_config,
    checkpoint_record,
    checkpoint_step,
    load_network,
    load_weights_into,
    read_checkpoint,
)

CHECKPOINT_DIR = "checkpoints"
LAST = "last.ckpt"
FINAL = "final.ckpt"


def checkpoint_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / CHECKPOINT_DIR


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """torch.save to a unique temporary file beside ``path``, fsync, then ``os.replace``."""
    save_atomic(path, lambda handle: torch.save(obj, handle))


def find_resume_checkpoint(output_dir: str | Path) -> Path | None:
    """``checkpoints/last.ckpt`` of a previous run in ``output_dir``, if there is one."""
    last = checkpoint_dir(output_dir) / LAST
    return last if last.is_file() else None


# ---------------------------------------------------------------------------------------------
# Lightning glue: atomic checkpoint IO and the two checkpoint callbacks


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO, but written to a temporary file then ``os.replace``-d, with
    the run's records (``record``: the data fingerprint) stored under ``RECORD_KEY``."""

    def __init__(self, record: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.record = dict(record or {})

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options}")
        if self.record:
            checkpoint = {**checkpoint, RECORD_KEY: self.record}
        atomic_torch_save(checkpoint, path)


class LastCheckpoint(Callback):
    """Writes ``checkpoints/last.ckpt`` after every validation and when training ends,
    refusing to overwrite it with non-finite weights."""

    def __init__(self, dirpath: str | Path) -> None:
        self.path = Path(dirpath) / LAST
        self._saved_step = -1

    def _save(self, trainer: Any, pl_module: Any) -> None:
        from deconvnet.training.callbacks import NonFiniteLossError, weights_are_finite

        if trainer.sanity_checking or trainer.global_step == self._saved_step:
            return
        if not weights_are_finite(pl_module):
            raise NonFiniteLossError(
                f"training stopped: the weights became non-finite by optimiser step "
                f"{trainer.global_step}; {self.path} keeps the last good state. Lower optim.lr "
                "and resume with resume=auto."
            )
        trainer.save_checkpoint(self.path, weights_only=False)
        self._saved_step = trainer.global_step

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.state.fn == "fit":
            self._save(trainer, pl_module)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._save(trainer, pl_module)


class FinalCheckpoint(Callback):
    """Writes ``checkpoints/final.ckpt`` when training ends (after precise BN, which must come
    earlier in the callback list)."""

    def __init__(self, dirpath: str | Path) -> None:
        self.path = Path(dirpath) / FINAL

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        # weights, step and hyper-parameters only: half the size without the optimiser state
        trainer.save_checkpoint(self.path, weights_only=True)
