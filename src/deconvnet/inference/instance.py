"""Instance-wise inference: proposal windows -> one batched DeconvNet pass -> image-frame scores.

For one image (PAPER.md, "Inference"; the official ``generate_EDeconvNet_CRF_results.m``):

1. its proposals (sorted by score, the top ``num_proposals``; an image without any falls
   back to the whole-image box) become windows by the rule of the training windows
   (:func:`deconvnet.data.windows.make_windows`: x ``data.context_scale`` about the centre,
   then the square holding it; the official scripts' "extended" boxes);
2. every window is cut from the zero-padded image and resized to the network input in one
   ``roi_align`` call on the device (:func:`deconvnet.data.windows.crop_boxes_batched`, the
   twin of the OpenCV cut used for training);
3. the windows go through the network in chunks of ``batch_size``;
4. the raw scores (no softmax) are resized bilinearly back onto each window's box and
   merged into the image frame: pixel-wise max (eq. 1, official) or sum (eq. 2), with the
   accumulator starting at zero, so pixels no window covers keep score 0 for every class.

Paste-back maps each image pixel of a window's box to its position inside the window (pixel
centres at i + 0.5, the geometry of ``window_affine``), over that box only, and reduces the
windows into the frame by max or sum; pixels outside a window's box get nothing from it. On
a GPU that is batched ``grid_sample`` (windows with equally sized boxes in one call); on a
CPU a fused compiled loop (:mod:`deconvnet.inference.cpu_paste`) does the same about 4x
faster.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from deconvnet.data.windows import crop_boxes_batched, make_windows

AGGREGATIONS = ("max", "sum")
# elements of the K x C x H x W paste-back buffer per chunk: 2^26 float32 = 256 MiB
PASTE_CHUNK_ELEMENTS = 1 << 26


def inference_windows(
    proposals: np.ndarray | None, height: int, width: int, num_proposals: int,
    context_scale: float = 1.2, square: bool = True,
) -> np.ndarray:
    """float32 K x 4 windows of one image: the top ``num_proposals`` proposal boxes (already
    sorted by score), or the whole image when there are none, each through the window rule
    of the training windows (``make_windows(box, context_scale, square)``; proposals that are
    extended windows already take ``context_scale=1``)."""
    boxes = np.zeros((0, 4), np.float32) if proposals is None else np.asarray(proposals, np.float32)
    boxes = boxes.reshape(-1, 4)[:num_proposals]
    if len(boxes) == 0:
        boxes = np.array([[0.0, 0.0, float(width), float(height)]], dtype=np.float32)
    return make_windows(boxes, context_scale=context_scale, square=square)


def forward_in_chunks(
    network: Callable[[torch.Tensor], torch.Tensor], crops: torch.Tensor, batch_size: int
) -> torch.Tensor:
    """Network scores of K crops, ``batch_size`` at a time, as float32 K x C x h x w."""
    outputs = [network(crops[i:i + batch_size]).float() for i in range(0, len(crops), batch_size)]
    return torch.cat(outputs)


def _box_grid(windows: torch.Tensor, size: int, axis: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For image pixels 0..size-1 along one axis (0: x, 1: y): the normalised grid_sample
    coordinate inside each window (K x size) and whether the pixel centre is in the box."""
    start, stop = windows[:, axis, None], windows[:, axis + 2, None]
    centres = torch.arange(size, device=windows.device, dtype=windows.dtype) + 0.5
    # align_corners=False: -1 is the box's first edge, +1 its last edge
    coords = 2 * (centres - start) / (stop - start) - 1
    inside = (centres >= start) & (centres < stop)
    return coords, inside


