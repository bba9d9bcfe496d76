"""Reading training checkpoints: the network they hold, checked against what is expected.

Checkpoints are Lightning checkpoints written by ``deconvnet train``: the network's weights
are under ``state_dict`` with the prefix ``net.``, ``hyper_parameters["model"]`` holds the
``cfg.model`` section (so the network can be rebuilt without its config), and
``deconvnet`` holds the run's records (the data fingerprint of the training data, see
:mod:`deconvnet.runtime.run_folder`). Training and evaluation both read them through here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deconvnet.errors import WeightsError

NET_PREFIX = "net."
RECORD_KEY = "deconvnet"  # the checkpoint entry holding the run's records (data fingerprint)


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


def checkpoint_record(path: str | Path, checkpoint: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The run records stored in a checkpoint (``{"data": fingerprint, ...}``; empty for
    checkpoints written before they existed or by other tools). ``checkpoint``: the file's
    contents when already read."""
    checkpoint = read_checkpoint(path) if checkpoint is None else checkpoint
    record = checkpoint.get(RECORD_KEY, {})
    return dict(record) if isinstance(record, Mapping) else {}


# model keys that change the network's layers: a checkpoint resumes only under equal values
ARCHITECTURE_KEYS = ("name", "num_classes", "width", "input_size", "fcn_batch_norm")


def check_resumable(path: str | Path, model: Mapping[str, Any],
                    checkpoint: Mapping[str, Any] | None = None) -> None:
    """Refuse to resume from a checkpoint of another network (name, classes, width, input
    size, FCN-8s BatchNorm) than ``model`` (cfg.model) describes: WeightsError saying which
    keys differ and how to start afresh, instead of Lightning's size-mismatch traceback.
    ``checkpoint``: the file's contents when already read."""
    path = Path(path)
    saved = checkpoint_model_config(read_checkpoint(path) if checkpoint is None else checkpoint, path)
    differ = [f"model.{key}={model.get(key)} (checkpoint: {saved.get(key)})"
              for key in ARCHITECTURE_KEYS
              if key in saved and str(saved.get(key)) != str(model.get(key))]
    if differ:
        raise WeightsError(
            f"cannot resume from {path}: it holds another network than this config asks for: "
            f"{', '.join(differ)}. Use another output_dir, resume=never to start afresh, or the "
            "model settings of that run"
        )
