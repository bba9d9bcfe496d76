"""Instance-wise inference: windows, batched crop + paste-back, max/sum aggregation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deconvnet.inference import instance
from deconvnet.inference.cpu_paste import paste_windows_cpu
from deconvnet.inference.instance import inference_windows, instance_scores, paste_by_grid_sample, paste_windows


@pytest.fixture(params=["grid_sample", "cpu_loop"])
def paste(request):
    """Both paste-back implementations (the device one and the CPU one), with
    :func:`paste_windows`'s signature; each test below must hold for both."""
    if request.param == "grid_sample":
        return paste_by_grid_sample
    return lambda scores, windows, height, width, aggregation="max": paste_windows_cpu(
        scores, windows, height, width, aggregation)


def test_paste_windows_takes_the_cpu_loop_on_a_cpu_and_grid_sample_elsewhere(monkeypatch):
    called = []
    monkeypatch.setattr("deconvnet.inference.cpu_paste.paste_windows_cpu", lambda *args: called.append(args) or "cpu")
    monkeypatch.setattr(instance, "paste_by_grid_sample", lambda *args: called.append(args) or "grid")
    scores, windows = torch.zeros(1, 2, 4, 4), torch.zeros(1, 4)
    assert paste_windows(scores, windows, 5, 6, "sum") == "cpu"
    meta = torch.zeros(1, 2, 4, 4, device="meta")
    assert paste_windows(meta, windows, 5, 6, chunk_elements=9) == "grid"
    assert called == [(scores, windows, 5, 6, "sum"), (meta, windows, 5, 6, "max", 9)]
    assert called[0][0] is scores and called[1][0] is meta and called[1][1] is windows


def test_instance_scores_pastes_with_its_aggregation_and_chunk_size(monkeypatch):
    called = []
    monkeypatch.setattr(instance, "paste_windows", lambda *args: called.append(args[2:]) or "pasted")
    image = torch.zeros(1, 3, 12, 10, dtype=torch.uint8)
    result = instance_scores(lambda crops: torch.zeros(len(crops), 3, 4, 4), image, torch.tensor([[0.0, 0, 8, 8]]),
                             input_size=4, aggregation="sum", chunk_elements=7)
    assert result == "pasted" and called == [(12, 10, "sum", 7)]


def test_paste_puts_a_window_at_its_pixels_even_across_the_border(paste):
    scores = torch.arange(2 * 16 * 16, dtype=torch.float32).reshape(1, 2, 16, 16) + 1
    # a 16 x 16 box at scale 1 whose top-left corner lies outside the 20 x 24 image
    box = torch.tensor([[-4.0, -2.0, 12.0, 14.0]])
    out = paste(scores, box, height=20, width=24, aggregation="max")
    assert out.shape == (2, 20, 24)
    torch.testing.assert_close(out[:, 0:14, 0:12], scores[0, :, 2:16, 4:16])
    assert (out[:, 14:, :] == 0).all() and (out[:, :, 12:] == 0).all()


def test_paste_matches_resizing_each_window_onto_its_box(paste):
    torch.manual_seed(0)
    scores = torch.randn(3, 4, 16, 16)
    boxes = torch.tensor([[2.0, 3.0, 30.0, 20.0], [-5.0, -7.0, 10.0, 12.0], [20.0, 10.0, 45.0, 50.0]])
    height, width = 40, 36
    reference = torch.zeros(4, height, width)
    for k, (x1, y1, x2, y2) in enumerate(boxes.int().tolist()):
        up = F.interpolate(scores[k:k + 1], size=(y2 - y1, x2 - x1), mode="bilinear", align_corners=False)[0]
        ys, xs, ye, xe = max(y1, 0), max(x1, 0), min(y2, height), min(x2, width)
        reference[:, ys:ye, xs:xe] = torch.maximum(reference[:, ys:ye, xs:xe],
                                                   up[:, ys - y1:ye - y1, xs - x1:xe - x1])
    torch.testing.assert_close(paste(scores, boxes, height, width, "max"), reference, atol=1e-5, rtol=0)


def _constant_windows(values: list[list[float]], size: int = 8) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)[:, :, None, None].expand(-1, -1, size, size).contiguous()


def test_max_and_sum_aggregation_on_overlapping_windows(paste):
    scores = _constant_windows([[1.0, -2.0, 3.0], [2.0, 5.0, -1.0]])
    boxes = torch.tensor([[0.0, 0.0, 8.0, 8.0], [4.0, 0.0, 12.0, 8.0]])  # overlap: x in 4..8
    top = paste(scores, boxes, height=8, width=16, aggregation="max")
    total = paste(scores, boxes, height=8, width=16, aggregation="sum")
    # only window A (x 0..4): max with the zero accumulator clips the negative class to 0
    assert top[:, 0, 0].tolist() == [1.0, 0.0, 3.0]
    assert total[:, 0, 0].tolist() == [1.0, -2.0, 3.0]
    # overlap
    assert top[:, 0, 5].tolist() == [2.0, 5.0, 3.0]
    assert total[:, 0, 5].tolist() == [3.0, 3.0, 2.0]
    # only window B, then no window at all
    assert top[:, 0, 9].tolist() == [2.0, 5.0, 0.0]
    assert total[:, 0, 9].tolist() == [2.0, 5.0, -1.0]
    assert (top[:, :, 12:] == 0).all() and (total[:, :, 12:] == 0).all()


