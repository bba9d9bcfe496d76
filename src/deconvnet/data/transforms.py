"""The training augmentation and the conversion of examples to tensors.

The paper's training augmentation and nothing else: the window, already cut and resized
to ``window_size`` (250, :mod:`deconvnet.data.windows`), is randomly cropped to
``crop_size`` (224) and flipped horizontally with probability 0.5, image and label
together, the crop and the flip drawn independently.

Both are drawn from torch's generator, so torch's seed decides them: the training loader
seeds it per sample (:mod:`deconvnet.data.sample_seeds`). The worker pipeline and the device
pipeline (:class:`~deconvnet.data.device_windows.WindowSpecs`) draw with the same
:meth:`RandomCropFlip.draw`, so a sample seed gives both the same crop and flip.

(Not albumentations: its ``Compose.set_random_seed`` gives every transform the same seed,
so ``RandomCrop``'s vertical offset and ``HorizontalFlip`` read the same first number and
every window cropped in its upper half was flipped, none in its lower half.)
"""

from __future__ import annotations

import numpy as np
import torch


class RandomCropFlip:
    """A uniformly random ``crop_size`` square of a square window, flipped horizontally with
    probability 0.5, image and label together; drawn from torch's generator."""

    def __init__(self, crop_size: int = 224) -> None:
        self.crop_size = int(crop_size)

    def draw(self, window_size: int) -> tuple[int, int, bool]:
        """(x offset, y offset, flip) for a ``window_size`` window."""
        ox, oy = torch.randint(0, window_size - self.crop_size + 1, (2,)).tolist()
        return ox, oy, bool(torch.rand(()) < 0.5)

    def __call__(self, image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        size = image.shape[0]
        if image.shape[1] != size or label.shape != image.shape[:2] or size < self.crop_size:
            raise ValueError(f"a square window of at least {self.crop_size} pixels with a label of its size "
                             f"is cropped, not image {image.shape} with label {label.shape}")
        ox, oy, flip = self.draw(size)
        image = image[oy:oy + self.crop_size, ox:ox + self.crop_size]
        label = label[oy:oy + self.crop_size, ox:ox + self.crop_size]
        if flip:
            image, label = image[:, ::-1], label[:, ::-1]
        return image, label


def to_tensors(image: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """H x W x 3 uint8 and H x W uint8 arrays (views allowed) -> uint8 3 x H x W and int64
    H x W tensors."""
    image_t = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
    label_t = torch.from_numpy(label.astype(np.int64))
    return image_t, label_t
