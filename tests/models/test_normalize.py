"""InputNormalizer: the preprocessing each kind of VGG16 weights expects."""

from __future__ import annotations

import pytest
import torch

from deconvnet.models import InputNormalizer


@pytest.fixture
def images() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randint(0, 256, (2, 3, 5, 7), dtype=torch.uint8)


def test_torchvision_style_matches_a_manual_computation(images):
    out = InputNormalizer("torchvision")(images)
    assert out.dtype == torch.float32
    r, g, b = (images[:, c].double() / 255 for c in range(3))
    expected = torch.stack([(r - 0.485) / 0.229, (g - 0.456) / 0.224, (b - 0.406) / 0.225], 1)
    assert torch.allclose(out.double(), expected, atol=1e-5)


def test_caffe_style_flips_to_bgr_and_subtracts_the_caffe_mean(images):
    out = InputNormalizer("caffe")(images)
    assert out.dtype == torch.float32
    r, g, b = (images[:, c].double() for c in range(3))
    expected = torch.stack([b - 104.008, g - 116.669, r - 122.675], 1)
    assert torch.allclose(out.double(), expected, atol=1e-4)
    # a pure red pixel ends up in the last (R) channel of the BGR output
    red = torch.zeros(1, 3, 1, 1, dtype=torch.uint8)
    red[0, 0] = 255
    assert InputNormalizer("caffe")(red).flatten().tolist() == pytest.approx(
        [-104.008, -116.669, 255 - 122.675], abs=1e-4
    )


@pytest.mark.parametrize("style", ["torchvision", "caffe"])
def test_float_input_in_0_255_gives_the_same_result(images, style):
    normalizer = InputNormalizer(style)
    assert torch.equal(normalizer(images), normalizer(images.float()))
    assert torch.equal(normalizer(images.double()), normalizer(images))  # always float32 out


def test_constants_are_buffers_that_stay_out_of_checkpoints():
    normalizer = InputNormalizer("torchvision")
    assert {name for name, _ in normalizer.named_buffers()} == {"mean", "std"}
    assert normalizer.state_dict() == {}
    assert list(normalizer.parameters()) == []
    moved = normalizer.to(torch.float64)  # buffers follow .to(...) like they follow the device
    assert moved.mean.dtype == torch.float64


def test_unknown_style_and_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="unknown weights_style 'bgr'.*torchvision, caffe"):
        InputNormalizer("bgr")
    with pytest.raises(ValueError, match=r"B x 3 x H x W, got shape \(3, 4, 4\)"):
        InputNormalizer()(torch.zeros(3, 4, 4))