def test_max_accumulator_starts_at_zero(paste):
    scores = -torch.rand(3, 4, 8, 8) - 0.1  # negative everywhere
    boxes = torch.tensor([[0.0, 0.0, 8.0, 8.0], [2.0, 2.0, 10.0, 10.0], [-3.0, 1.0, 5.0, 9.0]])
    out = paste(scores, boxes, 10, 10, "max")
    assert (out == 0).all()
    assert (paste(scores, boxes, 10, 10, "sum") < 0).any()


def test_unknown_aggregation_is_refused():
    with pytest.raises(ValueError, match="aggregation"):
        paste_windows(torch.zeros(1, 2, 4, 4), torch.tensor([[0.0, 0, 4, 4]]), 4, 4, "mean")


def test_crop_forward_paste_round_trip_is_identity_at_scale_one():
    """Windows the size of the network input at integer positions: cut, 'network' (the
    identity on one channel), paste and max give back the image wherever a window lies."""
    torch.manual_seed(1)
    image = torch.randint(0, 256, (1, 3, 30, 40), dtype=torch.uint8)
    windows = torch.tensor([[0.0, 0.0, 16.0, 16.0], [10.0, 5.0, 26.0, 21.0], [30.0, 20.0, 46.0, 36.0]])
    calls = []

    def network(x):
        calls.append(len(x))
        return x[:, :2]  # two "classes": the red and green channels

    out = instance_scores(network, image, windows, input_size=16, aggregation="max", batch_size=2,
                          chunk_elements=100)
    assert calls == [2, 1]  # one batched forward per chunk of proposal_batch_size windows
    covered = torch.zeros(30, 40, dtype=torch.bool)
    for x1, y1, x2, y2 in windows.int().tolist():
        covered[max(y1, 0):y2, max(x1, 0):x2] = True
    expected = torch.where(covered, image[0, :2].float(), torch.zeros(()))
    torch.testing.assert_close(out, expected)


def test_inference_windows_top_k_square_and_whole_image_fallback():
    proposals = np.array([[10, 10, 30, 20], [0, 0, 50, 40], [5, 5, 25, 25]], np.float32)
    top = inference_windows(proposals, height=40, width=50, num_proposals=2, context_scale=1.0, square=True)
    assert top.shape == (2, 4)
    np.testing.assert_allclose(top[0], [10, 5, 30, 25])  # squared around the centre (20, 15)
    np.testing.assert_allclose(top[1], [0, -5, 50, 45])
    # the default: the training rule, x1.2 then square (side 1.2 x 20 = 24 around (20, 15))
    np.testing.assert_allclose(inference_windows(proposals, 40, 50, 1)[0], [8, 3, 32, 27], rtol=1e-6)
    raw = inference_windows(proposals, height=40, width=50, num_proposals=5, context_scale=1.0, square=False)
    np.testing.assert_allclose(raw, proposals)
    for empty in (None, np.zeros((0, 4), np.float32)):
        whole = inference_windows(empty, height=40, width=50, num_proposals=50, context_scale=1.0, square=False)
        np.testing.assert_allclose(whole, [[0, 0, 50, 40]])


