"""Softmax cross-entropy over pixels, void (255) ignored, normalised as the recipe says.

- ``valid``: the mean over the non-void pixels of the batch (Caffe's SoftmaxWithLoss with
  ``normalize: true``; the DeconvNet recipe). Under gradient accumulation Lightning divides
  each micro-batch's loss by the number of micro-batches, as Caffe's ``iter_size`` does.
- ``sum``: the sum over the non-void pixels (``normalize: false``; the FCN reference, whose
  tiny fixed learning rate 1e-10 assumes it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from deconvnet.data.classes import IGNORE_INDEX

LOSS_NORMALIZATIONS = ("valid", "sum")


def segmentation_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    normalization: str = "valid",
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Cross-entropy of ``B x C x H x W`` logits against ``B x H x W`` int64 labels.

    A batch whose pixels are all void gives a zero loss (with a gradient path), not NaN.
    """
    if normalization not in LOSS_NORMALIZATIONS:
        raise ValueError(
            f"unknown loss normalization '{normalization}'; valid: {', '.join(LOSS_NORMALIZATIONS)}"
        )
    # float32 softmax even under bf16 autocast: the sum over 50k pixels x 64 images needs it
    total = F.cross_entropy(logits.float(), target, ignore_index=ignore_index, reduction="sum")
    if normalization == "sum":
        return total
    valid = (target != ignore_index).sum().clamp_min(1)
    return total / valid
