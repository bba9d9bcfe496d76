"""The LightningModule around an injected network: normalisation on the device, channels_last."""

import pytest
import torch

from deconvnet.config import load_config
from deconvnet.models import DeconvNet, FCN8s, InputNormalizer
from deconvnet.training.segmentation_module import MODULES, DeconvNetModule, FCN8sModule

TINY = ["model.width=0.0625", "model.input_size=64", "model.pretrained=none"]


def _module(*overrides: str, seed: int = 0) -> DeconvNetModule:
    cfg = load_config(None, [*TINY, *overrides])
    torch.manual_seed(seed)
    return DeconvNetModule(DeconvNet(21, 64, 0.0625), cfg)


def test_modules_by_task_each_train_their_own_network():
    assert MODULES == {"deconvnet": DeconvNetModule, "fcn8s": FCN8sModule}
    cfg = load_config(None, TINY)
    with pytest.raises(TypeError, match="FCN8sModule trains a FCN8s, got a DeconvNet"):
        FCN8sModule(DeconvNet(21, 64, 0.0625), cfg)
    with pytest.raises(TypeError, match="DeconvNetModule trains a DeconvNet, got a FCN8s"):
        DeconvNetModule(FCN8s(21, 0.0625), cfg)


def test_uint8_batches_are_normalised_inside_the_module():
    module = _module().eval()
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    expected = module.net(InputNormalizer("torchvision")(images))
    assert torch.allclose(module(images), expected)
    caffe = _module("model.weights_style=caffe").eval()
    assert torch.allclose(caffe(images), caffe.net(InputNormalizer("caffe")(images)))


def test_channels_last_gives_the_same_logits_and_gradients():
    plain, fast = _module(), _module("trainer.channels_last=true")
    assert fast.net.classifier.weight.is_contiguous(memory_format=torch.channels_last)
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    out_plain, out_fast = plain(images), fast(images)  # train mode: unpooling with switches
    # train-mode BN over 4-channel maps amplifies float rounding: compare relative to the scale
    assert (out_plain - out_fast).abs().max() < 1e-3 * out_plain.abs().max()
    # gradients in eval mode: batch statistics of 2 windows on 1x1 fc maps are ill-conditioned
    plain.eval(), fast.eval()
    plain(images).square().mean().backward()
    fast(images).square().mean().backward()
    for (name, a), b in zip(plain.net.named_parameters(), fast.net.parameters()):
        assert (a.grad - b.grad).abs().max() <= 1e-3 * a.grad.abs().max(), name


def test_hyper_parameters_hold_the_model_section():
    module = _module()
    assert module.hparams["model"]["width"] == 0.0625 and module.hparams["model"]["name"] == "deconvnet"
    assert module.hparams["config"]["optim"]["lr"] == 0.01
