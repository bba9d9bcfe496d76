"""``deconvnet train CONFIG [key=value ...]`` -> :func:`train`: one training run from its config.

``cfg.task`` picks the LightningModule (deconvnet | fcn8s) and ``cfg.data.kind`` the
DataModule (stage1 | stage2 | whole). The network is built here (``build_model``) and
injected; stage 2 starts from the stage-1 network through ``cfg.model.init_from`` (weights
only). ``cfg.data.batch_size`` is the global batch: per-device batch x devices x gradient
accumulation (``batch_plan``), so 64 stays 64 on 1 or 8 GPUs. Step counts (max_steps,
val_every_n_steps, step_size) are optimiser steps, as Caffe's iterations.

Resuming: ``resume=auto`` continues from ``output_dir/checkpoints/last.ckpt`` when it exists
(model, optimiser, schedule, step, W&B run); a run already finished (``final.ckpt`` at
``max_steps``) is not trained again; ``resume=never`` starts afresh; any other value is a
checkpoint path to continue from.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_only
from omegaconf import DictConfig, OmegaConf
from torch import nn

from deconvnet.config import ConfigError, save_config
from deconvnet.data.datamodules import batch_plan, build_datamodule
from deconvnet.models import build_model
from deconvnet.runtime.folders import ensure_writable
from deconvnet.runtime.hardware import check_hardware
from deconvnet.training.callbacks import (
    ImagesPerSecond,
    NonFiniteLossError,
    NonFiniteLossGuard,
    PreciseBatchNorm,
    ProgressBar,
)
from deconvnet.training.checkpoints import (
    FINAL,
    LAST,
    AtomicCheckpointIO,
    FinalCheckpoint,
    LastCheckpoint,
    check_resumable,
    checkpoint_dir,
    checkpoint_step,
    find_resume_checkpoint,
    load_weights_into,
)
from deconvnet.training.segmentation_module import MODULES
from deconvnet.training.wandb_logger import build_logger, finish_run


def validate_training_config(cfg: DictConfig) -> None:
    """Fail before any work on what a training run needs beyond the schema's checks (which
    load_config applies): combinations of keys and the batch per device."""
    if cfg.task == "deconvnet":
        if cfg.data.kind == "whole":
            raise ConfigError(
                "task=deconvnet trains on windows of a fixed size: set data.kind=stage1 or stage2 "
                "(data.kind=whole is for FCN-8s)"
            )
        if int(cfg.data.crop_size) != int(cfg.model.input_size):
            raise ConfigError(
                f"data.crop_size={cfg.data.crop_size} must equal model.input_size="
                f"{cfg.model.input_size}: DeconvNet takes windows of exactly its input size"
            )
        # BatchNorm after the 1x1 fc6/fc7 maps needs >= 2 windows on every device
        batch_plan(int(cfg.data.batch_size), world_size(cfg.trainer), cfg.data.per_device_batch_size,
                   min_per_device=2, why="DeconvNet's BatchNorm on the 1x1 fc6/fc7 maps")


def world_size(trainer_cfg: DictConfig) -> int:
    """Number of training processes the trainer config asks for (devices x nodes)."""
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


def resume_checkpoint(cfg: DictConfig) -> Path | None:
    """The checkpoint this run continues from (see the module doc), or None."""
    resume = str(cfg.resume)
    if resume == "never":
        return None
    if resume == "auto":
        return find_resume_checkpoint(cfg.output_dir)
    path = Path(resume)
    if not path.is_file():
        raise ConfigError(
            f"resume='{resume}': no such checkpoint; use resume=auto (latest in output_dir), "
            "resume=never, or the path of a .ckpt file"
        )
    return path


def build_network(cfg: DictConfig, resuming: bool) -> nn.Module:
    """The network to train: VGG16-initialised, or from cfg.model.init_from (stage 2), or
    left for the resumed checkpoint to fill."""
    init_from = cfg.model.init_from
    skip_pretrained = resuming or bool(init_from)  # its weights would be overwritten anyway
    model_cfg = {**OmegaConf.to_container(cfg.model, resolve=True)}
    if skip_pretrained:
        model_cfg["pretrained"] = "none"
    net = build_model(model_cfg)
    if init_from and not resuming:
        load_weights_into(net, init_from, expect={"name": cfg.model.name,
                                                  "num_classes": cfg.model.num_classes})
        rank_zero_info(f"network weights initialised from {init_from}")
    return net


def _already_finished(cfg: DictConfig) -> Path | None:
    final = checkpoint_dir(cfg.output_dir) / FINAL
    if str(cfg.resume) == "auto" and final.is_file() and checkpoint_step(final) >= int(cfg.schedule.max_steps):
        return final
    return None


def _non_finite_from_spawn(err: BaseException) -> NonFiniteLossError | None:
    """ddp_spawn re-raises a worker's exception as text: recover the clear message."""
    marker = "NonFiniteLossError: "
    text = str(err)
    if marker not in text:
        return None
    return NonFiniteLossError(text[text.rindex(marker) + len(marker):].strip().splitlines()[0])


