"""Weights & Biases: the training logger, its run id across resumes, sample predictions, and a
reader for offline runs.

``logger.mode``:
- ``auto``: online when the user is logged in (``WANDB_API_KEY`` or a netrc entry for the W&B
  host, as ``wandb login`` writes), otherwise offline with a one-line notice; ``WANDB_MODE`` in
  the environment, when set, decides instead;
- ``online`` / ``offline``: as named; offline runs are kept under ``output_dir/wandb`` for
  ``wandb sync``;
- ``disabled``: no logger at all.

One run per training job: the logger is built in every process but only global rank 0
creates the run (Lightning's ``rank_zero_experiment``). The run id is stored in
``output_dir/wandb_run_id.txt`` so that ``resume=auto`` continues the same W&B run.
"""

from __future__ import annotations

import json
import netrc
import os
import secrets
import string
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import torch
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_only
from omegaconf import DictConfig

from deconvnet.config import ConfigError, git_revision, to_dict
from deconvnet.data.classes import IGNORE_INDEX

LOGGER_MODES = ("auto", "online", "offline", "disabled")
RUN_ID_FILE = "wandb_run_id.txt"
DEFAULT_HOST = "https://api.wandb.ai"


def wandb_logged_in() -> bool:
    """Whether W&B credentials are available (environment or netrc), without network access."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlsplit(os.environ.get("WANDB_BASE_URL", DEFAULT_HOST)).netloc
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc")).expanduser()
    try:
        return host != "" and netrc.netrc(path).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_mode(mode: str) -> str:
    """``logger.mode`` -> online | offline | disabled."""
    if mode not in LOGGER_MODES:
        raise ConfigError(f"logger.mode='{mode}' is unknown; valid: {', '.join(LOGGER_MODES)}")
    if mode != "auto":
        return mode
    env = os.environ.get("WANDB_MODE", "").lower()
    if env in ("online", "offline", "disabled"):
        return env
    if env == "dryrun":
        return "offline"
    return "online" if wandb_logged_in() else "offline"


def run_id_for(output_dir: Path, resuming: bool) -> str:
    """The W&B run id of ``output_dir``: the stored one when resuming, else a new one (stored)."""
    stored = output_dir / RUN_ID_FILE
    if resuming and stored.is_file() and stored.read_text().strip():
        return stored.read_text().strip()
    run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
    if rank_zero_only.rank == 0:
        tmp = stored.with_suffix(".tmp")
        tmp.write_text(run_id + "\n")
        tmp.replace(stored)
    return run_id


def build_logger(cfg: DictConfig, output_dir: Path, resuming: bool) -> WandbLogger | None:
    """The WandbLogger for a training run (None for ``logger.mode=disabled``)."""
    mode = resolve_mode(str(cfg.logger.mode))
    if mode == "disabled":
        return None
    run_id = run_id_for(output_dir, resuming)
    if mode == "offline":
        rank_zero_info(
            f"W&B: offline (not logged in); run {run_id} is kept under {output_dir / 'wandb'}, "
            f"upload it later with `wandb sync {output_dir / 'wandb'}/offline-run-*`"
        )
    logger = WandbLogger(
        name=str(cfg.name),
        project=str(cfg.logger.project),
        entity=cfg.logger.entity,
        save_dir=str(output_dir),
        id=run_id,
        mode=mode,
        tags=list(cfg.logger.tags),
        config={**to_dict(cfg), "git_revision": git_revision()},
        job_type="train",
        log_model=False,
    )
    logger._wandb_init.pop("anonymous", None)  # Lightning passes a setting wandb warns about
    return logger


def finish_run(logger: WandbLogger | None, failed: bool = False) -> None:
    """Close this process's W&B run, if it created or attached one."""
    if logger is not None and getattr(logger, "_experiment", None) is not None:
        experiment = logger._experiment
        if hasattr(experiment, "finish"):
            experiment.finish(exit_code=1 if failed else 0)
        logger._experiment = None


def log_segmentation_samples(
    logger: Any,
    key: str,
    samples: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    class_names: Sequence[str],
    step: int,
) -> None:
    """Log images with ground-truth and predicted masks (W&B's interactive mask overlay).

    ``samples``: (uint8 3 x H x W RGB image, H x W label, H x W prediction) triples.
    Does nothing for loggers other than W&B.
    """
    if not isinstance(logger, WandbLogger) or not samples:
        return
    names = {i: name for i, name in enumerate(class_names)}
    names[IGNORE_INDEX] = "void"
    pictures, masks = [], []
    for image, label, pred in samples:
        pictures.append(image.permute(1, 2, 0).cpu().numpy().astype(np.uint8))
        masks.append({
            "ground_truth": {"mask_data": label.cpu().numpy().astype(np.uint8), "class_labels": names},
            "prediction": {"mask_data": pred.cpu().numpy().astype(np.uint8), "class_labels": names},
        })
    logger.log_image(key=key, images=pictures, step=step, masks=masks)


# ---------------------------------------------------------------------------------------------
# offline runs: read what was logged (tests, and checking a run before `wandb sync`)

_BLOCK = 32768  # the .wandb transaction log is a LevelDB-style log of 32 KiB blocks
_HEADER = struct.Struct("<IHB")  # checksum, length, record type
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _log_records(path: Path) -> list[bytes]:
    data = path.read_bytes()
    ident, _magic, _version = struct.unpack("<4sHB", data[:7])
    if ident != b":W&B":
        raise ValueError(f"{path}: not a W&B transaction log")
    records, pending, pos = [], b"", 7
    while pos + _HEADER.size <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER.size:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = _HEADER.unpack_from(data, pos)
        if kind == 0 and length == 0:
            pos += left
            continue
        chunk = data[pos + _HEADER.size: pos + _HEADER.size + length]
        pos += _HEADER.size + length
        if kind == _FULL:
            records.append(chunk)
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            records.append(pending + chunk)
    return records


def read_offline_run(run_dir: str | Path) -> dict[str, Any]:
    """{"id", "config", "history" (one dict per log call), "summary"} of an offline run folder
    (``output_dir/wandb/offline-run-*``), decoded from its ``run-<id>.wandb`` file."""
    from wandb.proto import wandb_internal_pb2 as pb

    run_dir = Path(run_dir)
    files = sorted(run_dir.glob("run-*.wandb"))
    if not files:
        raise FileNotFoundError(f"{run_dir}: no run-*.wandb file")
    out: dict[str, Any] = {"id": None, "config": {}, "history": [], "summary": {}}

    def key_of(item: Any) -> str:
        return item.key or "/".join(item.nested_key)

    for raw in _log_records(files[0]):
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out["id"] = record.run.run_id
            for item in record.run.config.update:
                out["config"][key_of(item)] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                out["config"][key_of(item)] = json.loads(item.value_json)
        elif kind == "history":
            out["history"].append({key_of(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            for item in record.summary.update:
                out["summary"][key_of(item)] = json.loads(item.value_json)
    return out
