"""Dense CRF: it sharpens a coarse, noisy probability map; parameters; the worker pool."""

from __future__ import annotations

import numpy as np
import pytest

from deconvnet.config import ConfigError, load_config
from deconvnet.inference.crf import PRESETS, CRFParams, CRFPool, crf_params, dense_crf

from .conftest import make_scene


def _mean_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    keep = gt != 255
    ious = []
    for c in np.unique(gt[keep]):
        inter = ((pred == c) & (gt == c) & keep).sum()
        union = (((pred == c) | (gt == c)) & keep).sum()
        ious.append(inter / union)
    return float(np.mean(ious))


def coarse_noisy_probabilities(label: np.ndarray, num_classes: int, seed: int = 0) -> np.ndarray:
    """Blocky (8 x 8 cells) and noisy class probabilities, like an upsampled low-res net."""
    rng = np.random.default_rng(seed)
    clean = np.where(label == 255, 0, label)
    onehot = np.eye(num_classes, dtype=np.float32)[clean].transpose(2, 0, 1)
    h, w = label.shape
    cells = onehot[:, ::8, ::8].repeat(8, 1).repeat(8, 2)[:, :h, :w]
    logits = np.log(cells * 0.6 + 0.2) + rng.normal(0, 0.8, cells.shape)
    prob = np.exp(logits)
    return (prob / prob.sum(0, keepdims=True)).astype(np.float32)


@pytest.fixture
def noisy_scene():
    image, gt = make_scene(96, 128, [3, 7, 12], seed=4, band=1)
    rng = np.random.default_rng(1)
    image = np.clip(image.astype(np.float32) + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
    return image, gt, coarse_noisy_probabilities(gt, 21)


@pytest.mark.parametrize("preset", ["official", "deeplab"])
def test_crf_improves_a_coarse_noisy_map(noisy_scene, preset):
    image, gt, prob = noisy_scene
    before = _mean_iou(prob.argmax(0), gt)
    after = _mean_iou(dense_crf(image, prob, PRESETS[preset]), gt)
    assert after > before + 0.1, (before, after)


def test_crf_checks_shapes():
    with pytest.raises(ValueError, match="does not match"):
        dense_crf(np.zeros((10, 12, 3), np.uint8), np.full((21, 12, 10), 1 / 21, np.float32))


def test_presets_and_custom_values():
    cfg = load_config()
    assert crf_params(cfg.crf) == CRFParams(10, 3.0, 3.0, 20.0, 3.0, 5.0)
    deeplab = crf_params(load_config(overrides=["crf.preset=deeplab"]).crf)
    assert (deeplab.bilateral_sxy, deeplab.bilateral_srgb, deeplab.bilateral_weight) == (121, 5, 4)
    assert (deeplab.gaussian_sxy, deeplab.gaussian_weight) == (3, 3)
    custom = crf_params(load_config(overrides=["crf.preset=custom", "crf.bilateral_sxy=50"]).crf)
    assert custom.bilateral_sxy == 50 and custom.bilateral_weight == 5


def test_a_number_the_preset_would_ignore_is_an_error():
    with pytest.raises(ConfigError, match="crf.bilateral_sxy=50.*crf.preset=custom"):
        crf_params(load_config(overrides=["crf.bilateral_sxy=50"]).crf)
    with pytest.raises(ConfigError, match="crf.preset=fancy is not one of the allowed values: official, deeplab, custom"):
        crf_params(load_config(overrides=["crf.preset=fancy"]).crf)


def test_pool_returns_serial_results_in_order_with_bounded_queue(noisy_scene):
    image, gt, prob = noisy_scene
    jobs = [(k, image, coarse_noisy_probabilities(gt, 21, seed=k)) for k in range(5)]
    expected = [dense_crf(img, p) for _, img, p in jobs]
    got = []
    with CRFPool(PRESETS["official"], workers=2, max_pending=2) as pool:
        for key, img, p in jobs:
            pool.submit(key, img, p)
            assert pool.in_flight <= 2
            got += pool.ready()
        got += pool.drain()
    assert [key for key, _ in got] == list(range(5))
    for (_, labels), ref in zip(got, expected):
        np.testing.assert_array_equal(labels, ref)
