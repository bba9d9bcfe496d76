"""The LightningModules: one segmentation module, with DeconvNet and FCN-8s as thin variants.

The network is injected (built by ``run.train`` through ``deconvnet.models.build_model``);
``DeconvNetModule`` and ``FCN8sModule`` (``MODULES[task]``) each accept only their own network
class. The module owns what training adds around it:

- input normalisation on the device (``InputNormalizer(cfg.model.weights_style)``; batches
  arrive as uint8), optionally channels_last;
- the loss (cross-entropy, void 255 ignored, ``cfg.optim.loss_normalization``);
- the optimiser and its schedule (``optim.py``); the paper's plateau rule is stepped here,
  once per validation, so that its state is in the checkpoint written after validation;
- validation: one ``MulticlassConfusionMatrix`` over the whole split (summed over processes
  when it is computed), giving pixel accuracy, mean IoU and per-class IoU, plus a few sample
  predictions for W&B.

It knows nothing of files: checkpoints hold ``hyper_parameters["model"]`` (the ``cfg.model``
section) so that ``checkpoints.load_network`` can rebuild the network.
"""

from __future__ import annotations

import warnings
from typing import Any

import lightning.pytorch as pl
import torch
from omegaconf import DictConfig
from torch import nn
from torchmetrics.classification import MulticlassConfusionMatrix

from deconvnet.config import to_dict
from deconvnet.data.classes import IGNORE_INDEX, class_names
from deconvnet.metrics import mean_iou, per_class_iou, pixel_accuracy
from deconvnet.models import DeconvNet, FCN8s, InputNormalizer
from deconvnet.training.losses import segmentation_loss
from deconvnet.training.optim import (
    build_optimizer,
    build_plateau_scheduler,
    build_step_scheduler,
)
from deconvnet.training.wandb_logger import log_segmentation_samples

# The device pipeline's hook lives here on purpose (the module cuts the windows on its
# device); Lightning warns whenever a module overrides it and a DataModule is passed.
warnings.filterwarnings("ignore", message=r"You have overridden `on_after_batch_transfer` in `LightningModule`")


class SegmentationModule(pl.LightningModule):
    """Trains ``net`` (uint8 batches in, logits out) with the recipe in ``cfg``."""

    network_class: type[nn.Module] = nn.Module  # the network a subclass trains

    def __init__(self, net: nn.Module, cfg: DictConfig) -> None:
        if not isinstance(net, self.network_class):
            raise TypeError(f"{type(self).__name__} trains a {self.network_class.__name__}, "
                            f"got a {type(net).__name__}")
        super().__init__()
        self.net = net
        self.cfg = cfg
        self.normalizer = InputNormalizer(str(cfg.model.weights_style))
        self.num_classes = int(cfg.model.num_classes)
        self.class_names = class_names(self.num_classes)
        self.loss_normalization = str(cfg.optim.loss_normalization)
        self.channels_last = bool(cfg.trainer.channels_last)
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)
        self.confusion = MulticlassConfusionMatrix(
            self.num_classes, ignore_index=IGNORE_INDEX, validate_args=False
        )
        self.save_hyperparameters({"model": to_dict(cfg.model), "config": to_dict(cfg)}, logger=False)
        self._plateau: torch.optim.lr_scheduler.ReduceLROnPlateau | None = None
        self._plateau_state: dict[str, Any] | None = None
        self._samples: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    # -- network -------------------------------------------------------------------------------

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (or 0-255 float) RGB B x 3 x H x W -> logits B x C x H x W."""
        x = self.normalizer(images)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """data.pipeline=device: a batch of window descriptions becomes its cut windows here,
        in one batched call on the device (the sources are the DataModule's ``window_sources``)."""
        if isinstance(batch, dict) and "window_box" in batch:
            from deconvnet.data.device_windows import cut_batch

            datamodule = self._trainer.datamodule if self._trainer is not None else None
            batch = cut_batch(batch, getattr(datamodule, "window_sources", None))
        return batch

    # -- training ------------------------------------------------------------------------------

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self(batch["image"])
        loss = segmentation_loss(logits, batch["label"], self.loss_normalization)
        size = int(batch["image"].shape[0])
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=size)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], prog_bar=True, batch_size=size)
        return loss

    def configure_optimizers(self) -> Any:
        optimizer = build_optimizer(self.net, self.cfg.optim)
        if str(self.cfg.schedule.policy) == "plateau":
            self._plateau = build_plateau_scheduler(optimizer, self.cfg.schedule)
            if self._plateau_state is not None:
                self._plateau.load_state_dict(self._plateau_state)
        scheduler = build_step_scheduler(optimizer, self.cfg.schedule)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self._plateau is not None:
            checkpoint["plateau_scheduler"] = self._plateau.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # called before configure_optimizers when resuming: keep it for then
        self._plateau_state = checkpoint.get("plateau_scheduler")

    # -- validation ----------------------------------------------------------------------------

    def on_validation_epoch_start(self) -> None:
        self.confusion.reset()
        self._samples = []

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        images, labels = batch["image"], batch["label"]
        logits = self(images)
        loss = segmentation_loss(logits, labels, "valid")
        predictions = logits.argmax(1)
        self.confusion.update(predictions, labels)
        self.log("val/loss", loss, sync_dist=True, batch_size=int(images.shape[0]))
        room = int(self.cfg.logger.log_images) - len(self._samples)
        if room > 0 and self.global_rank == 0:
            for i in range(min(room, int(images.shape[0]))):
                self._samples.append((images[i].cpu(), labels[i].cpu(), predictions[i].cpu()))

    def on_validation_epoch_end(self) -> None:
        confusion = self.confusion.compute()  # summed over all processes
        self.confusion.reset()
        accuracy = pixel_accuracy(confusion)
        metrics = {"val/pixel_accuracy": accuracy, "val/miou": mean_iou(confusion)}
        self.log_dict(metrics, prog_bar=True, sync_dist=True)
        ious = per_class_iou(confusion)
        self.log_dict({f"val/iou/{name}": float(v) for name, v in zip(self.class_names, ious)},
                      sync_dist=True)
        if self.trainer.sanity_checking:
            return
        if self._plateau is not None:
            self._plateau.step(accuracy)
        if self._samples and self.global_rank == 0:
            log_segmentation_samples(self.logger, "val/samples", self._samples,
                                     class_names=self.class_names, step=self.global_step)
        self._samples = []


class DeconvNetModule(SegmentationModule):
    """DeconvNet stages 1 and 2: windows of a fixed size, BatchNorm (precise BN after training)."""

    network_class = DeconvNet


class FCN8sModule(SegmentationModule):
    """FCN-8s: whole images of any size, batch 1 and the summed loss in the reference recipe."""

    network_class = FCN8s


MODULES: dict[str, type[SegmentationModule]] = {"deconvnet": DeconvNetModule, "fcn8s": FCN8sModule}
