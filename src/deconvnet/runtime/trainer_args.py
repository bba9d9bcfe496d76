"""The Lightning Trainer arguments that say where and how to run, shared by train and eval."""

from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf


def hardware_kwargs(trainer_cfg: DictConfig) -> dict:
    """accelerator, devices, num_nodes, strategy, precision, deterministic from ``cfg.trainer``
    (a strategy that starts its own processes as :func:`trainer_strategy` makes it)."""
    from deconvnet.runtime.spawn_errors import trainer_strategy  # imports Lightning

    devices = trainer_cfg.devices
    return {
        "accelerator": str(trainer_cfg.accelerator),
        "devices": list(devices) if OmegaConf.is_list(devices) else devices,
        "num_nodes": int(trainer_cfg.num_nodes),
        "strategy": trainer_strategy(str(trainer_cfg.strategy)),  # ddp_spawn: UserErrors come back
        "precision": str(trainer_cfg.precision),
        "deterministic": bool(trainer_cfg.deterministic),
    }


def world_size(trainer_cfg: DictConfig) -> int:
    """Number of processes the trainer config asks for (devices x nodes)."""
    accelerator = str(trainer_cfg.accelerator).lower()
    devices = trainer_cfg.devices
    if OmegaConf.is_list(devices):
        devices = list(devices)
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if isinstance(devices, list):
        count = len(devices)
    elif isinstance(devices, str) and "," in devices:
        count = len([d for d in devices.split(",") if d.strip()])
    elif str(devices) in ("auto", "-1"):
        count = torch.cuda.device_count() if gpu else 1
    else:
        count = int(devices)
    return count * int(trainer_cfg.num_nodes)


def is_launcher_rank_zero() -> bool:
    """Whether this process is global rank 0 of its launch (torchrun / SLURM set RANK or
    SLURM_PROCID; a single process or the parent of ``ddp_spawn`` has neither): the one
    process that owns the run folder and writes its records."""
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0)) == 0
