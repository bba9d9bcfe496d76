"""Fixtures for the network tests: a random torchvision VGG16 saved once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def vgg16_weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, torch.Tensor], Path]:
    """A random state dict with torchvision vgg16()'s keys and shapes, in memory and on disk.

    Every tensor (biases too) is random, so that a tensor copied to the wrong place shows.
    Filling a meta-device model's shapes is several times faster than vgg16()'s own init.
    """
    import torchvision

    with torch.device("meta"):
        shapes = {k: v.shape for k, v in torchvision.models.vgg16().state_dict().items()}
    generator = torch.Generator().manual_seed(1234)
    state = {k: torch.rand(shape, generator=generator) - 0.5 for k, shape in shapes.items()}
    path = tmp_path_factory.mktemp("weights") / "vgg16.pth"
    torch.save(state, path)
    return state, path


@pytest.fixture(scope="session")
def vgg16_state(vgg16_weights) -> dict[str, torch.Tensor]:
    return vgg16_weights[0]


@pytest.fixture(scope="session")
def vgg16_file(vgg16_weights) -> Path:
    return vgg16_weights[1]


def _empty_network(cls, **kwargs) -> torch.nn.Module:
    """A full-size network without the cost of initialising 250M parameters (memory left as is)."""
    with torch.device("meta"):
        net = cls(**kwargs)
    return net.to_empty(device="cpu")


@pytest.fixture
def empty_network():
    """Build a network on the meta device and give it uninitialised CPU storage (fast)."""
    return _empty_network
