"""Paste-back on the CPU: one compiled pass per window instead of ``grid_sample``.

The same operation as :func:`deconvnet.inference.instance.paste_windows` (each window's
scores resized bilinearly onto the image pixels whose centres lie in its box, border
padding, merged by max or sum), written as a fused loop compiled by numba. Bilinear
resizing is separable, so each window is first resized along x for the source rows it
needs (cheap: the network's output has few rows), then every output row is one linear
blend of two of those rows, merged into the frame in the same pass. ``grid_sample`` on a
CPU computes four weights and four gathers per output value and writes a buffer that a
second pass merges; here each value costs one multiply-add and one merge, in vector
instructions. ``benchmarks/inference.py`` measures the two against each other.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from numba import njit


def _axis_samples(start, stop, source_size, frame_size):
    """Along one axis: the first frame pixel whose centre (p + 0.5) lies in [start, stop),
    how many do (clipped to the frame), and for each the two source samples and the weight
    of the second (align_corners=False geometry; border padding clamps the coordinate)."""
    first = max(0, math.ceil(start - 0.5))
    count = max(0, min(frame_size, math.ceil(stop - 0.5)) - first)
    low = np.empty(count, np.int64)
    high = np.empty(count, np.int64)
    weight = np.empty(count, np.float32)
    if count == 0:
        return first, count, low, high, weight
    scale = source_size / (stop - start)
    for j in range(count):
        source = min(max((first + j + 0.5 - start) * scale - 0.5, 0.0), source_size - 1.0)
        low[j] = int(math.floor(source))
        high[j] = min(low[j] + 1, source_size - 1)
        weight[j] = source - low[j]
    return first, count, low, high, weight


def _paste(scores, windows, total, take_max, first_class, stop_class):
    """Paste classes [first_class, stop_class) of every window into ``total`` (C x H x W)."""
    num_windows, _, rows, cols = scores.shape
    height, width = total.shape[1], total.shape[2]
    resized_x = np.empty((rows, width), np.float32)
    # class by class, so that the frame plane being written (H x W floats) stays in cache
    for c in range(first_class, stop_class):
        for k in range(num_windows):
            x0, nx, x_low, x_high, x_weight = _axis_samples_compiled(windows[k, 0], windows[k, 2], cols, width)
            y0, ny, y_low, y_high, y_weight = _axis_samples_compiled(windows[k, 1], windows[k, 3], rows, height)
            if nx == 0 or ny == 0:
                continue
            source = scores[k, c]
            for r in range(y_low[0], y_high[ny - 1] + 1):  # the source rows the region reads
                for j in range(nx):
                    left = source[r, x_low[j]]
                    resized_x[r, j] = left + x_weight[j] * (source[r, x_high[j]] - left)
            for i in range(ny):
                upper, lower, b = resized_x[y_low[i]], resized_x[y_high[i]], y_weight[i]
                out = total[c, y0 + i, x0:x0 + nx]  # a slice of its own: the loops below vectorise
                if take_max:
                    for j in range(nx):
                        value = upper[j] + b * (lower[j] - upper[j])
                        # max written as a clamped increment: a plain `max` compiles to a masked
                        # store, about 5x slower; exact when value <= out, and within one float32
                        # rounding of value otherwise
                        out[j] += max(value - out[j], np.float32(0.0))
                else:
                    for j in range(nx):
                        out[j] += upper[j] + b * (lower[j] - upper[j])


# compiled by a call, not a decorator: mutmut (tools/mutation.py) mutates only undecorated
# functions, and runs them as Python there (NUMBA_DISABLE_JIT=1)
_axis_samples_compiled = njit(cache=True, nogil=True)(_axis_samples)
_paste_compiled = njit(cache=True, nogil=True, fastmath=True)(_paste)


def paste_windows_cpu(
    scores: torch.Tensor, windows: torch.Tensor, height: int, width: int, aggregation: str,
    threads: int | None = None,
) -> torch.Tensor:
    """C x height x width frame of K x C x h x w window scores pasted onto their boxes
    (``windows``: K x 4, [x1, y1, x2, y2], x2/y2 exclusive) and merged by ``aggregation``
    (``"max"`` or ``"sum"``); pixels no box covers keep 0. CPU tensors only.

    The classes are split over ``threads`` threads (default: torch's intra-op thread count,
    as ``grid_sample`` would use): each writes its own class planes, and the compiled loop
    releases the GIL."""
    values = scores.detach().to(torch.float32).contiguous().numpy()
    boxes = windows.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()
    num_classes = values.shape[1]
    total = np.zeros((num_classes, height, width), np.float32)
    take_max = aggregation == "max"
    parts = max(1, min(threads or torch.get_num_threads(), num_classes))
    bounds = np.linspace(0, num_classes, parts + 1).round().astype(int).tolist()
    if parts == 1:
        _paste_compiled(values, boxes, total, take_max, 0, num_classes)
    else:
        with ThreadPoolExecutor(parts) as pool:
            for done in [pool.submit(_paste_compiled, values, boxes, total, take_max, first, stop)
                         for first, stop in zip(bounds[:-1], bounds[1:])]:
                done.result()  # re-raises a thread's error here
    return torch.from_numpy(total)
