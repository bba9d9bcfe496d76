"""The segmentation loss: void pixels ignored, normalised over valid pixels or summed."""

import pytest
import torch
import torch.nn.functional as F

from deconvnet.training.losses import segmentation_loss


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 5, 6, 7, generator=g, requires_grad=True)
    target = torch.randint(0, 5, (2, 6, 7), generator=g)
    target[0, :3] = 255  # a void band
    return logits, target


def test_valid_is_the_mean_over_non_void_pixels():
    logits, target = _batch()
    keep = target != 255
    per_pixel = F.cross_entropy(logits, target.clamp_max(4), reduction="none")
    expected = per_pixel[keep].sum() / keep.sum()
    assert torch.allclose(segmentation_loss(logits, target, "valid"), expected)


def test_sum_is_the_sum_over_non_void_pixels_and_valid_times_count():
    logits, target = _batch(1)
    count = (target != 255).sum()
    total = segmentation_loss(logits, target, "sum")
    assert torch.allclose(total, segmentation_loss(logits, target, "valid") * count)


def test_void_only_batch_gives_zero_not_nan_and_no_gradient():
    logits, target = _batch()
    target[:] = 255
    loss = segmentation_loss(logits, target, "valid")
    loss.backward()
    assert loss.item() == 0.0 and torch.count_nonzero(logits.grad) == 0


def test_void_pixels_get_no_gradient():
    logits, target = _batch()
    segmentation_loss(logits, target, "valid").backward()
    assert torch.count_nonzero(logits.grad[0, :, :3]) == 0
    assert torch.count_nonzero(logits.grad[0, :, 3:]) > 0


def test_unknown_normalization_is_refused():
    logits, target = _batch()
    with pytest.raises(ValueError, match="valid, sum"):
        segmentation_loss(logits, target, "mean")