def hardware_kwargs(trainer_cfg: DictConfig) -> dict:
    """The Trainer arguments that say where and how to run (shared by train and eval)."""
    devices = trainer_cfg.devices
    return {
        "accelerator": str(trainer_cfg.accelerator),
        "devices": list(devices) if OmegaConf.is_list(devices) else devices,
        "num_nodes": int(trainer_cfg.num_nodes),
        "strategy": str(trainer_cfg.strategy),
        "precision": str(trainer_cfg.precision),
        "deterministic": bool(trainer_cfg.deterministic),
    }


def train(cfg: DictConfig, callbacks: Sequence[Callback] = ()) -> Path:
    """Train the network ``cfg`` describes; returns the path of ``checkpoints/final.ckpt``.

    ``callbacks`` are added after the built-in ones (tests and notebooks use this).
    """
    validate_training_config(cfg)
    check_hardware(cfg.trainer)
    output_dir = Path(cfg.output_dir)
    ckpt_dir = checkpoint_dir(output_dir)
    finished = _already_finished(cfg)
    if finished is not None:
        rank_zero_info(
            f"{finished} is already trained to schedule.max_steps={cfg.schedule.max_steps}; nothing "
            "to do (raise schedule.max_steps to train further, or resume=never to start again)"
        )
        return finished
    resume = resume_checkpoint(cfg)
    if resume is not None:
        check_resumable(resume, cfg.model)
    ensure_writable(output_dir, "output_dir")  # before any work: read-only, full, /proc/...
    if rank_zero_only.rank == 0:
        save_config(cfg, output_dir)
    pl.seed_everything(int(cfg.seed), workers=True)

    world = world_size(cfg.trainer)
    _, accumulate = batch_plan(int(cfg.data.batch_size), world, cfg.data.per_device_batch_size)
    net = build_network(cfg, resuming=resume is not None)
    module = MODULES[str(cfg.task)](net, cfg)
    datamodule = build_datamodule(cfg)
    logger = build_logger(cfg, output_dir, resuming=resume is not None)

    steps = cfg.schedule
    hint = f"The last good checkpoint is {ckpt_dir / LAST}. "
    builtin: list[Callback] = [
        NonFiniteLossGuard(checkpoint_hint=hint),
        ImagesPerSecond(every_n_steps=int(cfg.trainer.log_every_n_steps)),
        ProgressBar(),
        LastCheckpoint(ckpt_dir),
    ]
    if cfg.task == "deconvnet":
        builtin.append(PreciseBatchNorm(int(steps.precise_bn_batches)))
    builtin.append(FinalCheckpoint(ckpt_dir))  # after precise BN

    trainer = pl.Trainer(
        **hardware_kwargs(cfg.trainer),
        max_steps=int(steps.max_steps),
        max_epochs=-1,
        # Lightning counts validation intervals in batches: optimiser steps x accumulation
        val_check_interval=int(steps.val_every_n_steps) * accumulate,
        check_val_every_n_epoch=None,
        accumulate_grad_batches=accumulate,
        log_every_n_steps=int(cfg.trainer.log_every_n_steps),
        limit_val_batches=cfg.trainer.limit_val_batches,
        benchmark=cfg.task == "deconvnet" and not cfg.trainer.deterministic,  # fixed-size windows
        logger=logger if logger is not None else False,
        callbacks=[*builtin, *callbacks],
        plugins=[AtomicCheckpointIO()],
        enable_checkpointing=False,  # LastCheckpoint / FinalCheckpoint write the files
        default_root_dir=str(output_dir),
    )
    if trainer.world_size != world:
        raise ConfigError(
            f"trainer.devices={cfg.trainer.devices} x trainer.num_nodes={cfg.trainer.num_nodes} gave "
            f"{trainer.world_size} processes where {world} were planned; give trainer.devices "
            "as a number of devices"
        )
    if resume is not None:
        rank_zero_info(f"resuming from {resume} (step {checkpoint_step(resume)})")

    failed = True
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume) if resume else None)
        failed = False
    except Exception as err:
        clear = _non_finite_from_spawn(err) if not isinstance(err, NonFiniteLossError) else None
        if clear is not None:
            raise clear from None
        raise
    finally:
        finish_run(logger, failed=failed)
    return ckpt_dir / FINAL