@pytest.mark.parametrize("aggregation", ["max", "sum"])
def test_paste_over_each_box_equals_resampling_the_whole_frame(aggregation, paste):
    """Fractional boxes of several sizes, some crossing the border, one outside the image:
    the same values as resampling every window over the whole frame and masking its box."""
    torch.manual_seed(1)
    scores = torch.randn(9, 3, 12, 12)
    boxes = torch.tensor([[2.3, 3.7, 30.1, 20.9], [-5.5, -7.2, 10.4, 12.6], [20.0, 10.0, 45.0, 50.0],
                          [1.6, 2.2, 29.4, 19.4], [-30.0, -30.0, -2.0, -4.0], [0.0, 0.0, 36.0, 40.0],
                          [8.25, 8.75, 9.5, 9.9], [3.0, -20.0, 20.0, -5.0], [40.5, 4.0, 52.0, 30.0]])
    height, width = 40, 36  # the last two cross the frame on one axis only: nothing to paste
    centres_x, centres_y = torch.arange(width) + 0.5, torch.arange(height) + 0.5
    expected = torch.zeros(3, height, width)
    for k, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        gx = (2 * (centres_x - x1) / (x2 - x1) - 1)[None, :].expand(height, width)
        gy = (2 * (centres_y - y1) / (y2 - y1) - 1)[:, None].expand(height, width)
        full = F.grid_sample(scores[k:k + 1], torch.stack([gx, gy], -1)[None], mode="bilinear",
                             padding_mode="border", align_corners=False)[0]
        inside = ((centres_y >= y1) & (centres_y < y2))[:, None] & ((centres_x >= x1) & (centres_x < x2))[None, :]
        full = torch.where(inside, full, torch.zeros(()))
        expected = torch.maximum(expected, full) if aggregation == "max" else expected + full
    torch.testing.assert_close(paste(scores, boxes, height, width, aggregation), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("aggregation", ["max", "sum"])
def test_grid_sample_paste_in_chunks_of_one_window_changes_nothing(aggregation):
    torch.manual_seed(2)
    scores = torch.randn(5, 3, 12, 12)
    # two pairs of equally sized regions (one call each unless chunked) and a lone one
    boxes = torch.tensor([[2.0, 3.0, 30.0, 20.0], [5.0, 9.0, 33.0, 26.0], [-5.0, -7.0, 10.0, 12.0],
                          [1.0, 0.0, 16.0, 19.0], [20.0, 10.0, 45.0, 50.0]])
    whole = paste_by_grid_sample(scores, boxes, 40, 36, aggregation)
    torch.testing.assert_close(paste_by_grid_sample(scores, boxes, 40, 36, aggregation, chunk_elements=1), whole)


def test_instance_scores_aggregate_by_max_unless_told():
    """Two overlapping windows of a network that scores 2 for class 1 everywhere: the
    default (max, the paper's eq. 1) gives 2 on the overlap, sum gives 4."""

    def network(crops):
        out = torch.zeros(crops.shape[0], 3, *crops.shape[2:])
        out[:, 1] = 2.0
        return out

    image = torch.zeros(1, 3, 12, 12, dtype=torch.uint8)
    windows = torch.tensor([[0.0, 0.0, 8.0, 8.0], [4.0, 4.0, 12.0, 12.0]])
    default = instance_scores(network, image, windows, input_size=4)
    assert default[1, 6, 6] == 2.0 and default[1, 2, 2] == 2.0 and default[1, 2, 10] == 0.0
    assert instance_scores(network, image, windows, input_size=4, aggregation="sum")[1, 6, 6] == 4.0


def test_paste_takes_float64_boxes_and_counts_a_centre_on_the_edge(paste):
    # one class, value 1 in window 0, 3 in window 1; the boxes overlap on x in [4, 6)
    scores = torch.tensor([1.0, 3.0]).view(2, 1, 1, 1).expand(2, 1, 4, 4).contiguous()
    windows = torch.tensor([[2.5, 0.0, 6.5, 4.0], [4.0, 0.0, 8.0, 4.0]], dtype=torch.float64)
    pasted = paste(scores, windows, 4, 9, "max")
    # pixel centres x + 0.5: 2.5 lies on window 0's first edge (inside), 6.5 on its last (outside)
    np.testing.assert_array_equal(pasted[0, 0].numpy(), [0, 0, 1, 1, 3, 3, 3, 3, 0])
    summed = paste(scores, windows.float(), 4, 9, "sum")
    np.testing.assert_array_equal(summed[0, 0].numpy(), [0, 0, 1, 1, 4, 4, 3, 3, 0])
    # the same along y: centre 2.5 on the first edge is in, 6.5 on the last is out
    transposed = paste(scores.transpose(2, 3), windows[:, [1, 0, 3, 2]], 9, 4, "max")
    np.testing.assert_array_equal(transposed[0, :, 0].numpy(), [0, 0, 1, 1, 3, 3, 3, 3, 0])


def test_paste_windows_aggregates_by_max_unless_told():
    scores = torch.tensor([1.0, 3.0]).view(2, 1, 1, 1).expand(2, 1, 4, 4).contiguous()
    windows = torch.tensor([[0.0, 0.0, 6.0, 4.0], [4.0, 0.0, 8.0, 4.0]])
    np.testing.assert_array_equal(paste_windows(scores, windows, height=4, width=9)[0, 0].numpy(),
                                  [1, 1, 1, 1, 3, 3, 3, 3, 0])


@pytest.mark.parametrize("aggregation", ["max", "sum"])
def test_cpu_paste_split_over_threads_by_class_changes_nothing(aggregation):
    torch.manual_seed(3)
    scores = torch.randn(6, 5, 10, 10)
    boxes = torch.tensor([[2.3, 3.7, 30.1, 20.9], [-5.5, -7.2, 10.4, 12.6], [20.0, 10.0, 45.0, 50.0],
                          [1.6, 2.2, 29.4, 19.4], [0.0, 0.0, 36.0, 40.0], [8.25, 8.75, 19.5, 19.9]])
    one = paste_windows_cpu(scores, boxes, 40, 36, aggregation, threads=1)
    for threads in (2, 3, 5, 8):  # uneven splits, one class each, more threads than classes
        torch.testing.assert_close(paste_windows_cpu(scores, boxes, 40, 36, aggregation, threads=threads),
                                   one, rtol=0, atol=0)
