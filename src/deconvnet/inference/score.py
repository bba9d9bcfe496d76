"""``deconvnet score``: per-class IoU of a folder of label PNGs against ground-truth PNGs.

The PASCAL VOC devkit's semantics (VOCevalseg.m): one confusion matrix accumulated over
every image of the folder (or of a given list of ids, e.g. one split), ground-truth pixels
labelled 255 (void) ignored, IoU per class TP / (TP + FP + FN). Every scored ground-truth
PNG needs a prediction PNG of the same name and size; anything else is an error that names
the file.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from deconvnet.data.classes import IGNORE_INDEX, NUM_CLASSES
from deconvnet.data.imageio import read_index_png
from deconvnet.errors import DataError
from deconvnet.inference.submission import server_subdir
from deconvnet.metrics import iou_percent, results_header, write_results_csv

log = logging.getLogger(__name__)


def _prediction_root(pred_dir: Path) -> Path:
    """``pred_dir`` itself, or its server-layout subfolder when the PNGs live there."""
    if not any(pred_dir.glob("*.png")):
        for competition in ("comp6", "comp5"):
            nested = pred_dir / server_subdir(competition)
            if any(nested.glob("*.png")):
                return nested
    return pred_dir


def confusion_of_pair(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> np.ndarray:
    """num_classes x num_classes counts (rows ground truth) of one image, void skipped."""
    keep = gt != IGNORE_INDEX
    flat = gt[keep].astype(np.int64) * num_classes + pred[keep].astype(np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def score_folders(
    pred_dir: str | Path, gt_dir: str | Path, out_dir: str | Path | None = None,
    num_classes: int = NUM_CLASSES, ids: Sequence[str] | None = None,
) -> dict[str, list[float]]:
    """Score every ``<gt_dir>/<id>.png`` (only the given ``ids`` when there are some) against
    ``<pred_dir>/<id>.png``; write results.csv (one row, method ``score``) into ``out_dir``
    (default: ``pred_dir``) and log it.

    Returns ``{"score": [per-class IoU %, ..., mean]}``.
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    for name, folder in (("--pred", pred_dir), ("--gt", gt_dir)):
        if not folder.is_dir():
            raise DataError(f"{name} folder not found: {folder}")
    if ids is not None:
        gt_files = [gt_dir / f"{image_id}.png" for image_id in ids]
        missing = [path for path in gt_files if not path.is_file()]
        if missing:
            raise DataError(f"no ground truth {missing[0]} for a listed id ({len(missing)} of "
                            f"{len(gt_files)} listed ids have none in {gt_dir})")
    else:
        gt_files = sorted(gt_dir.glob("*.png"))
    if not gt_files:
        raise DataError(f"no ground-truth PNGs in {gt_dir} (expected <id>.png label masks)")
    pred_root = _prediction_root(pred_dir)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    for gt_path in tqdm(gt_files, desc="score", unit="img", leave=False):
        pred_path = pred_root / gt_path.name
        if not pred_path.is_file():
            raise DataError(
                f"missing prediction {pred_path} for ground truth {gt_path}: every ground-truth "
                "image needs a label PNG of the same name"
                + ("" if ids is not None else " (score one split only with --split/--ids)")
            )
        gt = read_index_png(gt_path)
        pred = read_index_png(pred_path)
        if pred.shape != gt.shape:
            raise DataError(
                f"prediction {pred_path} is {pred.shape[1]}x{pred.shape[0]} but its ground truth "
                f"{gt_path} is {gt.shape[1]}x{gt.shape[0]}: predictions must have the image's size"
            )
        bad_gt = (gt >= num_classes) & (gt != IGNORE_INDEX)
        if bad_gt.any():
            raise DataError(f"ground truth {gt_path} holds labels {sorted(set(gt[bad_gt].tolist()))} "
                            f"outside 0..{num_classes - 1} and {IGNORE_INDEX}: --gt must be a folder of "
                            "class masks (VOC's SegmentationClass), not instance masks or colour images")
        bad_pred = pred >= num_classes
        if bad_pred.any():
            raise DataError(f"prediction {pred_path} holds labels {sorted(set(pred[bad_pred].tolist()))} "
                            f"outside 0..{num_classes - 1}")
        confusion += confusion_of_pair(pred, gt, num_classes)
    row = {"score": iou_percent(confusion)}
    target = Path(out_dir) if out_dir is not None else pred_dir
    path = write_results_csv(target / "results.csv", row, num_classes)
    header = results_header(num_classes)
    width = max(len(h) for h in header)
    log.info(f"{len(gt_files)} images scored; per-class IoU (%):")
    for name, value in zip(header[1:], row["score"]):
        log.info(f"  {name:<{width}} {value:5.1f}")
    absent = sum(value != value for value in row["score"][:-1])
    if absent:
        log.info(f"nan: a class in neither the ground truth nor the predictions; the mean is over "
                 f"the other {num_classes - absent} classes")
    log.info(f"written {path}")
    return row
