"""Augmentation (albumentations) and the conversion of examples to tensors.

The paper's training augmentation and nothing else: the window, already cut and resized
to ``window_size`` (250, :mod:`deconvnet.data.windows`), is randomly cropped to
``crop_size`` (224) and flipped horizontally with probability 0.5, image and label
together. Validation windows are cut straight to ``crop_size`` and not augmented.

Albumentations keeps its own random generators. A DataLoader worker is a copy of the
main process, so each copy must be reseeded (:class:`SeededTransform`), or every worker
would draw the same crops.
"""

from __future__ import annotations

import os

import albumentations as A
import numpy as np
import torch


def training_augmentation(crop_size: int = 224) -> A.Compose:
    """Random crop_size x crop_size crop + horizontal flip (p = 0.5), image and mask together."""
    return A.Compose([A.RandomCrop(crop_size, crop_size), A.HorizontalFlip(p=0.5)])


class SeededTransform:
    """An albumentations pipeline reseeded once per process from torch's seed.

    In a DataLoader worker torch's seed is the loader's base seed + worker id (distinct per
    worker and epoch, reproducible under ``lightning.seed_everything``); in the main process
    it is torch's initial seed mixed with the distributed rank.
    """

    def __init__(self, pipeline: A.Compose) -> None:
        self.pipeline = pipeline
        self._seeded_for: tuple | None = None

    def _reseed(self) -> None:
        info = torch.utils.data.get_worker_info()
        key = (os.getpid(), None if info is None else info.seed)
        if key == self._seeded_for:
            return
        if info is None:
            seed = torch.initial_seed() + 1_000_003 * int(os.environ.get("RANK", 0))
        else:
            seed = info.seed
        self.pipeline.set_random_seed(int(seed) % (2**32))
        self._seeded_for = key

    def __call__(self, image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._reseed()
        out = self.pipeline(image=image, mask=label)
        return out["image"], out["mask"]


def to_tensors(image: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """H x W x 3 uint8 and H x W uint8 arrays -> uint8 3 x H x W and int64 H x W tensors."""
    image_t = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
    label_t = torch.from_numpy(label.astype(np.int64))
    return image_t, label_t
