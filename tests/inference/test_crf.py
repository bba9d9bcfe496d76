"""Dense CRF: it sharpens a coarse, noisy probability map; parameters; the worker pool."""

from __future__ import annotations

from dataclasses import replace

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


def _two_classes(p_one: np.ndarray) -> np.ndarray:
    """2 x H x W probabilities from the probability of class 1."""
    return np.stack([1 - p_one, p_one]).astype(np.float32)


@pytest.fixture
def displaced_edge():
    """A grey image with a colour edge at x = 24 and a weak unary whose class boundary lies
    8 px to the right (x = 32). A long-range, colour-sensitive bilateral term moves the
    boundary onto the colour edge; a short-range one, or none, leaves the unary's boundary."""
    height, width = 48, 64
    image = np.zeros((height, width, 3), np.uint8)
    image[:, :24], image[:, 24:] = 40, 200
    xs = np.arange(width)[None].repeat(height, 0)
    prob = _two_classes(np.where(xs >= 32, 0.6, 0.4))
    return image, prob, (xs >= 24).astype(np.uint8), (xs >= 32).astype(np.uint8)


def test_bilateral_term_moves_the_boundary_onto_the_colour_edge(displaced_edge):
    image, prob, colour_edge, unary_edge = displaced_edge
    official = PRESETS["official"]
    np.testing.assert_array_equal(dense_crf(image, prob, official), colour_edge)
    np.testing.assert_array_equal(dense_crf(image, prob, PRESETS["deeplab"]), colour_edge)
    # without the bilateral term the smoothness kernel alone keeps the unary's straight edge
    no_bilateral = replace(official, bilateral_weight=0.0)
    np.testing.assert_array_equal(dense_crf(image, prob, no_bilateral), unary_edge)
    # sxy and srgb swapped: a 3-px reach cannot pull pixels 8 px away
    swapped = replace(official, bilateral_sxy=official.bilateral_srgb, bilateral_srgb=official.bilateral_sxy)
    np.testing.assert_array_equal(dense_crf(image, prob, swapped), unary_edge)


def test_iterations_are_the_given_number(displaced_edge):
    image, prob, colour_edge, unary_edge = displaced_edge
    # no mean-field step: the labels are the unary's argmax (-log p, not log p)
    np.testing.assert_array_equal(dense_crf(image, prob, replace(PRESETS["official"], iterations=0)), unary_edge)
    np.testing.assert_array_equal(dense_crf(image, prob, replace(PRESETS["official"], iterations=1)), colour_edge)


def _far_patch_scene():
    """A large bright object and a small bright patch 100 px away, the patch's unary weakly
    background: (image, two-class probabilities)."""
    height, width = 64, 200
    image = np.full((height, width, 3), 40, np.uint8)
    image[12:52, 8:48] = 200
    image[27:37, 150:160] = 200
    p_one = np.full((height, width), 0.1)
    p_one[12:52, 8:48] = 0.9
    p_one[27:37, 150:160] = 0.4
    return image, _two_classes(p_one)


def test_deeplab_reaches_an_object_the_official_range_cannot():
    """A small bright patch 100 px from a large bright object, its unary weakly background:
    DeepLab's bilateral sxy 121 links it to the object (label 1), the official 20 does not."""
    image, prob = _far_patch_scene()
    for preset, island in (("official", 0), ("deeplab", 1)):
        labels = dense_crf(image, prob, PRESETS[preset])
        assert (labels[27:37, 150:160] == island).all(), preset
        assert (labels[12:52, 8:48] == 1).all() and (labels[:, 60:140] == 0).all(), preset


def test_smoothness_kernel_width_and_weight_remove_isolated_flips():
    """Uniform colour (the bilateral term off): 10% of the pixels carry the wrong unary; the
    3-px Gaussian kernel with weight 3 removes every one, a 0.3-px kernel or weight 0 none."""
    rng = np.random.default_rng(0)
    truth = np.zeros((40, 40), np.uint8)
    truth[:, 20:] = 1
    flipped = rng.random(truth.shape) < 0.1
    p_one = np.where(truth == 1, 0.7, 0.3)
    prob = _two_classes(np.where(flipped, 1 - p_one, p_one))
    image = np.full((40, 40, 3), 100, np.uint8)
    smooth = replace(PRESETS["official"], bilateral_weight=0.0)
    np.testing.assert_array_equal(dense_crf(image, prob, smooth), truth)
    for no_effect in (replace(smooth, gaussian_sxy=0.3), replace(smooth, gaussian_weight=0.0)):
        np.testing.assert_array_equal(dense_crf(image, prob, no_effect), prob.argmax(0))
    # a 1-px kernel removes most flips but not all: the width is used as given
    assert 0 < (dense_crf(image, prob, replace(smooth, gaussian_sxy=1.0)) != truth).sum() < flipped.sum() / 4


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
    with pytest.raises(
        ConfigError, match="crf.preset=fancy is not one of the allowed values: official, deeplab, custom"
    ):
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


