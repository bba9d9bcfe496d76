"""The window abstraction: box helpers, the cv2 cut with padding, and its batched torch twin."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from deconvnet.config import load_config
from deconvnet.data.windows import (
    box_iou,
    clip_boxes,
    crop_boxes_batched,
    cut_window,
    enlarge_boxes,
    make_windows,
    square_boxes,
    window_params,
    windows_to_rois,
)
from deconvnet.errors import UserError


def test_box_iou_known_values_and_matrix_shape():
    a = np.array([[0, 0, 10, 10], [0, 0, 20, 10]], np.float32)
    b = np.array([[5, 0, 15, 10], [0, 0, 10, 10], [30, 30, 40, 40]], np.float32)
    iou = box_iou(a, b)
    assert iou.shape == (2, 3) and iou.dtype == np.float32
    np.testing.assert_allclose(iou[0], [50 / 150, 1.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(iou[1], [100 / 200, 100 / 200, 0.0], rtol=1e-6)
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 3)


def test_square_enlarge_clip():
    box = np.array([[10, 20, 30, 60]], np.float32)  # w 20, h 40, centre (20, 40)
    np.testing.assert_allclose(square_boxes(box), [[0, 20, 40, 60]])
    np.testing.assert_allclose(enlarge_boxes(box, 1.5), [[5, 10, 35, 70]])
    np.testing.assert_allclose(clip_boxes([[-5, -3, 120, 50]], 100, 40), [[0, 0, 100, 40]])


def _expected_window(box, scale: float) -> list[float]:
    """The paper's rule written out: side = scale x the longer side, same centre."""
    x1, y1, x2, y2 = box
    cx, cy, half = (x1 + x2) / 2, (y1 + y2) / 2, scale * max(x2 - x1, y2 - y1) / 2
    return [cx - half, cy - half, cx + half, cy + half]


