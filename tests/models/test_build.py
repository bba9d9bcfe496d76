"""build_model and resolve_pretrained: networks and weights from the config's model section."""

from __future__ import annotations

import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest
import torch

from deconvnet.config import ConfigError, load_config
from deconvnet.errors import WeightsError
from deconvnet.models import DeconvNet, FCN8s, build_model, imagenet_cache_path, resolve_pretrained

TINY = {"name": "deconvnet", "num_classes": 4, "input_size": 64, "width": 1 / 16, "pretrained": "none"}


def test_builds_each_network_from_a_plain_mapping():
    net = build_model(TINY)
    assert isinstance(net, DeconvNet)
    assert (net.num_classes, net.input_size, net.width) == (4, 64, 1 / 16)
    fcn = build_model({**TINY, "name": "fcn8s"})
    assert isinstance(fcn, FCN8s) and fcn.num_classes == 4 and fcn.width == 1 / 16


def test_builds_from_the_config_schema():
    cfg = load_config(None, ["model.name=fcn8s", "model.width=0.0625", "model.pretrained=none"])
    net = build_model(cfg.model)
    assert isinstance(net, FCN8s) and net.num_classes == 21
    assert net.encoder[0].conv1_1.out_channels == 4


def test_pretrained_path_loads_the_vgg16_weights(vgg16_file, vgg16_state):
    cfg = load_config(None, ["model.name=fcn8s", f"model.pretrained={vgg16_file}"])
    net = build_model(cfg.model)
    assert torch.equal(net.encoder[4].conv5_3.weight, vgg16_state["features.28.weight"])
    assert torch.equal(net.fc6.fc6.weight.flatten(1), vgg16_state["classifier.0.weight"])


def test_pretrained_weights_that_do_not_fit_are_a_weights_error(vgg16_file):
    with pytest.raises(WeightsError, match="features.0.weight: expected 4x3x3x3"):
        build_model({**TINY, "pretrained": str(vgg16_file)})


def test_unknown_names_and_bad_values_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="model.name='segnet' is unknown; valid names: deconvnet, fcn8s"):
        build_model({**TINY, "name": "segnet"})
    with pytest.raises(ConfigError, match="model section: .*multiple of 32.*got 100"):
        build_model({**TINY, "input_size": 100})
    with pytest.raises(ConfigError, match="weights_style='rgb' is unknown"):
        build_model({**TINY, "weights_style": "rgb"})
    with pytest.raises(WeightsError, match="not found: .*missing.pth"):
        build_model({**TINY, "pretrained": str(tmp_path / "missing.pth")})


def test_imagenet_weights_with_caffe_preprocessing_is_a_config_error():
    with pytest.raises(ConfigError, match="weights_style=caffe"):
        build_model({**TINY, "pretrained": "imagenet", "weights_style": "caffe"})
    with pytest.raises(ConfigError, match="Set model.weights_style=torchvision"):
        resolve_pretrained("imagenet", "caffe")


def test_none_resolves_to_no_weights(vgg16_file):
    assert resolve_pretrained("none") is None
    assert resolve_pretrained(str(vgg16_file))["features.0.weight"].shape == (64, 3, 3, 3)


@pytest.fixture
def offline_hub(tmp_path, monkeypatch) -> Path:
    """An empty torch hub cache, and downloads that fail as they do without internet."""
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError(f"no route to host for {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path / "hub"


def test_imagenet_without_internet_says_where_to_put_the_file(offline_hub):
    expected = offline_hub / "checkpoints" / "vgg16-397923af.pth"
    assert imagenet_cache_path() == expected
    with pytest.raises(WeightsError) as info:
        resolve_pretrained("imagenet")
    message = str(info.value)
    assert "could not download" in message and "no route to host" in message
    assert str(expected) in message
    assert "model.pretrained=/path/to/vgg16.pth" in message


def test_a_file_placed_at_the_cache_path_is_used_without_download(offline_hub, vgg16_file, vgg16_state):
    cache = imagenet_cache_path()
    cache.parent.mkdir(parents=True)
    cache.symlink_to(vgg16_file)
    state = resolve_pretrained("imagenet", "torchvision")
    assert torch.equal(state["classifier.3.weight"], vgg16_state["classifier.3.weight"])


def test_models_import_with_torch_alone():
    """GPU machines run with PYTHONPATH=src and no omegaconf/lightning: block them and import."""
    src = Path(__file__).resolve().parents[2] / "src"
    code = (
        "import sys\n"
        "for name in ('omegaconf', 'lightning', 'pytorch_lightning', 'wandb', 'albumentations'):\n"
        "    sys.modules[name] = None  # importing them now raises ImportError\n"
        "from deconvnet.models import DeconvNet, FCN8s, InputNormalizer\n"
        "import torch\n"
        "net = DeconvNet(input_size=32, width=1 / 64).eval()\n"
        "x = InputNormalizer('caffe')(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))\n"
        "print(tuple(net(x).shape), tuple(FCN8s(width=1 / 64)(x).shape))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(1, 21, 32, 32) (1, 21, 32, 32)"
