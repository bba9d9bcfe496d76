"""Segmentation scores from one confusion matrix over a whole split.

The PASCAL VOC devkit's semantics: void pixels (255) are excluded, IoU of a class is
TP / (TP + FP + FN) accumulated over every pixel of the split (never an average of
per-image or per-batch IoUs), and a class that appears in neither the ground truth
nor the predictions has no IoU (NaN) rather than 0, so it does not drag the mean down.

Rows of the confusion matrix are ground truth, columns are predictions.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = 255


def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """num_classes x num_classes int64 counts; pixels whose target is ignore_index are skipped."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    target = target.reshape(-1).long()
    pred = pred.reshape(-1).long()
    keep = target != ignore_index
    target, pred = target[keep], pred[keep]
    if target.numel() and int(target.max()) >= num_classes:
        bad = sorted(set(target[target >= num_classes].unique().tolist()))
        raise ValueError(f"target holds labels {bad} outside 0..{num_classes - 1} and {ignore_index}")
    flat = target * num_classes + pred.clamp(0, num_classes - 1)
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_iou(confusion: torch.Tensor) -> torch.Tensor:
    """IoU per class in [0, 1]; NaN where the class is absent from ground truth and prediction."""
    confusion = confusion.double()
    tp = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - tp
    iou = tp / union
    return torch.where(union > 0, iou, torch.full_like(iou, float("nan")))


def mean_iou(confusion: torch.Tensor) -> float:
    """Mean IoU over the classes that occur (NaN classes skipped)."""
    return float(torch.nanmean(per_class_iou(confusion)))


def pixel_accuracy(confusion: torch.Tensor) -> float:
    total = confusion.sum()
    return float(confusion.diag().sum().double() / total) if total > 0 else float("nan")
