"""The window: one box in image coordinates, cut out of the image the same way in training
and at inference, so that what the network sees at test time is what it learned on.

The rule (:func:`make_windows`, used by stage 1, stage 2 and evaluation): a box, either an
instance's tight box or a proposal, is enlarged ``data.context_scale`` (1.2) times about its
centre, then grown to the smallest square that holds it (``data.square_windows``), cut
with padding (image 0, label 255) and resized to the network's square input.

A window is a float box ``[x1, y1, x2, y2]`` in pixel coordinates of the original image
(x2/y2 exclusive: ``[0, 0, W, H]`` is the whole image). It may extend past the image border:
the part outside is padded with 0 in the image and 255 (void) in the label, as in the
official training data. Cutting maps the window onto an ``out_size x out_size`` grid
(bilinear for the image, nearest for the label) in one affine warp: crop, pad and resize.

Two implementations share exactly the same geometry (pixel centres at i + 0.5):

* :func:`cut_window` — OpenCV, on the CPU, for the data loaders;
* :func:`crop_boxes_batched` — torchvision's ``roi_align`` on a batch of float images on
  the device, for inference (many proposal windows per image in one call).

Box helpers (:func:`box_iou`, :func:`square_boxes`, :func:`enlarge_boxes`,
:func:`clip_boxes`) are vectorised over N x 4 arrays.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from deconvnet.data.classes import IGNORE_INDEX

# ---------------------------------------------------------------------------- box helpers


def as_boxes(boxes) -> np.ndarray:
    """Any N x 4 array-like (or a single box) as a float32 N x 4 array."""
    arr = np.asarray(boxes, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"boxes must be N x 4 [x1, y1, x2, y2], got shape {arr.shape}")
    return arr


def box_iou(a, b) -> np.ndarray:
    """Intersection over union of every box of ``a`` (N x 4) with every box of ``b`` (M x 4): N x M."""
    a, b = as_boxes(a), as_boxes(b)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0).astype(np.float32)


def square_boxes(boxes) -> np.ndarray:
    """Each box grown to a square of side max(w, h), around the same centre."""
    b = as_boxes(boxes)
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    half = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) / 2
    return np.stack([cx - half, cy - half, cx + half, cy + half], axis=1).astype(np.float32)


def enlarge_boxes(boxes, factor: float) -> np.ndarray:
    """Each box's width and height multiplied by ``factor``, around the same centre."""
    b = as_boxes(boxes)
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    hw, hh = (b[:, 2] - b[:, 0]) * factor / 2, (b[:, 3] - b[:, 1]) * factor / 2
    return np.stack([cx - hw, cy - hh, cx + hw, cy + hh], axis=1).astype(np.float32)


def clip_boxes(boxes, width: int, height: int) -> np.ndarray:
    """Boxes clipped to the image ``[0, 0, width, height]``."""
    b = as_boxes(boxes).copy()
    b[:, 0::2] = np.clip(b[:, 0::2], 0, width)
    b[:, 1::2] = np.clip(b[:, 1::2], 0, height)
    return b


def make_windows(boxes, context_scale: float = 1.2, square: bool = True) -> np.ndarray:
    """The window rule, for stage 1, stage 2 and inference alike (PAPER.md, "Training data").

    Each box (a ground-truth instance's tight box or a proposal) is enlarged ``context_scale``
    times about its centre to take in local context, then, when ``square``, grown to the
    smallest square that holds it (side ``context_scale x max(w, h)``, same centre), so the
    object keeps its aspect ratio when the window is resized to the network's square input.
    The window may leave the image; cutting it (:func:`cut_window`, :func:`crop_boxes_batched`)
    pads with 0 (image) and 255 (label). Boxes that are already windows (the official cached
    "extended" EdgeBoxes) take ``context_scale=1``: squaring a square changes nothing.
    """
    b = enlarge_boxes(boxes, context_scale) if context_scale != 1.0 else as_boxes(boxes)
    return square_boxes(b) if square else b


def window_params(data_cfg, proposals: bool = False) -> dict:
    """``make_windows`` keyword arguments from ``cfg.data``: ``data.context_scale`` and
    ``data.square_windows``; for proposal boxes, no enlargement when
    ``data.proposals.extended`` says they are windows already."""
    extended = proposals and bool(data_cfg.proposals.extended)
    return {"context_scale": 1.0 if extended else float(data_cfg.context_scale),
            "square": bool(data_cfg.square_windows)}


# ------------------------------------------------------------------------------- the window


