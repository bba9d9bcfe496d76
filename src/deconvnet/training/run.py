"""``deconvnet train CONFIG [key=value ...]`` -> :func:`train`: one training run from its config.

``cfg.task`` picks the LightningModule (deconvnet | fcn8s) and ``cfg.data.kind`` the
DataModule (stage1 | stage2 | whole). The network is built here (``build_model``) and
injected; stage 2 starts from the stage-1 network through ``cfg.model.init_from`` (weights
only). ``cfg.data.batch_size`` is the global batch: per-device batch x devices x gradient
accumulation (``batch_plan``), so 64 stays 64 on 1 or 8 GPUs. Step counts (max_steps,
val_every_n_steps, step_size) are optimiser steps, as Caffe's iterations.

The run's lifecycle (:mod:`deconvnet.runtime.run_folder`): the output_dir is locked for the
whole run; the config is validated, the data fingerprinted and the checkpoint to resume
from accepted before anything is written; ``complete.json`` is written last. A rerun:

- ``resume=auto``: complete (same config, data and inputs, max_steps reached) -> nothing to
  do; otherwise it continues from ``checkpoints/last.ckpt`` (model, optimiser, schedule,
  step, W&B run), including a run killed after its last step but before ``final.ckpt``
  (precise BN and the final checkpoint are redone); a folder made with another config,
  other data or another ``model.init_from`` file is refused;
- ``resume=never``: starts afresh (the folder's previous checkpoints and records go);
- any other value: the path of a checkpoint to continue from.

A resumed run continues the epoch at the batch where it stopped, with every random
generator restored (:mod:`deconvnet.training.exact_resume`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.rank_zero import rank_zero_info
from omegaconf import DictConfig, OmegaConf
from torch import nn

from deconvnet.config import ConfigError
from deconvnet.data.datamodules import batch_plan, build_datamodule
from deconvnet.data.datasets import check_window_size
from deconvnet.data.synthetic import ensure_synthetic
from deconvnet.errors import UserError, WeightsError
from deconvnet.models import build_model
from deconvnet.runtime.checkpoints import (
    check_resumable,
    checkpoint_record,
    load_weights_into,
    read_checkpoint,
)
from deconvnet.runtime.folders import ensure_writable
from deconvnet.runtime.hardware import check_hardware
from deconvnet.runtime.run_folder import RunFolder, file_identity
from deconvnet.runtime.trainer_args import hardware_kwargs, is_launcher_rank_zero, world_size
from deconvnet.runtime.wandb_setup import build_logger, finish_run
from deconvnet.training.callbacks import (
    ImagesPerSecond,
    NonFiniteLossGuard,
    PreciseBatchNorm,
    ProgressBar,
)
from deconvnet.training.checkpoints import (
    CHECKPOINT_DIR,
    FINAL,
    LAST,
    AtomicCheckpointIO,
    FinalCheckpoint,
    LastCheckpoint,
    checkpoint_dir,
    find_resume_checkpoint,
)
from deconvnet.training.exact_resume import ExactResume
from deconvnet.training.finish import finish_training
from deconvnet.training.segmentation_module import MODULES

log = logging.getLogger(__name__)

__all__ = ["train", "validate_training_config", "world_size", "hardware_kwargs"]


def validate_training_config(cfg: DictConfig) -> None:
    """Fail before any work on what a training run needs beyond the schema's checks (which
    load_config applies): combinations of keys and the batch per device."""
    if cfg.data.kind != "whole":
        check_window_size(cfg.data.window_size, cfg.data.crop_size)
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


def _check_init_from(cfg: DictConfig, explicit: Path | None) -> None:
    """A missing ``model.init_from`` (stage 2 before stage 1) stops the run before anything
    is written, unless a checkpoint to resume from makes it unneeded."""
    init_from = cfg.model.init_from
    if not init_from or Path(str(init_from)).is_file():
        return
    resuming = explicit is not None or (str(cfg.resume) != "never" and find_resume_checkpoint(cfg.output_dir))
    if not resuming:
        raise WeightsError(f"model.init_from: checkpoint not found: {init_from}. Train that network first "
                           "(deconvnet train ...) or fix the path.")


def _explicit_resume(cfg: DictConfig) -> Path | None:
    resume = str(cfg.resume)
    if resume in ("auto", "never"):
        return None
    path = Path(resume)
    if not path.is_file():
        raise ConfigError(
            f"resume='{resume}': no such checkpoint; use resume=auto (latest in output_dir), "
            "resume=never, or the path of a .ckpt file"
        )
    return path


def _run_record(cfg: DictConfig) -> dict:
    """What a checkpoint of this run records and a resume must match: the data it trains and
    validates on, and the file it was initialised from (stage 2: the stage-1 network)."""
    from deconvnet.data.fingerprint import data_fingerprint

    data = data_fingerprint(cfg.data.root, (cfg.data.train_split, cfg.data.val_split))
    return {"data": data, "inputs": file_identity([cfg.model.init_from])}


def _accept_checkpoint(cfg: DictConfig, path: Path, record: dict) -> int:
    """Check that the checkpoint to resume from holds this network, trained on this data;
    returns its step. Raises before anything is written."""
    checkpoint = read_checkpoint(path)  # read once for the three checks
    check_resumable(path, cfg.model, checkpoint)
    stored = checkpoint_record(path, checkpoint)
    for what, words in (("data", "other data (its dataset or split images differ)"),
                        ("inputs", f"another model.init_from file ({cfg.model.init_from} has changed)")):
        if stored.get(what) is not None and stored[what] != record[what]:
            raise ConfigError(f"{path} was trained on {words}; use resume=never to start afresh in "
                              f"{cfg.output_dir}, or another output_dir")
    return int(checkpoint.get("global_step", 0))


def is_trained(cfg: DictConfig) -> bool:
    """Whether ``cfg.output_dir`` holds this training run, complete (the pipeline's question)."""
    folder = RunFolder(cfg.output_dir, "train")
    if not (checkpoint_dir(cfg.output_dir) / FINAL).is_file() or folder.completion() is None:
        return False
    try:
        record = _run_record(cfg)
    except (OSError, UserError):  # the data cannot be read: not done (training will say why)
        return False
    return folder.is_complete(cfg, data=record, step=int(cfg.schedule.max_steps))


def train(cfg: DictConfig, callbacks: Sequence[Callback] = ()) -> Path:
    """Train the network ``cfg`` describes; returns the path of ``checkpoints/final.ckpt``.

    ``callbacks`` are added after the built-in ones (tests and notebooks use this).
    """
    validate_training_config(cfg)
    check_hardware(cfg.trainer)
    explicit = _explicit_resume(cfg)
    if explicit is not None:
        check_resumable(explicit, cfg.model)  # another network: one line, before anything else
    _check_init_from(cfg, explicit)
    ensure_writable(cfg.output_dir, "output_dir")  # before any work: read-only, full, /proc/...
    ensure_synthetic(cfg)  # a recipe's synthetic set is made when missing, before it is read
    record = _run_record(cfg)  # reads the split lists: data errors before any record is written
    folder = RunFolder(cfg.output_dir, "train")
    if not is_launcher_rank_zero():  # torchrun/SLURM ranks > 0: rank 0 owns the folder
        return _train(cfg, folder, record, explicit, callbacks)
    with folder.lock():
        return _train(cfg, folder, record, explicit, callbacks)


def _train(cfg: DictConfig, folder: RunFolder, record: dict, explicit: Path | None,
           callbacks: Sequence[Callback]) -> Path:
    owner = is_launcher_rank_zero()
    ckpt_dir = checkpoint_dir(cfg.output_dir)
    final = ckpt_dir / FINAL
    if owner:
        folder.remove_leftovers(CHECKPOINT_DIR)
    max_steps = int(cfg.schedule.max_steps)
    fresh = str(cfg.resume) == "never"
    if not fresh:
        folder.check_same_config(cfg)
        if final.is_file() and folder.is_complete(cfg, data=record, step=max_steps):
            rank_zero_info(
                f"{final} is already trained to schedule.max_steps={max_steps}; nothing to do "
                "(raise schedule.max_steps to train further, or resume=never to start again)"
            )
            return final
    resume = explicit or (None if fresh else find_resume_checkpoint(cfg.output_dir))
    resume_step = _accept_checkpoint(cfg, resume, record) if resume is not None else 0

    # accepted: from here on the folder's records are this run's
    if owner:
        folder.mark_incomplete()
        if fresh:
            folder.remove(CHECKPOINT_DIR)
        folder.write_config(cfg)
    pl.seed_everything(int(cfg.seed), workers=True)
    net = build_network(cfg, resuming=resume is not None)
    module = MODULES[str(cfg.task)](net, cfg)
    datamodule = build_datamodule(cfg)
    if resume is not None and resume_step >= max_steps:
        # killed after the last step but before final.ckpt: only precise BN and final.ckpt remain
        rank_zero_info(f"{resume} is at step {resume_step} (schedule.max_steps={max_steps}); "
                       "finishing the run: precise BN and the final checkpoint")
        if owner:
            finish_training(cfg, module, datamodule, resume, final)
            folder.mark_complete(cfg, data=record, step=resume_step)
        return final

    world = world_size(cfg.trainer)
    _, accumulate = batch_plan(int(cfg.data.batch_size), world, cfg.data.per_device_batch_size)
    steps = cfg.schedule
    hint = f"The last good checkpoint is {ckpt_dir / LAST}. "
    exact = ExactResume()
    exact.install(datamodule)  # the training loader's position and RNGs go into last.ckpt
    builtin: list[Callback] = [
        exact,
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
        max_steps=max_steps,
        max_epochs=-1,
        # Lightning counts validation intervals in batches: optimiser steps x accumulation
        val_check_interval=int(steps.val_every_n_steps) * accumulate,
        check_val_every_n_epoch=None,
        accumulate_grad_batches=accumulate,
        log_every_n_steps=int(cfg.trainer.log_every_n_steps),
        limit_val_batches=cfg.trainer.limit_val_batches,
        benchmark=cfg.task == "deconvnet" and not cfg.trainer.deterministic,  # fixed-size windows
        logger=False,
        callbacks=[*builtin, *callbacks],
        plugins=[AtomicCheckpointIO(record=record)],
        enable_checkpointing=False,  # LastCheckpoint / FinalCheckpoint write the files
        default_root_dir=str(cfg.output_dir),
    )
    if trainer.world_size != world:
        raise ConfigError(
            f"trainer.devices={cfg.trainer.devices} x trainer.num_nodes={cfg.trainer.num_nodes} gave "
            f"{trainer.world_size} processes where {world} were planned; give trainer.devices "
            "as a number of devices"
        )
    if resume is not None:
        rank_zero_info(f"resuming from {resume} (step {resume_step})")

    logger = build_logger(cfg, folder.path, job_type="train", resuming=resume is not None)
    if logger is not None:
        trainer.loggers = [logger]
    failed = True
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume) if resume else None)
        failed = False
    finally:
        finish_run(logger, failed=failed)
    if owner:  # fit ends at max_steps (max_epochs=-1); a ddp_spawn parent's trainer keeps no step
        folder.mark_complete(cfg, data=record, step=max_steps)
    return final
