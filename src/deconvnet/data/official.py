"""The official release's training windows as a data source (``data.source=official``).

The release trains on lists read by its Caffe fork's data layers (HyeonwooNoh/caffe):

- stage 1, ``IMAGE_SEG_DATA``: ``imagesets/stage_1_train_imgset/{train,val}.txt``, one
  ``<image> <label>`` pair per line; the images of VOC_OBJECT are already the object-centred
  crops (the label keeps only that object's class), resized whole to 250 x 250;
- stage 2, ``WINDOW_SEG_DATA``: ``imagesets/stage_2_train_imgset/{train,val}.txt``, one
  ``<image> <label> x1 y1 x2 y2`` per line: a window of a VOC2012_SEG_AUG image in 0-based
  inclusive pixels, padded with 0 (image) / 255 (label) where it leaves the image, cropped
  and resized to 250 x 250.

Paths are appended to the data layer's ``root_folder`` (``./VOC2012``): here
``<data.official_root>/VOC2012`` (a leading ``/`` in the list is allowed). Labels are read as
PNG indices (palette or grey). Training items then get our augmentation (random 224 crop +
flip, :mod:`deconvnet.data.transforms`, as the release's ``crop_size: 224, mirror: true``);
validation items are resized straight to the crop size, as our own validation windows.

``windows_report(cfg)`` (``deconvnet windows-report``) prints our windows of the stage
``data.kind`` beside the release's: examples per class, window sizes and aspect ratios.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from deconvnet.data.classes import IGNORE_INDEX, NUM_CLASSES, VOC_CLASSES
from deconvnet.data.datasets import check_window_size
from deconvnet.data.imageio import image_size, read_index_png, read_rgb
from deconvnet.data.transforms import RandomCropFlip, to_tensors
from deconvnet.data.windows import cut_window
from deconvnet.errors import DataError, UserError

log = logging.getLogger(__name__)

SOURCES = ("voc", "official")
LISTS = {"stage1": "imagesets/stage_1_train_imgset", "stage2": "imagesets/stage_2_train_imgset"}
IMAGE_FOLDER = "VOC2012"  # the data layers' root_folder


@dataclass(frozen=True)
class OfficialList:
    """One list file: image and label paths, and (stage 2) windows as 0-based exclusive boxes."""

    path: Path
    image_root: Path
    images: list[str]
    labels: list[str]
    windows: np.ndarray | None  # float32 N x 4 [x1, y1, x2, y2] (x2/y2 exclusive), stage 2 only

    def __len__(self) -> int:
        return len(self.images)

    def image_path(self, k: int) -> Path:
        return self.image_root / self.images[k].lstrip("/")

    def label_path(self, k: int) -> Path:
        return self.image_root / self.labels[k].lstrip("/")


def read_list(path: str | Path, image_root: str | Path, windows: bool) -> OfficialList:
    """Parse an IMAGE_SEG_DATA (``windows=False``) or WINDOW_SEG_DATA list; DataError naming the
    file and line on anything else."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"official training list not found: {path}. Get it with `deconvnet download "
                        "official-training --root <data.official_root>` or set data.source=voc")
    images, labels, boxes = [], [], []
    fields = 6 if windows else 2
    with open(path) as f:
        for number, line in enumerate(f, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != fields:
                raise DataError(f"{path}, line {number}: expected {fields} fields "
                                f"({'image label x1 y1 x2 y2' if windows else 'image label'}), found {len(parts)}")
            images.append(parts[0])
            labels.append(parts[1])
            if windows:
                try:
                    x1, y1, x2, y2 = (int(v) for v in parts[2:])
                except ValueError:
                    raise DataError(f"{path}, line {number}: window coordinates must be integers") from None
                if x2 < x1 or y2 < y1:
                    raise DataError(f"{path}, line {number}: empty window {x1} {y1} {x2} {y2}")
                boxes.append((x1, y1, x2 + 1, y2 + 1))  # inclusive -> exclusive
    if not images:
        raise DataError(f"{path} lists no examples")
    table = np.asarray(boxes, np.float32).reshape(-1, 4) if windows else None
    return OfficialList(path, Path(image_root), images, labels, table)


class OfficialWindowDataset(Dataset):
    """Items ``{"image": uint8 3 x s x s, "label": int64 s x s}`` of a release list."""

    def __init__(self, listing: OfficialList, train: bool = True, window_size: int = 250,
                 crop_size: int = 224) -> None:
        check_window_size(window_size, crop_size)
        self.listing, self.train = listing, train
        self.window_size, self.crop_size = int(window_size), int(crop_size)
        self.augment = RandomCropFlip(self.crop_size) if train else None

    def __len__(self) -> int:
        return len(self.listing)

    def example(self, k: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Example ``k`` resized to size x size (stage 1: the whole crop; stage 2: the window)."""
        image = read_rgb(self.listing.image_path(k))
        label = read_index_png(self.listing.label_path(k))
        if label.shape != image.shape[:2]:
            raise DataError(f"{self.listing.label_path(k)} is {label.shape[1]}x{label.shape[0]} but its "
                            f"image {self.listing.image_path(k)} is {image.shape[1]}x{image.shape[0]}")
        if self.listing.windows is not None:
            return cut_window(image, self.listing.windows[k], size, label)
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
        label = cv2.resize(label, (size, size), interpolation=cv2.INTER_NEAREST)
        return image, label

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        image, label = self.example(k, self.window_size if self.train else self.crop_size)
        if self.augment is not None:
            image, label = self.augment(image, label)
        image_t, label_t = to_tensors(image, label)
        return {"image": image_t, "label": label_t}

    def describe(self) -> str:
        return f"{len(self)} official windows from {self.listing.path}"


def data_source(cfg) -> str:
    """cfg.data.source, checked: voc (windows built from the annotations) | official."""
    source = str(cfg.data.get("source", "voc"))
    if source not in SOURCES:
        raise UserError(f"data.source='{source}' is unknown; choose one of {', '.join(SOURCES)}")
    return source


def official_list(cfg, stage: str, split: str) -> OfficialList:
    """The release's ``split`` (train | val) list of ``stage`` (stage1 | stage2) under data.official_root."""
    if stage not in LISTS:
        raise UserError(f"data.source=official serves stage1 and stage2 windows, not data.kind={stage}")
    root = Path(cfg.data.official_root)
    return read_list(root / LISTS[stage] / f"{split}.txt", root / IMAGE_FOLDER, windows=stage == "stage2")


def official_datasets(cfg) -> tuple[OfficialWindowDataset, OfficialWindowDataset]:
    """(training, validation) datasets of the release's lists for cfg.data.kind."""
    data = cfg.data
    stage = str(data.kind)
    train = OfficialWindowDataset(official_list(cfg, stage, "train"), True, data.window_size, data.crop_size)
    val = OfficialWindowDataset(official_list(cfg, stage, "val"), False, data.window_size, data.crop_size)
    log.info("data.source=official: %s; validation %s", train.describe(), val.describe())
    return train, val


# ------------------------------------------------------------------------------ the report


@dataclass
class WindowStats:
    """Per-example class (most frequent object class, 0 if none) and window width/height."""

    name: str
    class_id: np.ndarray
    widths: np.ndarray
    heights: np.ndarray


def label_class(label: np.ndarray) -> int:
    counts = np.bincount(label[(label != IGNORE_INDEX) & (label > 0)].reshape(-1), minlength=NUM_CLASSES)
    return int(counts.argmax()) if counts.any() else 0


def official_stats(listing: OfficialList, limit: int | None = None) -> WindowStats:
    """Classes (labels decoded; the window's part for stage 2) and window sizes of a list."""
    rows = np.arange(len(listing))
    if limit is not None and limit < len(rows):
        rows = np.linspace(0, len(rows) - 1, limit).round().astype(int)  # evenly over the list
    classes, widths, heights = [], [], []
    for k in tqdm(rows, desc=f"reading {listing.path.name}", unit="ex", disable=len(rows) < 500):
        label = read_index_png(listing.label_path(k))
        if listing.windows is not None:
            x1, y1, x2, y2 = listing.windows[k]
            _, label = cut_window(np.zeros((*label.shape, 1), np.uint8), listing.windows[k], 64, label)
            widths.append(x2 - x1)
            heights.append(y2 - y1)
        else:
            width, height = image_size(listing.image_path(k))
            widths.append(width)
            heights.append(height)
        classes.append(label_class(label))
    return WindowStats(f"official ({listing.path.parent.name}/{listing.path.name})",
                       np.asarray(classes, np.int64), np.asarray(widths, np.float64), np.asarray(heights, np.float64))


def table_stats(name: str, table) -> WindowStats:
    """Stats of our ExampleTable (window boxes in image coordinates, class per example)."""
    boxes = np.asarray(table.boxes, np.float64)
    return WindowStats(name, np.asarray(table.class_id, np.int64), boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])


def _quantiles(values: np.ndarray) -> list[str]:
    if len(values) == 0:
        return ["-"] * 7
    return [f"{v:.2f}" if v < 10 else f"{v:.0f}" for v in np.quantile(values, [0, .1, .25, .5, .75, .9, 1])]


def format_report(left: WindowStats, right: WindowStats) -> str:
    """Examples per class, window side sqrt(w h) and aspect ratio w / h, side by side."""
    width = max(24, len(left.name) + 2, len(right.name) + 2)
    lines = [f"{'':14s}{left.name:>{width}s}{right.name:>{width}s}"]
    lines.append("examples per class")
    lc, rc = (np.bincount(s.class_id, minlength=NUM_CLASSES) for s in (left, right))
    for c, name in enumerate(VOC_CLASSES):
        lp = f"{lc[c]} ({100 * lc[c] / max(lc.sum(), 1):.1f}%)"
        rp = f"{rc[c]} ({100 * rc[c] / max(rc.sum(), 1):.1f}%)"
        lines.append(f"  {name:12s}{lp:>{width}s}{rp:>{width}s}")
    lines.append(f"  {'total':12s}{int(lc.sum()):>{width}d}{int(rc.sum()):>{width}d}")
    labels = ("min", "10%", "25%", "median", "75%", "90%", "max")
    for title, fn in (("window side sqrt(w*h), px of the original image", lambda s: np.sqrt(s.widths * s.heights)),
                      ("aspect ratio w/h", lambda s: s.widths / np.maximum(s.heights, 1e-9))):
        lines.append(title)
        for label, a, b in zip(labels, _quantiles(fn(left)), _quantiles(fn(right))):
            lines.append(f"  {label:12s}{a:>{width}s}{b:>{width}s}")
    square = [float(np.mean(np.isclose(s.widths, s.heights, atol=1))) if len(s.widths) else 0.0 for s in (left, right)]
    lines.append(f"  {'square':12s}{100 * square[0]:>{width - 1}.1f}%{100 * square[1]:>{width - 1}.1f}%")
    return "\n".join(lines)


def windows_report(cfg, limit: int | None = None) -> str:
    """``deconvnet windows-report``: our training windows of data.kind (built from data.root,
    source voc) beside the release's list for the same stage."""
    from omegaconf import OmegaConf

    from deconvnet.data.datamodules import build_datamodule

    stage = str(cfg.data.kind)
    ours_cfg = OmegaConf.merge(cfg, {"data": {"source": "voc"}})
    module = build_datamodule(ours_cfg)
    module.prepare_data()
    module.setup("fit")
    table = getattr(module.train_set, "table", None)
    if table is None:
        raise UserError(f"data.kind={stage}: our training set has no window table to report on")
    ours = table_stats(f"ours ({cfg.data.train_split})", table)
    theirs = official_stats(official_list(cfg, stage, "train"), limit)
    note = f" (an even sample of {limit})" if limit is not None else ""
    return f"{stage} training windows: ours vs the release's{note}\n" + format_report(ours, theirs)
