"""Where the encoder's VGG16 weights come from: ``cfg.model.pretrained``.

- ``none``: no weights (Kaiming-initialised encoder);
- ``imagenet``: torchvision's ImageNet VGG16 (``VGG16_Weights.IMAGENET1K_V1``), downloaded
  once into torch hub's cache; without internet the error says where to put the file;
- anything else: a path to a torchvision-layout VGG16 state dict.

``cfg.model.weights_style`` says which preprocessing the weights expect (see
normalize.py); torchvision's weights are torchvision-style, so ``imagenet`` with
``caffe`` is refused. A file converted from the Caffe VGG16 is ``caffe``-style.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import torch

from deconvnet.errors import WeightsError
from deconvnet.models.normalize import WEIGHT_STYLES
from deconvnet.models.vgg import read_state_dict

NONE = "none"
IMAGENET = "imagenet"


def imagenet_cache_path() -> Path:
    """The file torchvision's weights API reads from (and downloads to): <hub>/checkpoints/<file>."""
    from torchvision.models import VGG16_Weights

    filename = os.path.basename(urlparse(VGG16_Weights.IMAGENET1K_V1.url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def check_weights_style(pretrained: str, weights_style: str) -> None:
    """Refuse preprocessing that cannot match the weights (raises ConfigError)."""
    from deconvnet.config import ConfigError  # lazy: deconvnet.models needs torch alone

    if weights_style not in WEIGHT_STYLES:
        raise ConfigError(
            f"model.weights_style='{weights_style}' is unknown; valid: {', '.join(WEIGHT_STYLES)}"
        )
    if pretrained == IMAGENET and weights_style == "caffe":
        raise ConfigError(
            "model.pretrained=imagenet loads torchvision's VGG16, which expects RGB inputs scaled "
            "to [0, 1] and normalised by the ImageNet mean/std, but model.weights_style=caffe "
            "would feed it BGR 0-255 mean-subtracted images. Set model.weights_style=torchvision, "
            "or point model.pretrained at a VGG16 converted from Caffe (torchvision layout)."
        )


def _download_imagenet() -> dict[str, torch.Tensor]:
    from torchvision.models import VGG16_Weights

    return VGG16_Weights.IMAGENET1K_V1.get_state_dict(progress=True)


def resolve_pretrained(
    pretrained: str, weights_style: str | None = None
) -> dict[str, torch.Tensor] | None:
    """The VGG16 state dict that ``pretrained`` names, or None for ``none``.

    With ``weights_style`` given, its consistency with the weights is checked first.
    """
    pretrained = str(pretrained).strip()
    if weights_style is not None:
        check_weights_style(pretrained, weights_style)
    if pretrained.lower() == NONE:
        return None
    if pretrained.lower() == IMAGENET:
        try:
            return dict(_download_imagenet())
        except Exception as err:  # no network, proxy, truncated download, ...
            cache = imagenet_cache_path()
            raise WeightsError(
                f"could not download torchvision's ImageNet VGG16 weights ({type(err).__name__}: "
                f"{err}). On a machine with internet, run once: python -c \"import torchvision; "
                f"torchvision.models.vgg16(weights='IMAGENET1K_V1')\" and copy the file it caches "
                f"to {cache} (torch hub's cache; $TORCH_HOME moves it), or set "
                f"model.pretrained=/path/to/vgg16.pth (a torchvision-layout VGG16 state dict), "
                f"or model.pretrained=none to train from scratch."
            ) from err
    return read_state_dict(pretrained)
