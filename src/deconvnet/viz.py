"""Pictures of results: VOC-coloured label masks, overlays and the per-class IoU chart.

Figures are drawn with matplotlib's Agg canvas directly (no pyplot, no global backend),
so this works in headless workers and never opens a window.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from PIL import Image

from deconvnet.data.classes import IGNORE_INDEX, VOC_CLASSES, palette_array


def colorize(labels: np.ndarray) -> np.ndarray:
    """H x W labels (0..20, 255 void) -> H x W x 3 uint8 in the VOC colours."""
    return palette_array()[np.asarray(labels, dtype=np.uint8)]


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The label colours blended over the RGB image (background pixels stay the image)."""
    colours = colorize(labels).astype(np.float32)
    blended = image.astype(np.float32) * (1 - alpha) + colours * alpha
    keep = np.asarray(labels) == 0
    blended[keep] = image[keep]
    return blended.round().clip(0, 255).astype(np.uint8)


def _figure_to_array(fig: Figure) -> np.ndarray:
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def legend_entries(*label_maps: np.ndarray | None) -> list[tuple[str, tuple[int, int, int]]]:
    """(name, RGB colour) of every label that occurs in any of the maps, in label order.

    Classes get their VOC names (``class<i>`` beyond the 21 VOC classes); void (255) is
    listed last as ``void`` when a map holds it.
    """
    present = sorted(set().union(*(np.unique(m).tolist() for m in label_maps if m is not None)))
    colours = palette_array()
    entries = []
    for label in present:
        if label == IGNORE_INDEX:
            continue
        name = VOC_CLASSES[label] if label < len(VOC_CLASSES) else f"class{label}"
        entries.append((name, tuple(int(c) for c in colours[label])))
    if IGNORE_INDEX in present:
        entries.append(("void", tuple(int(c) for c in colours[IGNORE_INDEX])))
    return entries


# Legend geometry, in inches: one row of swatches and one column of names.
_LEGEND_ROW = 0.17
_LEGEND_COLUMN = 1.05


def overlay_figure(
    image: np.ndarray, ground_truth: np.ndarray | None, predictions: dict[str, np.ndarray],
    title: str = "",
) -> Figure:
    """One row: the image, the ground truth (if any) and each method's labels over the image,
    above a legend of the classes present in the ground truth or any prediction."""
    panels = [("image", image)]
    if ground_truth is not None:
        panels.append(("ground truth", colorize(ground_truth)))
    panels += [(name, overlay(image, labels)) for name, labels in predictions.items()]
    entries = legend_entries(ground_truth, *predictions.values())
    height, width = image.shape[:2]
    scale = 2.2 / max(height, width)
    fig_width = len(panels) * width * scale + 0.2
    columns = max(1, min(len(entries), int(fig_width // _LEGEND_COLUMN)))
    legend_height = (math.ceil(len(entries) / columns) * _LEGEND_ROW + 0.1) if entries else 0.0
    fig_height = height * scale + 0.5 + legend_height
    fig = Figure(figsize=(fig_width, fig_height), dpi=100)
    for i, (name, picture) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        ax.imshow(picture)
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    if entries:
        handles = [Patch(facecolor=np.array(rgb) / 255, edgecolor="0.5", linewidth=0.5, label=name)
                   for name, rgb in entries]
        fig.legend(handles=handles, loc="lower center", ncol=columns, fontsize=7, frameon=False,
                   handlelength=1.2, handleheight=1.0, columnspacing=0.8, borderaxespad=0.1)
    fig.tight_layout(rect=(0, legend_height / fig_height, 1, 1))
    return fig


def overlay_panel(
    image: np.ndarray, ground_truth: np.ndarray | None, predictions: dict[str, np.ndarray],
    title: str = "",
) -> np.ndarray:
    """:func:`overlay_figure` rendered as an H x W x 3 uint8 array."""
    return _figure_to_array(overlay_figure(image, ground_truth, predictions, title))


def save_rgb_png(path: str | Path, rgb: np.ndarray) -> Path:
    """Write an H x W x 3 uint8 array as PNG, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


def iou_chart(
    rows: dict[str, list[float]], class_names: list[str],
    paper: dict[str, list[float]] | None = None,
) -> Figure:
    """Per-class IoU bars (one panel per method), ours beside the paper's where it has the row.

    ``rows`` and ``paper`` map a method to its per-class IoU in percent followed by the mean.
    """
    paper = paper or {}
    labels = [*class_names, "mean"]
    x = np.arange(len(labels))
    fig = Figure(figsize=(12, 2.4 * max(1, len(rows)) + 0.4), dpi=100)
    for i, (method, values) in enumerate(rows.items()):
        ax = fig.add_subplot(len(rows), 1, i + 1)
        ref = paper.get(method)
        width = 0.4 if ref is not None else 0.8
        ax.bar(x - (width / 2 if ref is not None else 0), np.nan_to_num(values), width, label="ours", color="tab:blue")
        if ref is not None:
            ax.bar(x + width / 2, ref, width, label="paper (VOC12 test)", color="tab:gray")
        ax.set_ylim(0, 100)
        ax.set_ylabel("IoU %")
        ax.set_title(f"{method}: mean IoU {values[-1]:.1f}"
                     + (f" (paper {ref[-1]:.1f})" if ref is not None else ""), fontsize=9)
        ax.set_xticks(x)
        ax.set_xticklabels(labels if i == len(rows) - 1 else [], rotation=60, fontsize=7)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Save a figure as PNG, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    FigureCanvasAgg(fig)
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)
    return path