def window_affine(box: Sequence[float], out_size: int) -> np.ndarray:
    """The 2 x 3 affine matrix taking image pixel coordinates to output pixel coordinates.

    Pixel i covers [i, i + 1) and has its centre at i + 0.5; the box edge x1 maps to output
    edge 0 and x2 to ``out_size``. So output pixel u samples the image at
    ``x1 + (u + 0.5) * w / out_size - 0.5`` (the same convention as ``roi_align(aligned=True)``).
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1, y2 - y1
    if w <= 0 or h <= 0:
        raise ValueError(f"window box {list(box)} is empty (x2 <= x1 or y2 <= y1)")
    sx, sy = out_size / w, out_size / h
    return np.array(
        [[sx, 0.0, (0.5 - x1) * sx - 0.5], [0.0, sy, (0.5 - y1) * sy - 0.5]], dtype=np.float64
    )


def cut_window(
    image: np.ndarray,
    box: Sequence[float],
    out_size: int,
    label: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Crop ``box`` from ``image`` (H x W x C uint8/float) and, if given, ``label`` (H x W),
    padding outside the image (0 image, 255 label), resized to out_size x out_size."""
    matrix = window_affine(box, out_size)
    dsize = (out_size, out_size)
    channels = image.shape[2] if image.ndim == 3 else 1
    out_image = cv2.warpAffine(
        image, matrix, dsize, flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT, borderValue=(0,) * min(channels, 4),
    )
    if image.ndim == 3 and out_image.ndim == 2:  # OpenCV drops a single channel axis
        out_image = out_image[:, :, None]
    out_label = None if label is None else _warp_nearest(label, matrix, out_size, IGNORE_INDEX)
    return out_image, out_label


def cut_mask(mask: np.ndarray, box: Sequence[float], out_size: int) -> np.ndarray:
    """The window of a boolean H x W mask (nearest, as labels are cut; False outside the image)."""
    return _warp_nearest(mask.view(np.uint8), window_affine(box, out_size), out_size, 0).view(bool)


def _warp_nearest(array: np.ndarray, matrix: np.ndarray, out_size: int, fill: int) -> np.ndarray:
    return cv2.warpAffine(array, matrix, (out_size, out_size), flags=cv2.INTER_NEAREST,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=fill)


# -------------------------------------------------------------- batched version for inference


def crop_boxes_batched(images, boxes, out_size: int):
    """Cut many windows at once on the device: the torch twin of :func:`cut_window`.

    ``images``: tensor B x C x H x W (float; uint8 gives float32 crops). ``boxes``: either a list of B tensors/arrays
    (K_b x 4, boxes of image b) or an N x 5 tensor ``[batch_index, x1, y1, x2, y2]``.
    Returns N x C x out_size x out_size, in the order of the boxes (image by image for a
    list). Outside the image the value is 0, blended bilinearly at the border exactly as
    OpenCV's constant border does: the images are padded with one pixel of zeros and
    ``roi_align`` samples once per output pixel at the same positions as :func:`window_affine`.
    """
    import torch
    import torch.nn.functional as F
    from torchvision.ops import roi_align

    rois = windows_to_rois(boxes, device=images.device, dtype=torch.float32)
    if rois.shape[0] == 0:
        return images.new_zeros((0, images.shape[1], out_size, out_size))
    # float32 throughout: bf16 box coordinates would be off by pixels on 500-px images
    padded = F.pad(images.float(), (1, 1, 1, 1))  # zeros: roi_align clamps to this ring, never the image
    rois[:, 1:] += 1.0
    crops = roi_align(padded, rois, output_size=(out_size, out_size),
                      spatial_scale=1.0, sampling_ratio=1, aligned=True)
    return crops.to(images.dtype) if images.is_floating_point() else crops


def windows_to_rois(boxes, device=None, dtype=None):
    """Boxes per image (list of K_b x 4) or an N x 5 tensor as the N x 5 ``roi_align`` format."""
    import torch

    dtype = dtype or torch.float32
    if isinstance(boxes, torch.Tensor) and boxes.ndim == 2 and boxes.shape[1] == 5:
        return boxes.to(device=device, dtype=dtype, copy=True)
    parts = []
    for index, per_image in enumerate(boxes):
        if not isinstance(per_image, torch.Tensor):
            per_image = torch.from_numpy(np.asarray(per_image, dtype=np.float32))
        b = per_image.to(device=device, dtype=dtype).reshape(-1, 4)
        parts.append(torch.cat([torch.full_like(b[:, :1], float(index)), b], dim=1))
    if not parts:
        return torch.zeros((0, 5), dtype=dtype, device=device)
    return torch.cat(parts, dim=0)
