"""Input normalisation that follows the encoder weights (``cfg.model.weights_style``).

Datasets yield uint8 RGB batches; the normalisation runs on the device, inside the
module, so that the preprocessing can never disagree with the weights:

- ``torchvision``: RGB, x / 255, minus the ImageNet mean, divided by the ImageNet std;
- ``caffe``: BGR, 0-255, minus the Caffe VGG16 mean (the official DeconvNet recipe).
"""

from __future__ import annotations

import torch
from torch import nn

IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (104.008, 116.669, 122.675)
WEIGHT_STYLES = ("torchvision", "caffe")


class InputNormalizer(nn.Module):
    """uint8 or float 0-255 RGB ``B x 3 x H x W`` -> float32 network input for ``style``."""

    def __init__(self, style: str = "torchvision") -> None:
        super().__init__()
        if style not in WEIGHT_STYLES:
            raise ValueError(
                f"unknown weights_style '{style}'; valid styles: {', '.join(WEIGHT_STYLES)}"
            )
        self.style = style
        if style == "torchvision":
            # (x / 255 - mean) / std == (x - 255 mean) / (255 std): one subtract, one divide
            mean = torch.tensor(IMAGENET_MEAN_RGB) * 255
            std = torch.tensor(IMAGENET_STD_RGB) * 255
        else:
            mean = torch.tensor(CAFFE_MEAN_BGR)
            std = torch.ones(3)
        # constants, not weights: they move with .to(device) but stay out of checkpoints
        self.register_buffer("mean", mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(
                f"InputNormalizer expects an RGB batch B x 3 x H x W, got shape {tuple(images.shape)}"
            )
        x = images.to(torch.float32)
        if self.style == "caffe":
            x = x.flip(1)  # RGB -> BGR
            return x - self.mean
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"style={self.style!r}"