def paste_windows(
    scores: torch.Tensor, windows: torch.Tensor, height: int, width: int,
    aggregation: str = "max", chunk_elements: int = PASTE_CHUNK_ELEMENTS,
) -> torch.Tensor:
    """Merge window scores (K x C x h x w) into a C x height x width image-frame map.

    Window k's scores are resized bilinearly onto its box ``windows[k] = [x1, y1, x2, y2]``
    (image pixel coordinates, x2/y2 exclusive, may cross the image border). Pixels outside
    every box keep 0. ``max``: pixel-wise maximum over windows and the zero accumulator;
    ``sum``: pixel-wise sum.

    Each window is resampled only over the image pixels whose centres lie in its box (its
    region), so the cost follows the windows' area, not K x the frame: on a CPU in the
    fused loop of :func:`~deconvnet.inference.cpu_paste.paste_windows_cpu`, elsewhere by
    :func:`paste_by_grid_sample` (``chunk_elements`` bounds its buffer).
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    if scores.device.type == "cpu":
        from deconvnet.inference.cpu_paste import paste_windows_cpu  # numba: loaded when first used

        return paste_windows_cpu(scores, windows, height, width, aggregation)
    return paste_by_grid_sample(scores, windows, height, width, aggregation, chunk_elements)


def paste_by_grid_sample(
    scores: torch.Tensor, windows: torch.Tensor, height: int, width: int,
    aggregation: str, chunk_elements: int = PASTE_CHUNK_ELEMENTS,
) -> torch.Tensor:
    """:func:`paste_windows` on any device: windows whose regions have the same size go
    through one ``grid_sample`` call (at most ``chunk_elements`` output values per call),
    then each region is merged into the frame."""
    num_classes = scores.shape[1]
    windows = windows.to(device=scores.device, dtype=torch.float32)
    total = scores.new_zeros((num_classes, height, width))
    gx, inside_x = _box_grid(windows, width, axis=0)  # K x W
    gy, inside_y = _box_grid(windows, height, axis=1)  # K x H
    # each window's region: the first pixel inside and how many (centres inside form a run)
    x0, nx = inside_x.int().argmax(1), inside_x.sum(1)
    y0, ny = inside_y.int().argmax(1), inside_y.sum(1)
    regions = torch.stack([y0, ny, x0, nx], 1).tolist()  # one transfer for all windows
    by_size: dict[tuple[int, int], list[int]] = {}
    for k, (_, rows, _, cols) in enumerate(regions):
        if rows > 0 and cols > 0:
            by_size.setdefault((rows, cols), []).append(k)
    for (rows, cols), members in by_size.items():
        step = max(1, chunk_elements // max(1, num_classes * rows * cols))
        for start in range(0, len(members), step):
            group = members[start:start + step]
            index = torch.tensor(group, device=scores.device)
            cols_at = x0[index, None] + torch.arange(cols, device=scores.device)  # G x cols
            rows_at = y0[index, None] + torch.arange(rows, device=scores.device)  # G x rows
            grid_x = gx[index[:, None], cols_at]
            grid_y = gy[index[:, None], rows_at]
            grid = torch.stack([grid_x[:, None, :].expand(-1, rows, cols),
                                grid_y[:, :, None].expand(-1, rows, cols)], dim=-1)
            resized = F.grid_sample(scores[index], grid, mode="bilinear", padding_mode="border",
                                    align_corners=False)  # G x C x rows x cols
            for g, k in enumerate(group):
                top, left = regions[k][0], regions[k][2]
                target = total[:, top:top + rows, left:left + cols]
                if aggregation == "max":
                    torch.maximum(target, resized[g], out=target)
                else:
                    target += resized[g]
    return total


def instance_scores(
    network: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, windows: torch.Tensor,
    input_size: int, aggregation: str = "max", batch_size: int = 64,
    chunk_elements: int = PASTE_CHUNK_ELEMENTS,
) -> torch.Tensor:
    """Aggregated raw DeconvNet scores C x H x W of one image.

    ``image``: 1 x 3 x H x W (uint8 or float 0-255 RGB, on the network's device);
    ``windows``: K x 4 float boxes; ``network`` takes float 0-255 RGB windows (the input
    normalisation inside it) and returns K x C x input_size x input_size scores.
    """
    height, width = image.shape[-2:]
    windows = windows.to(device=image.device, dtype=torch.float32)
    crops = crop_boxes_batched(image.float(), [windows], input_size)
    scores = forward_in_chunks(network, crops, batch_size)
    return paste_windows(scores, windows, height, width, aggregation, chunk_elements)
