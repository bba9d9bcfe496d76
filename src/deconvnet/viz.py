"""Pictures of results: VOC-coloured label masks, overlays and the per-class IoU chart.

Figures are drawn with matplotlib's Agg canvas directly (no pyplot, no global backend),
so this works in headless workers and never opens a window.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from deconvnet.data.classes import palette_array


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


def overlay_panel(
    image: np.ndarray, ground_truth: np.ndarray | None, predictions: dict[str, np.ndarray],
    title: str = "",
) -> np.ndarray:
    """One row: the image, the ground truth (if any) and each method's labels over the image."""
    panels = [("image", image)]
    if ground_truth is not None:
        panels.append(("ground truth", colorize(ground_truth)))
    panels += [(name, overlay(image, labels)) for name, labels in predictions.items()]
    height, width = image.shape[:2]
    scale = 2.2 / max(height, width)
    fig = Figure(figsize=(len(panels) * width * scale + 0.2, height * scale + 0.5), dpi=100)
    for i, (name, picture) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        ax.imshow(picture)
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _figure_to_array(fig)


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
