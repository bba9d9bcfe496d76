"""The VGG16 convolution stages both networks share, and the import of VGG16 weights.

DeconvNet and FCN-8s both start from VGG16: 13 3x3 convs in five stages, then fc6
and fc7 turned into convolutions (:class:`VGG16Network`, their common base).
``load_vgg16_into`` copies a torchvision-layout VGG16 state dict (``features.N.*`` for the
convs, ``classifier.0/3.*`` for fc6/fc7) onto a network's layers, reshaping the fully
connected weights into conv kernels, and checks every shape first so that nothing is
half-loaded."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from deconvnet.errors import WeightsError

# Output channels of the 3x3 convs of each VGG16 stage (a 2x2 max-pool follows each stage).
VGG16_STAGES: tuple[tuple[int, ...], ...] = (
    (64, 64),
    (128, 128),
    (256, 256, 256),
    (512, 512, 512),
    (512, 512, 512),
)
FC_CHANNELS = 4096  # fc6 / fc7 width
FC6_KERNEL = 7  # VGG16's fc6 sees a 7x7x512 map (224 / 32)

# Where the 13 convs and the two hidden fully connected layers sit in torchvision's vgg16().
TORCHVISION_CONV_KEYS: tuple[str, ...] = (
    "features.0", "features.2",
    "features.5", "features.7",
    "features.10", "features.12", "features.14",
    "features.17", "features.19", "features.21",
    "features.24", "features.26", "features.28",
)
TORCHVISION_FC6_KEY = "classifier.0"
TORCHVISION_FC7_KEY = "classifier.3"


def scale_channels(channels: int, width: float) -> int:
    """Channel count under a width multiplier (never below one channel)."""
    return max(1, int(round(channels * width)))


def check_width(width: float) -> None:
    if not width > 0:
        raise ValueError(f"width must be a positive channel multiplier (1.0 = the paper), got {width}")


class VGGStage(nn.Sequential):
    """One VGG16 stage without its pool: 3x3 convs, each followed by (BatchNorm and) ReLU.

    Layers are named as in the Caffe prototxts (``conv3_1``, ``bn3_1``, ``relu3_1``).
    """

    def __init__(
        self,
        stage: int,
        in_channels: int,
        out_channels: Sequence[int],
        batch_norm: bool,
        first_padding: int = 1,
    ) -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        for i, out in enumerate(out_channels, start=1):
            padding = first_padding if i == 1 else 1
            layers[f"conv{stage}_{i}"] = nn.Conv2d(in_channels, out, 3, padding=padding)
            if batch_norm:
                layers[f"bn{stage}_{i}"] = nn.BatchNorm2d(out)
            layers[f"relu{stage}_{i}"] = nn.ReLU(inplace=True)
            in_channels = out
        super().__init__(layers)

    def convs(self) -> list[nn.Conv2d]:
        return [m for m in self if isinstance(m, nn.Conv2d)]


def vgg16_stages(width: float, batch_norm: bool, first_padding: int = 1) -> nn.ModuleList:
    """The five VGG16 stages under a width multiplier."""
    stages = []
    in_channels = 3
    for index, plan in enumerate(VGG16_STAGES, start=1):
        out_channels = [scale_channels(c, width) for c in plan]
        padding = first_padding if index == 1 else 1
        stages.append(VGGStage(index, in_channels, out_channels, batch_norm, padding))
        in_channels = out_channels[-1]
    return nn.ModuleList(stages)


def vgg16_layer_map(
    stages: Sequence[VGGStage], fc6: nn.Conv2d, fc7: nn.Conv2d
) -> dict[str, nn.Conv2d]:
    """torchvision key prefix -> the network's conv that takes those weights."""
    convs = [conv for stage in stages for conv in stage.convs()]
    if len(convs) != len(TORCHVISION_CONV_KEYS):
        raise AssertionError(f"expected 13 VGG16 convs, found {len(convs)}")
    layers = dict(zip(TORCHVISION_CONV_KEYS, convs))
    layers[TORCHVISION_FC6_KEY] = fc6
    layers[TORCHVISION_FC7_KEY] = fc7
    return layers


