"""Build the network a ``cfg.model`` section describes, with its VGG16 weights loaded."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from deconvnet.models.deconvnet import DECONV_INIT_STD, DeconvNet
from deconvnet.models.fcn8s import FCN8s
from deconvnet.models.weights import check_weights_style, resolve_pretrained

MODEL_NAMES = ("deconvnet", "fcn8s")


def build_model(model_cfg: Mapping[str, Any] | Any) -> nn.Module:
    """DeconvNet or FCN8s from ``cfg.model`` (name, num_classes, input_size, width,
    pretrained, weights_style), with VGG16 weights loaded unless ``pretrained=none``.

    Accepts a plain mapping or an OmegaConf DictConfig; missing keys take the constructor
    defaults, and a missing ``pretrained`` means none (never a hidden download).
    """
    from deconvnet.config import ConfigError  # lazy: deconvnet.models needs torch alone

    def get(key: str, default: Any) -> Any:
        value = model_cfg.get(key, default)
        return default if value is None else value

    name = str(get("name", "deconvnet")).lower()
    pretrained = str(get("pretrained", "none"))
    check_weights_style(pretrained, str(get("weights_style", "torchvision")))
    if name not in MODEL_NAMES:
        raise ConfigError(f"model.name='{name}' is unknown; valid names: {', '.join(MODEL_NAMES)}")
    try:
        if name == "deconvnet":
            net: nn.Module = DeconvNet(
                num_classes=int(get("num_classes", 21)),
                input_size=int(get("input_size", 224)),
                width=float(get("width", 1.0)),
                classifier_std=float(get("classifier_std", DECONV_INIT_STD)),
            )
        else:
            net = FCN8s(
                num_classes=int(get("num_classes", 21)),
                width=float(get("width", 1.0)),
                batch_norm=bool(get("fcn_batch_norm", False)),
                skip_scaling=bool(get("fcn_skip_scaling", True)),
            )
    except ValueError as err:
        raise ConfigError(f"model section: {err}") from err

    if pretrained.lower() == "imagenet":
        net.load_vgg16(resolve_pretrained(pretrained))
    elif pretrained.lower() != "none":
        net.load_vgg16(pretrained)  # a file: read once, errors name its path
    return net
