"""The networks: DeconvNet, FCN-8s, their VGG16 weight import and input normalisation.

Imports torch (and torchvision lazily) only, so that GPU scripts need just ``PYTHONPATH=src``.
"""

from deconvnet.models.build import MODEL_NAMES, build_model
from deconvnet.models.deconvnet import DeconvNet
from deconvnet.models.fcn8s import FCN8s, bilinear_kernel
from deconvnet.models.normalize import WEIGHT_STYLES, InputNormalizer
from deconvnet.models.vgg import load_vgg16_into, read_state_dict
from deconvnet.models.weights import check_weights_style, imagenet_cache_path, resolve_pretrained

__all__ = [
    "MODEL_NAMES",
    "WEIGHT_STYLES",
    "DeconvNet",
    "FCN8s",
    "InputNormalizer",
    "bilinear_kernel",
    "build_model",
    "check_weights_style",
    "imagenet_cache_path",
    "load_vgg16_into",
    "read_state_dict",
    "resolve_pretrained",
]
