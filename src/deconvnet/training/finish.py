"""The end of a training run redone outside ``trainer.fit``: precise BN and ``final.ckpt``
from a ``last.ckpt`` already at ``schedule.max_steps`` (a run killed after its last step but
before its final checkpoint; Lightning would restore it and stop at once, writing nothing).

It runs in one process, on the first CUDA device when the config asks for one and one is
there, else on the CPU, with the training loader of the config.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from lightning.pytorch import LightningDataModule, LightningModule
from omegaconf import DictConfig

from deconvnet.runtime.checkpoints import read_checkpoint
from deconvnet.training.callbacks import batchnorm_layers, recompute_batchnorm_statistics
from deconvnet.training.checkpoints import atomic_torch_save

log = logging.getLogger(__name__)

# what a weights-only checkpoint leaves out of a full training state
TRAINING_STATE = ("optimizer_states", "lr_schedulers", "callbacks")


def _device(cfg: DictConfig) -> torch.device:
    wants_cpu = str(cfg.trainer.accelerator).lower() == "cpu"
    return torch.device("cuda") if torch.cuda.is_available() and not wants_cpu else torch.device("cpu")


def finish_training(cfg: DictConfig, module: LightningModule, datamodule: LightningDataModule,
                    last: Path, final: Path) -> Path:
    """Load ``last`` into ``module``, re-estimate BN statistics (DeconvNet) and write ``final``
    (the same content as the FinalCheckpoint callback writes). Returns ``final``."""
    checkpoint = dict(read_checkpoint(last))
    module.load_state_dict(checkpoint["state_dict"])
    device = _device(cfg)
    module.to(device)
    batches = int(cfg.schedule.precise_bn_batches)
    if cfg.task == "deconvnet" and batchnorm_layers(module) and batches > 0:
        datamodule.setup("fit")

        def forward(batch: dict[str, torch.Tensor]) -> None:
            module(batch["image"].to(device))

        used = recompute_batchnorm_statistics(module, forward, datamodule.train_dataloader(), batches)
        log.info("precise BN: statistics re-estimated on %d training batches", used)
    checkpoint["state_dict"] = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
    for key in TRAINING_STATE:
        checkpoint.pop(key, None)
    atomic_torch_save(checkpoint, final)
    return final
