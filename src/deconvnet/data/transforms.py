"""Augmentation (albumentations) and the conversion of examples to tensors.

The paper's training augmentation and nothing else: the window, already cut and resized
to ``window_size`` (250, :mod:`deconvnet.data.windows`), is randomly cropped to
``crop_size`` (224) and flipped horizontally with probability 0.5, image and label
together. Validation windows are cut straight to ``crop_size`` and not augmented.

Albumentations keeps its own random generators. :class:`SeededTransform` reseeds them from
torch's generator on every call, so that torch's seed decides the augmentation: the
training loader seeds it per sample (:mod:`deconvnet.data.sample_seeds`), a DataLoader
worker elsewhere has its own (base seed + worker id).
"""

from __future__ import annotations

import albumentations as A
import numpy as np
import torch


def training_augmentation(crop_size: int = 224) -> A.Compose:
    """Random crop_size x crop_size crop + horizontal flip (p = 0.5), image and mask together."""
    return A.Compose([A.RandomCrop(crop_size, crop_size), A.HorizontalFlip(p=0.5)])


class SeededTransform:
    """An albumentations pipeline whose draws come from torch's generator: each call
    reseeds the pipeline with a number drawn from it."""

    def __init__(self, pipeline: A.Compose) -> None:
        self.pipeline = pipeline

    def __call__(self, image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.pipeline.set_random_seed(int(torch.randint(0, 2**32, ()).item()))
        out = self.pipeline(image=image, mask=label)
        return out["image"], out["mask"]


def to_tensors(image: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """H x W x 3 uint8 and H x W uint8 arrays -> uint8 3 x H x W and int64 H x W tensors."""
    image_t = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
    label_t = torch.from_numpy(label.astype(np.int64))
    return image_t, label_t