@pytest.mark.parametrize("box", [[10, 20, 30, 80], [5, 40, 95, 55], [-8, 3, 12, 9], [7.5, 2.25, 33.5, 20.0]])
def test_window_rule_is_the_square_holding_the_enlarged_box(box):
    """Elongated boxes (1:3, 6:1, ...): the window is square, holds the 1.2x box, same centre."""
    window = make_windows(np.array([box], np.float32), context_scale=1.2, square=True)[0]
    np.testing.assert_allclose(window, _expected_window(box, 1.2), rtol=1e-5, atol=1e-4)
    x1, y1, x2, y2 = box
    w, h = (x2 - x1) * 1.2, (y2 - y1) * 1.2
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    enlarged = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
    assert window[2] - window[0] == pytest.approx(window[3] - window[1])
    assert window[0] <= enlarged[0] + 1e-4 and window[1] <= enlarged[1] + 1e-4
    assert window[2] >= enlarged[2] - 1e-4 and window[3] >= enlarged[3] - 1e-4
    # not squared: the enlarged box itself; no context: the box (extended windows as they are)
    np.testing.assert_allclose(make_windows([box], 1.2, square=False)[0], enlarged, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(make_windows([box], 1.0, square=False)[0], box, rtol=1e-6)


def test_window_params_from_config():
    cfg = load_config()
    assert window_params(cfg.data) == {"context_scale": 1.2, "square": True}
    assert window_params(cfg.data, proposals=True) == {"context_scale": 1.2, "square": True}
    ext = load_config(None, ["data.proposals.extended=true", "data.square_windows=false"])
    assert window_params(ext.data) == {"context_scale": 1.2, "square": False}  # GT boxes: context
    assert window_params(ext.data, proposals=True) == {"context_scale": 1.0, "square": False}
    with pytest.raises(UserError, match="data.context_scale"):  # the schema checks it
        load_config(None, ["data.context_scale=0"])


def _elongated_object(height: int, width: int, box) -> np.ndarray:
    image = np.zeros((height, width, 3), np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = 255
    return image


@pytest.mark.parametrize("box", [[60, 20, 90, 110], [10, 70, 190, 100]])  # 1:3 and 6:1 objects
def test_object_aspect_ratio_survives_the_window_resize(box):
    """Cut by the rule and resized to a square, a 1:3 object stays 1:3 (within 2%), in the cv2
    (training) cut and in the roi_align (inference) cut alike."""
    image = _elongated_object(140, 200, box)
    window = make_windows(np.array([box], np.float32), 1.2, True)[0]
    cv_cut, _ = cut_window(image, window, 100)
    torch_cut = crop_boxes_batched(torch.from_numpy(image.transpose(2, 0, 1).copy())[None].float(),
                                   [window[None]], 100)[0].numpy().transpose(1, 2, 0)
    true_ratio = (box[2] - box[0]) / (box[3] - box[1])
    for cut in (cv_cut.astype(np.float32), torch_cut):
        mass = cut[:, :, 0] / 255.0
        # object extent through its centre row / column, to sub-pixel precision (bilinear)
        width = mass[mass.shape[0] // 2].sum()
        height = mass[:, mass.shape[1] // 2].sum()
        assert width / height == pytest.approx(true_ratio, rel=0.02)
    # without squaring the object is squashed to the window's aspect: the ratio is lost
    squashed, _ = cut_window(image, make_windows([box], 1.2, False)[0], 100)
    mass = squashed[:, :, 0] / 255.0
    assert mass[50].sum() / mass[:, 50].sum() == pytest.approx(1.0, rel=0.05)


def test_training_and_inference_cut_the_same_pixels_for_rule_windows():
    """The cv2 path (training) and roi_align (inference) give the same crop for the same box
    through the same rule, also where the square window leaves the image."""
    image = _smooth_image(96, 128, seed=3)
    boxes = np.array([[50, 10, 70, 70], [0, 40, 100, 60], [100, 60, 125, 95]], np.float32)  # 1:3, 5:1, border
    windows = make_windows(boxes, 1.2, True)
    assert (windows[:, :2] < 0).any() or (windows[:, 2:] > [128, 96]).any()  # some leave the image
    batch = torch.from_numpy(image.transpose(2, 0, 1).copy())[None]
    crops = crop_boxes_batched(batch, [windows], 40).numpy().transpose(0, 2, 3, 1)
    for window, crop in zip(windows, crops):
        expected, _ = cut_window(image, window, 40)
        diff = np.abs(expected - crop)
        assert diff.max() < 3.0 and diff.mean() < 0.3, (window, diff.max(), diff.mean())


def test_cut_identity_when_box_matches_output_size():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    label = rng.integers(0, 21, (60, 80), dtype=np.uint8)
    out_image, out_label = cut_window(image, [10, 5, 42, 37], 32, label)
    np.testing.assert_array_equal(out_image, image[5:37, 10:42])
    np.testing.assert_array_equal(out_label, label[5:37, 10:42])


def test_cut_pads_image_with_0_and_label_with_255():
    image = np.full((40, 40, 3), 200, np.uint8)
    label = np.full((40, 40), 7, np.uint8)
    # a 60 x 60 window whose top-left 20 x 20 part lies outside the image, at scale 1
    out_image, out_label = cut_window(image, [-20, -20, 40, 40], 60, label)
    assert out_image.shape == (60, 60, 3) and out_label.shape == (60, 60)
    assert (out_image[:19, :] == 0).all() and (out_image[:, :19] == 0).all()
    assert (out_label[:20, :] == 255).all() and (out_label[:, :20] == 255).all()
    assert (out_image[21:, 21:] == 200).all()
    assert (out_label[20:, 20:] == 7).all()


def test_label_is_resampled_nearest():
    label = np.zeros((100, 100), np.uint8)
    label[:, 50:] = 15
    label[40:60, :] = 255
    _, out = cut_window(np.zeros((100, 100, 3), np.uint8), [0, 0, 100, 100], 37, label)
    assert set(np.unique(out).tolist()) == {0, 15, 255}


def _smooth_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, (height // 8, width // 8, 3)).astype(np.float32)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC).clip(0, 255)


def test_batched_torch_crop_agrees_with_cv2():
    image = _smooth_image(96, 128)
    boxes = np.array([
        [10, 20, 90, 80],      # inside
        [-30, -10, 60, 70],    # crosses the top-left border
        [100, 50, 170, 130],   # crosses the bottom-right border
        [5.5, 7.25, 40.3, 33.1],  # fractional, inside
        [-200, -200, -100, -100],  # entirely outside
    ], np.float32)
    batch = torch.from_numpy(image.transpose(2, 0, 1).copy())[None]
    crops = crop_boxes_batched(batch, [boxes], 48).numpy().transpose(0, 2, 3, 1)
    assert crops.shape == (5, 48, 48, 3)
    for box, crop in zip(boxes, crops):
        expected, _ = cut_window(image, box, 48)
        diff = np.abs(expected - crop)
        # OpenCV quantises sample positions to 1/32 px; the geometry is the same
        assert diff.max() < 3.0 and diff.mean() < 0.3, (box, diff.max(), diff.mean())
    assert np.abs(crops[4]).max() == 0  # outside the image: zeros
    assert np.abs(crops[1][:8, :8]).max() == 0  # the padded corner


def test_batched_crop_takes_each_box_from_its_own_image():
    images = torch.stack([torch.full((3, 20, 20), 10.0), torch.full((3, 20, 20), 50.0)])
    crops = crop_boxes_batched(images, [np.array([[0, 0, 10, 10]]), np.array([[5, 5, 15, 15], [0, 0, 20, 20]])], 8)
    assert crops.shape == (3, 3, 8, 8)
    assert torch.allclose(crops[0], torch.tensor(10.0)) and torch.allclose(crops[1:], torch.tensor(50.0))
    rois = windows_to_rois([np.zeros((2, 4)), np.zeros((1, 4))])
    assert rois[:, 0].tolist() == [0.0, 0.0, 1.0]
    assert crop_boxes_batched(images, [np.zeros((0, 4)), np.zeros((0, 4))], 8).shape == (0, 3, 8, 8)


def test_empty_box_is_rejected():
    with pytest.raises(ValueError, match="empty"):
        cut_window(np.zeros((10, 10, 3), np.uint8), [5, 5, 5, 9], 8)


def test_batched_crop_of_uint8_and_bf16_images():
    image = torch.arange(3 * 40 * 40, dtype=torch.float32).reshape(1, 3, 40, 40) % 251
    box = [np.array([[3.0, 4.0, 35.0, 36.0]], np.float32)]
    reference = crop_boxes_batched(image, box, 16)
    as_uint8 = crop_boxes_batched(image.to(torch.uint8), box, 16)
    assert as_uint8.dtype == torch.float32 and torch.allclose(as_uint8, reference)
    as_bf16 = crop_boxes_batched(image.to(torch.bfloat16), box, 16)
    assert as_bf16.dtype == torch.bfloat16
    assert (as_bf16.float() - reference).abs().max() <= 2.0  # bf16 rounding of values, not of positions


# ------------------------------------------ the details mutation testing asked for


def test_boxes_are_float32_n_by_4_whatever_comes_in():
    from deconvnet.data.windows import as_boxes

    single = as_boxes([1, 2, 3, 4])  # one box: a 1 x 4 array of float32
    assert single.shape == (1, 4) and single.dtype == np.float32
    assert as_boxes([[0, 0, 1, 1]]).dtype == np.float32  # integers in, float32 out
    for bad in (np.zeros((2, 3)), np.zeros((2, 2, 4))):
        with pytest.raises(ValueError, match=r"boxes must be N x 4 \[x1, y1, x2, y2\], got shape"):
            as_boxes(bad)
    for helper in (square_boxes, lambda b: enlarge_boxes(b, 1.5)):
        assert helper(np.array([[0, 0, 3, 5]], np.float64)).dtype == np.float32


def test_box_iou_away_from_the_origin_and_below_one_pixel():
    # 10 x 20 boxes at (30, 50), overlapping 5 px in x: IoU 100 / (200 + 200 - 100)
    a = [[30, 50, 40, 70]]
    b = [[35, 50, 45, 70]]
    np.testing.assert_allclose(box_iou(a, b), [[1 / 3]], rtol=1e-6)
    np.testing.assert_allclose(box_iou(b, a), [[1 / 3]], rtol=1e-6)
    # a 0.5 x 0.4 box against itself and against its left half: areas below one pixel count as they are
    tiny = [[2.0, 3.0, 2.5, 3.4]]
    half = [[2.0, 3.0, 2.25, 3.4]]
    np.testing.assert_allclose(box_iou(tiny, tiny), [[1.0]], rtol=1e-6)
    np.testing.assert_allclose(box_iou(tiny, half), [[0.5]], rtol=1e-5)
    np.testing.assert_allclose(box_iou(half, tiny), [[0.5]], rtol=1e-5)
    # boxes of no area overlap nothing: 0, not NaN or 1
    point = [[5, 5, 5, 5]]
    np.testing.assert_array_equal(box_iou(point, point), [[0.0]])


def test_make_windows_defaults_are_the_papers_and_any_scale_is_used():
    box = [[10, 20, 30, 60]]  # w 20, h 40, centre (20, 40)
    np.testing.assert_allclose(make_windows(box), [[-4, 16, 44, 64]])  # 1.2 x 40 = 48, square
    np.testing.assert_allclose(make_windows(box, context_scale=2.0, square=False), [[0, 0, 40, 80]])


def test_window_of_one_pixel_and_of_no_height():
    from deconvnet.data.windows import window_affine

    # a 1 x 1 window onto 4 x 4: output pixel u samples x1 + (u + 0.5) / 4 - 0.5
    np.testing.assert_allclose(window_affine([3, 7, 4, 8], 4), [[4, 0, (0.5 - 3) * 4 - 0.5],
                                                                 [0, 4, (0.5 - 7) * 4 - 0.5]])
    with pytest.raises(ValueError, match=r"window box \[0, 5, 4, 5\] is empty"):
        window_affine([0, 5, 4, 5], 4)


def test_cut_window_keeps_a_single_channel_axis_and_gives_no_label_without_one():
    image = np.arange(36, dtype=np.uint8).reshape(6, 6, 1)
    out, label = cut_window(image, [0, 0, 6, 6], 6)
    assert label is None
    assert out.shape == (6, 6, 1)
    np.testing.assert_array_equal(out, image)


def test_rois_from_a_tensor_list_or_nothing_in_the_dtype_and_device_asked():
    # an N x 5 tensor is taken as rois already, copied (crop_boxes_batched shifts them in place)
    given = torch.tensor([[1, 2, 3, 4, 5], [0, 0, 0, 8, 8]], dtype=torch.float64)
    rois = windows_to_rois(given)
    assert rois.dtype == torch.float32 and torch.equal(rois, given.float())
    rois += 1
    assert given[0, 1] == 2
    # per-image boxes, as tensors of another dtype or arrays: [index, x1, y1, x2, y2]
    per_image = [torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64), np.array([[5, 6, 7, 8]])]
    rois = windows_to_rois(per_image)
    assert rois.dtype == torch.float32
    assert rois.tolist() == [[0, 1, 2, 3, 4], [1, 5, 6, 7, 8]]
    assert windows_to_rois(per_image, dtype=torch.float64).dtype == torch.float64
    empty = windows_to_rois([])
    assert empty.shape == (0, 5) and empty.dtype == torch.float32
    assert windows_to_rois([], dtype=torch.float64).dtype == torch.float64
    # the device is the one asked for ("meta": a device other than the CPU, without data)
    for boxes in (given, per_image, []):
        assert windows_to_rois(boxes, device="meta").device.type == "meta"


def test_batched_crop_leaves_the_callers_rois_untouched():
    image = torch.arange(2 * 1 * 12 * 12, dtype=torch.float32).reshape(2, 1, 12, 12)
    rois = torch.tensor([[1, 2, 2, 10, 10]], dtype=torch.float32)
    before = rois.clone()
    crops = crop_boxes_batched(image, rois, 8)
    assert torch.equal(rois, before)
    np.testing.assert_allclose(crops[0, 0].numpy(), image[1, 0, 2:10, 2:10].numpy())
