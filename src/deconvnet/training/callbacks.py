"""Training callbacks: precise BatchNorm, the non-finite loss guard, images/s and the progress bar.

Precise BN (the official recipe's last step): Caffe's BN layer normalises with batch
statistics throughout training, and after training the official scripts recompute the
population mean/variance over many training batches. ``PreciseBatchNorm`` does the same
when training ends: it resets every BN layer's running statistics and re-estimates them as
the plain average over ``num_batches`` training batches (``momentum=None``: cumulative
average; the variance is the unbiased batch variance, as the official m/(m-1)), in train
mode without gradients, averaged over processes under DDP. It runs before the final
checkpoint is written (``checkpoints.FinalCheckpoint`` comes after it in the callback list).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, TQDMProgressBar
from torch import nn

from deconvnet.errors import UserError


class NonFiniteLossError(UserError, RuntimeError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""


# ---------------------------------------------------------------------------------------------
# precise BN


def batchnorm_layers(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [
        m for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]


def _cycle(batches: Iterable[Any]) -> Iterator[Any]:
    """Iterate ``batches`` again and again (a small training set may hold fewer batches)."""
    while True:
        empty = True
        for batch in batches:
            empty = False
            yield batch
        if empty:
            return


@torch.no_grad()
def recompute_batchnorm_statistics(
    module: nn.Module,
    forward: Callable[[Any], Any],
    batches: Iterable[Any],
    num_batches: int,
) -> int:
    """Reset the BN running statistics of ``module`` and re-estimate them on ``num_batches``
    batches (cycling through ``batches`` if needed); ``forward(batch)`` runs the network.

    Returns the number of batches used (0 when the module has no BatchNorm).
    """
    layers = batchnorm_layers(module)
    if not layers or num_batches <= 0:
        return 0
    momenta = [layer.momentum for layer in layers]
    was_training = module.training
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average: every batch weighs the same
    module.train()
    used = 0
    try:
        for batch in itertools.islice(_cycle(batches), num_batches):
            forward(batch)
            used += 1
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
        module.train(was_training)
    return used


class PreciseBatchNorm(Callback):
    """Re-estimate BN statistics on training batches when training ends (see module doc)."""

    def __init__(self, num_batches: int) -> None:
        self.num_batches = num_batches
        self.batches_used = 0

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        layers = batchnorm_layers(pl_module)
        loader = trainer.train_dataloader
        if not layers or self.num_batches <= 0 or loader is None:
            return

        def forward(batch: dict[str, torch.Tensor]) -> None:
            batch = trainer.strategy.batch_to_device(batch, pl_module.device)
            with trainer.precision_plugin.forward_context():
                pl_module(batch["image"])

        self.batches_used = recompute_batchnorm_statistics(
            pl_module, forward, loader, self.num_batches
        )
        if trainer.world_size > 1:
            # every process saw different batches: average their estimates (as a bigger sample)
            stats = [t for layer in layers for t in (layer.running_mean, layer.running_var)]
            flat = torch.cat([t.reshape(-1).float() for t in stats])
            flat = trainer.strategy.reduce(flat, reduce_op="mean")
            for tensor, chunk in zip(stats, flat.split([t.numel() for t in stats])):
                tensor.copy_(chunk.view_as(tensor))
        pl.utilities.rank_zero_info(
            f"precise BN: statistics of {len(layers)} BatchNorm layers re-estimated on "
            f"{self.batches_used} training batches"
            + (f" per process ({trainer.world_size} processes)" if trainer.world_size > 1 else "")
        )


# ---------------------------------------------------------------------------------------------
# non-finite loss


class NonFiniteLossGuard(Callback):
    """Stop before a NaN/inf loss is back-propagated, so the weights (and every checkpoint
    written from them) stay finite. Under DDP all processes stop together."""

    def __init__(self, checkpoint_hint: str = "") -> None:
        self.checkpoint_hint = checkpoint_hint

    def on_before_backward(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor
    ) -> None:
        bad = not bool(torch.isfinite(loss.detach()).all())
        if trainer.world_size > 1:
            bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if bad:
            value = loss.detach().float().cpu().item() if loss.numel() == 1 else "non-finite"
            raise NonFiniteLossError(
                f"training stopped: the loss became non-finite ({value}) at optimiser step "
                f"{trainer.global_step} (batch {trainer.fit_loop.total_batch_idx}). The weights "
                f"were not updated with it. {self.checkpoint_hint}Lower optim.lr (or use "
                "optim.loss_normalization=valid) and resume with resume=auto."
            )


def weights_are_finite(module: nn.Module) -> bool:
    """True when every parameter and buffer of ``module`` is finite (one device sync)."""
    tensors = [t for t in itertools.chain(module.parameters(), module.buffers()) if t.is_floating_point()]
    if not tensors:
        return True
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())


# ---------------------------------------------------------------------------------------------
# throughput and progress bar


class ImagesPerSecond(Callback):
    """Logs ``train/images_per_s`` (all processes together) every ``every_n_steps`` optimiser
    steps, measured from the end of the first batch so start-up is not counted."""

    def __init__(self, every_n_steps: int = 20) -> None:
        self.every_n_steps = max(1, every_n_steps)
        self._start: float | None = None
        self._images = 0
        self._last_step = -1

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now = time.perf_counter()
        if self._start is None:
            self._start = now
            return
        self._images += int(batch["image"].shape[0]) * trainer.world_size
        step = trainer.global_step
        if step > 0 and step != self._last_step and step % self.every_n_steps == 0:
            self._last_step = step
            rate = self._images / max(now - self._start, 1e-9)
            pl_module.log("train/images_per_s", rate, prog_bar=True, rank_zero_only=True)
            self._start, self._images = now, 0


class ProgressBar(TQDMProgressBar):
    """tqdm bar showing loss, lr and images/s under short names."""

    SHORT_NAMES = {"train/loss": "loss", "train/lr": "lr", "train/images_per_s": "img/s",
                   "val/miou": "val_miou", "val/pixel_accuracy": "val_acc"}

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        shown = {self.SHORT_NAMES.get(k, k): v for k, v in items.items()}
        if isinstance(shown.get("img/s"), float):
            shown["img/s"] = f"{shown['img/s']:.1f}"
        if isinstance(shown.get("lr"), float):
            shown["lr"] = f"{shown['lr']:.2e}"
        return shown
