"""Checkpoint files: atomic writes, the last/final checkpoints, resume discovery, network loading.

Layout of a training run's ``output_dir``::

    config.yaml              resolved config + git revision
    wandb_run_id.txt         the W&B run this output_dir logs to (resumed with it)
    checkpoints/last.ckpt    the latest training state (model, optimiser, schedule, step),
                             rewritten after every validation and at the end of training
    checkpoints/final.ckpt   the finished network (after precise BN): what evaluation uses

Every file is written to a temporary name and moved into place with ``os.replace``, so a
crash or a full disk never leaves a half-written checkpoint behind the last good one.
Checkpoints are Lightning checkpoints: the network's weights are under ``state_dict`` with
the prefix ``net.`` and ``hyper_parameters["model"]`` holds the ``cfg.model`` section.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import nn

from deconvnet.errors import WeightsError

CHECKPOINT_DIR = "checkpoints"
LAST = "last.ckpt"
FINAL = "final.ckpt"
NET_PREFIX = "net."


def checkpoint_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / CHECKPOINT_DIR


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temporary file beside ``path``, fsync, then ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint on the CPU (tensors memory-mapped), or raise WeightsError saying why."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"checkpoint not found: {path}. Train first (deconvnet train ...) or fix the path."
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:
        raise WeightsError(f"{path}: not a readable checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise WeightsError(f"{path}: not a Lightning training checkpoint (no 'state_dict')")
    return checkpoint


def checkpoint_model_config(checkpoint: Mapping[str, Any], path: str | Path = "") -> dict[str, Any]:
    """The ``cfg.model`` section stored in a checkpoint."""
    model = checkpoint.get("hyper_parameters", {}).get("model")
    if not isinstance(model, Mapping) or "name" not in model:
        raise WeightsError(
            f"{path}: the checkpoint has no hyper_parameters['model'] section, so the network it "
            "holds is unknown; use a checkpoint written by `deconvnet train`"
        )
    return dict(model)


def _check_expected(model_cfg: Mapping[str, Any], expect: str | Mapping[str, Any] | None, path: Path) -> None:
    if expect is None:
        return
    wanted = {"name": expect} if isinstance(expect, str) else expect
    for key in ("name", "num_classes"):
        if key in wanted and wanted[key] is not None and str(wanted[key]) != str(model_cfg.get(key)):
            what = "network" if key == "name" else "number of classes"
            raise WeightsError(
                f"{path}: the checkpoint holds a {model_cfg.get('name')} network with "
                f"{model_cfg.get('num_classes')} classes, but a {what} of {wanted[key]} is "
                f"expected ({key}); point the config at a checkpoint of the right training run"
            )


# model keys that change the network's layers: a checkpoint resumes only under equal values
ARCHITECTURE_KEYS = ("name", "num_classes", "width", "input_size", "fcn_batch_norm")


def check_resumable(path: str | Path, model: Mapping[str, Any]) -> None:
    """Refuse to resume from a checkpoint of another network (name, classes, width, input
    size, FCN-8s BatchNorm) than ``model`` (cfg.model) describes: WeightsError saying which
    keys differ and how to start afresh, instead of Lightning's size-mismatch traceback."""
    path = Path(path)
    saved = checkpoint_model_config(read_checkpoint(path), path)
    differ = [f"model.{key}={model.get(key)} (checkpoint: {saved.get(key)})"
              for key in ARCHITECTURE_KEYS
              if key in saved and str(saved.get(key)) != str(model.get(key))]
    if differ:
        raise WeightsError(
            f"cannot resume from {path}: it holds another network than this config asks for: "
            f"{', '.join(differ)}. Use another output_dir, resume=never to start afresh, or the "
            "model settings of that run"
        )


def load_weights_into(
    net: nn.Module, path: str | Path, expect: str | Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Copy the ``net.*`` weights of a training checkpoint into ``net`` (strictly).

    ``expect`` (a model name, or a mapping with ``name`` and/or ``num_classes``) is checked
    against the checkpoint's model section first. Returns that section.
    """
    path = Path(path)
    checkpoint = read_checkpoint(path)
    model_cfg = checkpoint_model_config(checkpoint, path)
    _check_expected(model_cfg, expect, path)
    state = {
        key[len(NET_PREFIX):]: value
        for key, value in checkpoint["state_dict"].items()
        if key.startswith(NET_PREFIX)
    }
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong_shape = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs network {tuple(own[k].shape)}"
        for k in own.keys() & state.keys()
        if state[k].shape != own[k].shape
    ]
    if missing or unexpected or wrong_shape:
        details = "; ".join(
            part for part in (
                f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}" if missing else "",
                f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}" if unexpected else "",
                f"shape mismatch {wrong_shape[:3]}" if wrong_shape else "",
            ) if part
        )
        raise WeightsError(
            f"{path}: the weights do not fit the network ({details}). The checkpoint was trained "
            f"with model {model_cfg}; build the network with the same model.width/input_size/num_classes"
        )
    net.load_state_dict(state)
    return model_cfg


def load_network(path: str | Path, expect: str | Mapping[str, Any] | None = None) -> nn.Module:
    """Rebuild the network of a training checkpoint from its ``hyper_parameters["model"]`` and
    load its weights; returned in eval mode on the CPU.

    ``expect``: a model name (``"deconvnet"`` / ``"fcn8s"``) or a mapping with ``name`` and/or
    ``num_classes`` (e.g. ``cfg.model``; other keys are ignored); a checkpoint of another
    network or class count raises WeightsError saying which. The model section is also
    available on the result as ``net.model_config`` (a dict: weights_style, input_size, ...).
    """
    from deconvnet.models import build_model

    path = Path(path)
    model_cfg = checkpoint_model_config(read_checkpoint(path), path)
    _check_expected(model_cfg, expect, path)
    net = build_model({**model_cfg, "pretrained": "none", "init_from": None})
    load_weights_into(net, path)
    net.model_config = model_cfg
    return net.eval()


def checkpoint_step(path: str | Path) -> int:
    """The optimiser step a checkpoint was written at."""
    return int(read_checkpoint(path).get("global_step", 0))


def find_resume_checkpoint(output_dir: str | Path) -> Path | None:
    """``checkpoints/last.ckpt`` of a previous run in ``output_dir``, if there is one."""
    last = checkpoint_dir(output_dir) / LAST
    return last if last.is_file() else None


# ---------------------------------------------------------------------------------------------
# Lightning glue: atomic checkpoint IO and the two checkpoint callbacks


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO, but written to a temporary file then ``os.replace``-d."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options}")
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