# ------------------------------------------ the details mutation testing asked for


def test_the_official_preset_is_built_from_the_schema_defaults():
    # called at import time to fill PRESETS: mutmut reaches it only through a direct call
    from deconvnet.inference.crf import _official

    assert _official() == CRFParams(iterations=10, gaussian_sxy=3.0, gaussian_weight=3.0,
                                    bilateral_sxy=20.0, bilateral_srgb=3.0, bilateral_weight=5.0)


def test_a_plain_mapping_without_keys_means_the_official_preset():
    official = CRFParams(10, 3.0, 3.0, 20.0, 3.0, 5.0)
    assert crf_params({}) == official  # no preset key: official
    assert crf_params({"preset": "custom"}) == official  # custom, no numbers: the official ones
    assert crf_params({"preset": "custom", "iterations": 4}) == replace(official, iterations=4)


def test_every_ignored_number_is_named_in_one_message():
    with pytest.raises(ConfigError) as error:
        crf_params({"preset": "deeplab", "iterations": 5, "bilateral_srgb": 9.0})
    assert str(error.value) == (
        "crf.iterations=5, crf.bilateral_srgb=9.0 would be ignored because crf.preset=deeplab "
        "fixes the CRF parameters; add crf.preset=custom to use your own values")


def test_a_zero_probability_gives_a_finite_unary():
    """Probabilities are clipped at MIN_PROBABILITY before -log: a pixel whose class 1 has
    probability exactly 0, alone in a field where class 1 is certain, is pulled over by
    its neighbours (-log 1e-8 = 18.4 is less than the Potts terms of ~50 neighbours); an
    infinite unary would keep it at class 0."""
    height, width = 15, 15
    p_one = np.ones((height, width), np.float32)
    p_one[7, 7] = 0.0
    labels = dense_crf(np.full((height, width, 3), 90, np.uint8), _two_classes(p_one))
    assert labels.dtype == np.uint8
    assert (labels == 1).all()


def test_default_workers_shares_the_cores_of_this_process(monkeypatch):
    from deconvnet.inference import crf

    monkeypatch.setattr(crf.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert [crf.default_workers(n) for n in (1, 3, 0, 16)] == [8, 2, 8, 1]
    assert crf.default_workers() == 8
    monkeypatch.delattr(crf.os, "sched_getaffinity")  # not Linux: the CPU count
    monkeypatch.setattr(crf.os, "cpu_count", lambda: 6)
    assert crf.default_workers(2) == 3
    monkeypatch.setattr(crf.os, "cpu_count", lambda: None)  # unknown: one
    assert crf.default_workers() == 1


def test_pool_sizes_and_its_executor(monkeypatch):
    import multiprocessing
    import os

    from deconvnet.inference import crf
    from deconvnet.runtime.children import die_with_parent

    monkeypatch.setattr(crf, "default_workers", lambda processes_per_node=1: 3)
    with CRFPool(PRESETS["official"], workers=0) as auto:  # 0: every core
        assert (auto.workers, auto.max_pending) == (3, 6)
    with CRFPool(PRESETS["official"]) as default:  # the default: every core too
        assert default.workers == 3
    with CRFPool(PRESETS["official"], workers=1) as one:
        assert (one.workers, one.max_pending) == (1, 2)
        # workers are spawned (the parent may hold CUDA state), and end with their parent:
        # ProcessPoolExecutor keeps its arguments on private attributes (no spawn happens here)
        executor = one._executor
        assert executor._max_workers == 1
        assert executor._mp_context.get_start_method() == "spawn"
        assert executor._initializer is die_with_parent and executor._initargs == (os.getpid(),)
    assert multiprocessing.active_children() == []


def test_pool_uses_its_own_parameters_and_closes_its_workers():
    """The deeplab preset through the pool: its labels, not the official ones."""
    import multiprocessing

    image, prob = _far_patch_scene()
    with CRFPool(PRESETS["deeplab"], workers=1) as pool:
        pool.submit("island", image, prob)
        ((key, labels),) = pool.drain()
    assert key == "island" and (labels[27:37, 150:160] == 1).all()  # official: 0 (test above)
    assert multiprocessing.active_children() == []  # close() waited for the worker
