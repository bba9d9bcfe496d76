"""FCN-8s, the "at-once" voc-fcn8s network of Long et al. (fcn.berkeleyvision.org).

VGG16 with pad 100 on conv1_1 (so that any input survives the 7x7 fc6), Caffe's
ceil-mode pooling, fc6/fc7 as convs with ReLU and dropout 0.5, then three score
layers fused by upsampling: score_fr upsampled x2 plus score_pool4 (pool4 x 0.01,
cropped at offset 5), upsampled x2 plus score_pool3 (pool3 x 0.0001, cropped at
offset 9), upsampled x8 and cropped at offset 31 back to the input size.
Score layers start at zero; upsampling layers are bilinear and frozen.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from deconvnet.models.vgg import FC6_KERNEL, VGG16Network

CONV1_PADDING = 100
POOL4_SCALE = 0.01  # "at-once" training scales the skip inputs ...
POOL3_SCALE = 0.0001  # ... so that they start small against the coarse scores
POOL4_OFFSET = 5  # crop offsets of the reference prototxt (Caffe's Crop layer)
POOL3_OFFSET = 9
OUTPUT_OFFSET = 31
DROPOUT = 0.5


def bilinear_kernel(channels: int, kernel_size: int) -> torch.Tensor:
    """Weights of a channel-wise bilinear upsampling ConvTranspose2d: channels x channels x k x k.

    The FCN reference's ``upsample_filt``: each channel is upsampled on its own (identity
    across channels), with the separable tent filter centred on the kernel.
    """
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    steps = torch.arange(kernel_size, dtype=torch.float64)
    tent = 1 - (steps - center).abs() / factor
    filt = (tent[:, None] * tent[None, :]).float()
    weight = torch.zeros(channels, channels, kernel_size, kernel_size)
    weight[range(channels), range(channels)] = filt
    return weight


def _upsampler(channels: int, factor: int) -> nn.ConvTranspose2d:
    """A frozen, bilinear-initialised, bias-free ``2 * factor`` kernel with stride ``factor``."""
    layer = nn.ConvTranspose2d(channels, channels, 2 * factor, stride=factor, bias=False)
    with torch.no_grad():
        layer.weight.copy_(bilinear_kernel(channels, 2 * factor))
    layer.weight.requires_grad_(False)
    return layer


def _crop(x: torch.Tensor, offset: int, like: torch.Tensor) -> torch.Tensor:
    """Caffe's Crop layer: x[..., offset:offset + h, offset:offset + w] with like's h x w."""
    height, width = like.shape[-2:]
    return x[:, :, offset : offset + height, offset : offset + width]


class FCN8s(VGG16Network):
    """voc-fcn8s at once; ``forward(x: B x 3 x H x W float) -> logits B x C x H x W`` for any H, W."""

    def __init__(self, num_classes: int = 21, width: float = 1.0, batch_norm: bool = False,
                 skip_scaling: bool = True) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        super().__init__(width, batch_norm=batch_norm, first_padding=CONV1_PADDING)  # the encoder
        # Both options leave the reference network by default. From scratch (the CPU demo, no
        # ImageNet weights) a 16-layer VGG without BatchNorm hardly trains in minutes, and the
        # at-once skip scaling (pool4 x 0.01, pool3 x 0.0001) keeps the fine layers silent.
        self.batch_norm = batch_norm
        self.pool4_scale = POOL4_SCALE if skip_scaling else 1.0
        self.pool3_scale = POOL3_SCALE if skip_scaling else 1.0
        self.num_classes = num_classes
        self.spec = (f"FCN8s(num_classes={num_classes}, width={width}, batch_norm={batch_norm}, "
                     f"skip_scaling={skip_scaling})")

        _, _, pool3_channels, pool4_channels, pool5_channels = self.stage_channels
        fc = self.fc_channels

        self.pool = nn.MaxPool2d(2, stride=2, ceil_mode=True)  # Caffe pools round up
        self.fc6 = nn.Sequential(OrderedDict(
            fc6=nn.Conv2d(pool5_channels, fc, FC6_KERNEL),
            relu6=nn.ReLU(inplace=True),
            drop6=nn.Dropout(DROPOUT),
        ))
        self.fc7 = nn.Sequential(OrderedDict(
            fc7=nn.Conv2d(fc, fc, 1),
            relu7=nn.ReLU(inplace=True),
            drop7=nn.Dropout(DROPOUT),
        ))
        self.score_fr = nn.Conv2d(fc, num_classes, 1)
        self.score_pool4 = nn.Conv2d(pool4_channels, num_classes, 1)
        self.score_pool3 = nn.Conv2d(pool3_channels, num_classes, 1)
        self.upscore2 = _upsampler(num_classes, 2)
        self.upscore_pool4 = _upsampler(num_classes, 2)
        self.upscore8 = _upsampler(num_classes, 8)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """VGG convs: Kaiming (replaced by VGG16 weights when pretrained); score layers: zero."""
        for stage in self.encoder:
            for conv in stage.convs():
                nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(conv.bias)
        for conv in (self.fc6.fc6, self.fc7.fc7):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
        for score in (self.score_fr, self.score_pool4, self.score_pool3):
            nn.init.zeros_(score.weight)
            nn.init.zeros_(score.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"FCN8s expects a B x 3 x H x W batch, got shape {tuple(x.shape)}")
        image = x
        pooled = []
        for stage in self.encoder:
            x = self.pool(stage(x))
            pooled.append(x)
        pool3, pool4 = pooled[2], pooled[3]

        upscore2 = self.upscore2(self.score_fr(self.fc7(self.fc6(x))))  # 1/16
        score_pool4 = _crop(self.score_pool4(pool4 * self.pool4_scale), POOL4_OFFSET, upscore2)
        upscore_pool4 = self.upscore_pool4(upscore2 + score_pool4)  # 1/8
        score_pool3 = _crop(self.score_pool3(pool3 * self.pool3_scale), POOL3_OFFSET, upscore_pool4)
        upscore8 = self.upscore8(upscore_pool4 + score_pool3)  # 1/1
        return _crop(upscore8, OUTPUT_OFFSET, image)
