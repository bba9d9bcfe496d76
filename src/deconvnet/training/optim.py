"""The optimiser and learning-rate schedules of the official solvers (PAPER.md, "Solver").

Parameter groups follow the Caffe prototxts:

- conv / deconv / classifier weights: base lr, weight decay ``optim.weight_decay``;
- their biases: ``optim.bias_lr_factor`` (2) x lr, decay ``optim.bias_weight_decay`` (0);
- BatchNorm scale and shift: base lr (not the biases' 2x) and weight decay
  ``optim.bn_weight_decay``, by default (null) the same as ``optim.weight_decay``. The
  released DeconvNet prototxts give their BN layers no ``param`` block at all, so Caffe
  uses lr_mult 1 and decay_mult 1 for both blobs: they are decayed like weights.
  ``optim.bn_weight_decay=0`` gives the common PyTorch practice of not decaying them.

Parameters with ``requires_grad=False`` (FCN-8s' frozen bilinear upsamplers) are left out.

Schedules count optimiser steps (Caffe iterations of the global batch), not epochs:

- ``step``: lr x gamma every ``step_size`` steps (stage 1: 9,000 of 20,000; stage 2: 10,000 of
  40,000); the update numbered ``step_size`` (0-based) is the first at the lower rate, as Caffe;
- ``plateau``: the paper's rule, lr x gamma when validation pixel accuracy stops improving
  (stepped by the LightningModule after each validation, see ``segmentation_module``);
- ``constant``: a fixed rate (the FCN-8s reference, 1e-10 with the summed loss).

PyTorch's SGD scales the momentum buffer by the current lr at each update whereas Caffe
accumulates lr-scaled updates; the two agree while the rate is constant.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("step", "plateau", "constant")

_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


def parameter_groups(net: nn.Module, optim_cfg: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Three groups, named ``weights``, ``biases`` and ``norm``, with the lr and decay above."""
    lr = float(optim_cfg["lr"])
    weights: list[nn.Parameter] = []
    biases: list[nn.Parameter] = []
    norm: list[nn.Parameter] = []
    for module in net.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            if isinstance(module, _NORM_TYPES):
                norm.append(param)
            elif name == "bias":
                biases.append(param)
            else:
                weights.append(param)
    groups = [
        {"name": "weights", "params": weights, "lr": lr,
         "weight_decay": float(optim_cfg["weight_decay"])},
        {"name": "biases", "params": biases, "lr": lr * float(optim_cfg["bias_lr_factor"]),
         "weight_decay": float(optim_cfg["bias_weight_decay"])},
        {"name": "norm", "params": norm, "lr": lr, "weight_decay": bn_weight_decay(optim_cfg)},
    ]
    return [g for g in groups if g["params"]]


def bn_weight_decay(optim_cfg: Mapping[str, Any]) -> float:
    """The decay of normalisation scale/shift: ``bn_weight_decay``, or ``weight_decay`` when
    it is None or absent (Caffe's default decay_mult 1)."""
    value = optim_cfg.get("bn_weight_decay")
    return float(optim_cfg["weight_decay"] if value is None else value)


def build_optimizer(net: nn.Module, optim_cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    """SGD with momentum (the paper) or Adam (the CPU demo) over :func:`parameter_groups`."""
    name = str(optim_cfg["name"]).lower()
    groups = parameter_groups(net, optim_cfg)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=float(optim_cfg["lr"]), momentum=float(optim_cfg["momentum"]))
    if name == "adam":
        return torch.optim.Adam(groups, lr=float(optim_cfg["lr"]))
    raise ValueError(f"optim.name='{name}' is unknown; valid: {', '.join(OPTIMIZERS)}")


def build_step_scheduler(
    optimizer: torch.optim.Optimizer, schedule_cfg: Mapping[str, Any]
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The per-optimiser-step scheduler for ``step``; None for ``constant`` and ``plateau``."""
    policy = str(schedule_cfg["policy"])
    if policy == "step":
        return torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=int(schedule_cfg["step_size"]), gamma=float(schedule_cfg["gamma"])
        )
    if policy in ("constant", "plateau"):
        return None
    raise ValueError(f"schedule.policy='{policy}' is unknown; valid: {', '.join(SCHEDULES)}")


def build_plateau_scheduler(
    optimizer: torch.optim.Optimizer, schedule_cfg: Mapping[str, Any]
) -> torch.optim.lr_scheduler.ReduceLROnPlateau:
    """lr x gamma after ``plateau_patience`` validations without a pixel-accuracy gain."""
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer,
        mode="max",
        factor=float(schedule_cfg["gamma"]),
        patience=int(schedule_cfg["plateau_patience"]),
    )
