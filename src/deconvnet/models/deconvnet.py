"""DeconvNet (Noh et al., ICCV 2015, Table 2): VGG16 encoder + mirrored deconvolution network.

Encoder: the 13 VGG16 3x3 convs, each followed by BatchNorm and ReLU, five 2x2
max-pools that keep their switches; fc6 (a 7x7 conv without padding: 7x7 -> 1x1)
and fc7 (1x1), both with BN and ReLU. Decoder: deconv-fc6 (7x7 transposed conv,
1x1 -> 7x7), then five blocks of max-unpooling with the matching switches and 3x3
deconvolutions with BN and ReLU, and a 1x1 classifier. No dropout anywhere.

The fc6 kernel is ``input_size / 32`` so that a smaller ``input_size`` (tests, the
CPU demo) still brings the map to 1x1; ``width`` scales every channel count.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from deconvnet.models.vgg import VGG16Network, scale_channels

# Output channels of the 3x3 deconvolutions after each unpooling, deepest first (Table 2).
DECODER_STAGES: tuple[tuple[int, ...], ...] = (
    (512, 512, 512),  # unpool5: 7 -> 14
    (512, 512, 256),  # unpool4: 14 -> 28
    (256, 256, 128),  # unpool3: 28 -> 56
    (128, 64),  # unpool2: 56 -> 112
    (64, 64),  # unpool1: 112 -> 224
)
NUM_POOLS = 5

# Official initialisation of the layers trained from scratch.
DECONV_INIT_STD = 0.01
BN_INIT_SHIFT = 0.001


class DecoderStage(nn.Sequential):
    """3x3/pad-1 transposed convs, each with BN and ReLU (``deconv5_1``, ``debn5_1``, ...)."""

    def __init__(self, stage: int, in_channels: int, out_channels: tuple[int, ...]) -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        for i, out in enumerate(out_channels, start=1):
            layers[f"deconv{stage}_{i}"] = nn.ConvTranspose2d(in_channels, out, 3, padding=1)
            layers[f"debn{stage}_{i}"] = nn.BatchNorm2d(out)
            layers[f"derelu{stage}_{i}"] = nn.ReLU(inplace=True)
            in_channels = out
        super().__init__(layers)


def _conv_bn_relu(name: str, conv: nn.Module, channels: int) -> nn.Sequential:
    """``conv`` followed by BatchNorm and ReLU, named ``fc6``, ``bnfc6``, ``relufc6``."""
    layers = [(name, conv), (f"bn{name}", nn.BatchNorm2d(channels)), (f"relu{name}", nn.ReLU(inplace=True))]
    return nn.Sequential(OrderedDict(layers))


class DeconvNet(VGG16Network):
    """The paper's network; ``forward(x: B x 3 x S x S float) -> logits B x C x S x S``."""

    def __init__(self, num_classes: int = 21, input_size: int = 224, width: float = 1.0,
                 classifier_std: float = DECONV_INIT_STD) -> None:
        stride = 2**NUM_POOLS
        if input_size < stride or input_size % stride:
            raise ValueError(
                f"DeconvNet input_size must be a multiple of {stride} (five 2x2 pools down to the "
                f"fc6 kernel), got {input_size}; the paper uses 224"
            )
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        super().__init__(width, batch_norm=True)  # the encoder
        # The paper draws the classifier from N(0, 0.01) like the deconvolutions. Nothing
        # normalises its output, so on a narrow network trained from scratch the logits start
        # tiny and grow slowly: the CPU demo raises it (model.classifier_std).
        self.classifier_std = classifier_std
        self.num_classes = num_classes
        self.input_size = input_size
        self.spec = f"DeconvNet(num_classes={num_classes}, input_size={input_size}, width={width})"

        fc_kernel = input_size // stride  # 7 for 224x224: fc6 maps 7x7 to 1x1
        encoder_out = self.stage_channels[-1]
        fc = self.fc_channels

        self.pool = nn.MaxPool2d(2, stride=2, return_indices=True)
        self.fc6 = _conv_bn_relu("fc6", nn.Conv2d(encoder_out, fc, fc_kernel), fc)
        self.fc7 = _conv_bn_relu("fc7", nn.Conv2d(fc, fc, 1), fc)
        self.deconv_fc6 = _conv_bn_relu(
            "deconv_fc6", nn.ConvTranspose2d(fc, encoder_out, fc_kernel), encoder_out
        )
        self.unpool = nn.MaxUnpool2d(2, stride=2)
        decoder = []
        in_channels = encoder_out
        for offset, plan in enumerate(DECODER_STAGES):
            out_channels = tuple(scale_channels(c, width) for c in plan)
            decoder.append(DecoderStage(NUM_POOLS - offset, in_channels, out_channels))
            in_channels = out_channels[-1]
        self.decoder = nn.ModuleList(decoder)
        self.classifier = nn.Conv2d(in_channels, num_classes, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Encoder convs: Kaiming (replaced by VGG16 weights when pretrained); decoder as the paper."""
        for module in self.modules():
            if isinstance(module, nn.ConvTranspose2d) or module is self.classifier:
                std = self.classifier_std if module is self.classifier else DECONV_INIT_STD
                nn.init.normal_(module.weight, std=std)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.constant_(module.bias, BN_INIT_SHIFT)

    def _check_input(self, x: torch.Tensor) -> None:
        size = self.input_size
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[2] != size or x.shape[3] != size:
            got = "x".join(str(s) for s in x.shape[1:])
            square = x.dim() == 4 and x.shape[2] == x.shape[3] and x.shape[2] % 2**NUM_POOLS == 0
            fix = f"input_size={x.shape[2]}" if square else "input_size=<a multiple of 32>"
            raise ValueError(
                f"DeconvNet built for {size}x{size} inputs got {got} (expected B x 3 x {size} x "
                f"{size}); build it with {fix} or resize the windows to {size}x{size}"
            )
        if self.training and x.shape[0] < 2:
            # fc6/fc7 are 1x1 maps: their BatchNorm needs several windows to have statistics
            raise ValueError(
                "DeconvNet in training mode needs at least 2 windows per batch (BatchNorm after "
                "the 1x1 fc6/fc7 maps); give it batches of 2 or more windows, or call .eval()"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        switches = []
        for stage in self.encoder:
            x, indices = self.pool(stage(x))
            switches.append(indices)
        x = self.deconv_fc6(self.fc7(self.fc6(x)))
        # MaxUnpool2d needs no .contiguous(): with channels_last inputs and under bf16 autocast
        # it gives the same results (checked on CPU in tests/models/test_deconvnet.py)
        for stage, indices in zip(self.decoder, reversed(switches)):
            x = stage(self.unpool(x, indices))
        return self.classifier(x)