class VGG16Network(nn.Module):
    """A network on VGG16 (DeconvNet, FCN-8s): ``encoder``, the five stages at ``width``
    (:func:`vgg16_stages`), then ``fc6`` and ``fc7``, which the subclass builds (Sequentials
    whose convs are named ``fc6`` / ``fc7``, as in the prototxts).

    ``stage_channels[i]`` is the output channel count of stage i + 1 (pool1 ... pool5) and
    ``fc_channels`` that of fc6 / fc7, both at ``width``.
    """

    fc6: nn.Sequential
    fc7: nn.Sequential

    def __init__(self, width: float, batch_norm: bool, first_padding: int = 1) -> None:
        super().__init__()
        check_width(width)
        self.width = width
        self.stage_channels = [scale_channels(plan[-1], width) for plan in VGG16_STAGES]
        self.fc_channels = scale_channels(FC_CHANNELS, width)
        self.encoder = vgg16_stages(width, batch_norm=batch_norm, first_padding=first_padding)

    def load_vgg16(self, source: Mapping[str, torch.Tensor] | str | Path) -> dict[str, str]:
        """Fill the 13 convs and fc6/fc7 from a torchvision-layout VGG16 state dict (or its path).

        Returns {source key: parameter name}. Only fits at width=1 (and, for DeconvNet, at
        input_size=224, where fc6 is 7x7).
        """
        layers = vgg16_layer_map(self.encoder, self.fc6.fc6, self.fc7.fc7)
        return load_vgg16_into(self, layers, source)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a state dict file (tensors only, never pickled code)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(
            f"VGG16 weights file not found: {path}. Point model.pretrained at a torchvision-layout "
            "VGG16 state dict (e.g. torch.save(torchvision.models.vgg16(weights='IMAGENET1K_V1')"
            ".state_dict(), 'vgg16.pth')), or use model.pretrained=none."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt archive, pickled objects, ...
        raise WeightsError(f"could not read VGG16 weights from {path}: {err}") from err
    if not isinstance(state, Mapping):
        raise WeightsError(
            f"{path} holds a {type(state).__name__}, not a state dict; save one with "
            "torch.save(model.state_dict(), path)"
        )
    return dict(state)


def _shape(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape)


def _expected_shapes(key: str, conv: nn.Conv2d) -> dict[str, tuple[int, ...]]:
    """Source tensor shapes torchvision uses for the weights of ``conv``."""
    weight = tuple(conv.weight.shape)
    if key.startswith("classifier."):  # Linear(out, in * k * k)
        weight = (weight[0], weight[1] * weight[2] * weight[3])
    shapes = {f"{key}.weight": weight}
    if conv.bias is not None:
        shapes[f"{key}.bias"] = tuple(conv.bias.shape)
    return shapes


def load_vgg16_into(
    net: nn.Module,
    layers: Mapping[str, nn.Conv2d],
    source: Mapping[str, torch.Tensor] | str | Path,
) -> dict[str, str]:
    """Copy VGG16 weights onto ``layers`` (torchvision key prefix -> conv of ``net``).

    Every key is checked before anything is copied; a missing key or a wrong shape
    raises WeightsError listing every offending key with expected and found shapes.
    Keys the network has no use for (``classifier.6``, the ImageNet classifier) are
    ignored. Returns ``{source key: parameter name in net}`` for every copied tensor.
    """
    where = "the given state dict"
    if isinstance(source, (str, Path)):
        where = str(source)
        source = read_state_dict(source)
    names = {id(param): name for name, param in net.named_parameters()}

    problems: list[str] = []
    plan: list[tuple[str, torch.Tensor, torch.nn.Parameter]] = []
    for key, conv in layers.items():
        params = {f"{key}.weight": conv.weight, f"{key}.bias": conv.bias}
        for src_key, expected in _expected_shapes(key, conv).items():
            target = params[src_key]
            if src_key not in source:
                problems.append(f"{src_key}: missing (expected {_shape(expected)})")
                continue
            tensor = source[src_key]
            if not isinstance(tensor, torch.Tensor):
                problems.append(f"{src_key}: expected a tensor, found {type(tensor).__name__}")
                continue
            found = tuple(tensor.shape)
            # classifier weights may also come already reshaped into conv kernels
            if found not in (expected, tuple(target.shape)):
                problems.append(f"{src_key}: expected {_shape(expected)}, found {_shape(found)}")
                continue
            plan.append((src_key, tensor, target))

    if problems:
        spec = getattr(net, "spec", type(net).__name__)
        hint = (
            "The network's convs and fc6/fc7 must have VGG16's shapes: build it with width=1.0 "
            "(and input_size=224 for DeconvNet, so that fc6 is 7x7), pass a torchvision vgg16() "
            "state dict (not vgg16_bn), or set model.pretrained=none."
        )
        listing = "\n  ".join(problems)
        raise WeightsError(
            f"VGG16 weights from {where} do not fit {spec}; {len(problems)} offending key(s):\n"
            f"  {listing}\n{hint}"
        )

    loaded: dict[str, str] = {}
    with torch.no_grad():
        for src_key, tensor, target in plan:
            target.copy_(tensor.reshape(target.shape))
            loaded[src_key] = names[id(target)]
    return loaded
