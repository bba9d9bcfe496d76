"""Segmentation scores from one confusion matrix over a whole split.

The PASCAL VOC devkit's semantics: void pixels (255) are excluded, IoU of a class is
TP / (TP + FP + FN) accumulated over every pixel of the split (never an average of
per-image or per-batch IoUs), and a class that appears in neither the ground truth
nor the predictions has no IoU (NaN) rather than 0, so it does not drag the mean down.

Rows of the confusion matrix are ground truth, columns are predictions.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

import torch

from deconvnet.data.classes import IGNORE_INDEX, class_names


def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """num_classes x num_classes int64 counts; pixels whose target is ignore_index are skipped."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    target = target.reshape(-1).long()
    pred = pred.reshape(-1).long()
    keep = target != ignore_index
    target, pred = target[keep], pred[keep]
    if target.numel() and int(target.max()) >= num_classes:
        bad = sorted(set(target[target >= num_classes].unique().tolist()))
        raise ValueError(f"target holds labels {bad} outside 0..{num_classes - 1} and {ignore_index}")
    flat = target * num_classes + pred.clamp(0, num_classes - 1)
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_iou(confusion: torch.Tensor) -> torch.Tensor:
    """IoU per class in [0, 1]; NaN where the class is absent from ground truth and prediction."""
    confusion = confusion.double()
    tp = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - tp
    iou = tp / union
    return torch.where(union > 0, iou, torch.full_like(iou, float("nan")))


def mean_iou(confusion: torch.Tensor) -> float:
    """Mean IoU over the classes that occur (NaN classes skipped)."""
    return float(torch.nanmean(per_class_iou(confusion)))


def pixel_accuracy(confusion: torch.Tensor) -> float:
    total = confusion.sum()
    return float(confusion.diag().sum().double() / total) if total > 0 else float("nan")


# ----------------------------------------------------------------- Table 1 formatting

# The rows of the paper's Table 1 that one evaluation pass scores, in the paper's order.
METHODS: tuple[str, ...] = ("FCN-8s", "DeconvNet", "DeconvNet+CRF", "EDeconvNet", "EDeconvNet+CRF")


def results_header(num_classes: int = 21) -> list[str]:
    """``method,background,aeroplane,...,tvmonitor,mean``: the results.csv header."""
    return ["method", *class_names(num_classes), "mean"]


def iou_percent(confusion: torch.Tensor) -> list[float]:
    """Per-class IoU in percent followed by the mean (NaN for classes absent from the split)."""
    iou = per_class_iou(torch.as_tensor(confusion))
    return [float(v) * 100 for v in iou] + [mean_iou(torch.as_tensor(confusion)) * 100]


def _fmt(value: float) -> str:
    return "nan" if value != value else f"{value:.1f}"


def write_results_csv(path: str | Path, rows: dict[str, list[float]], num_classes: int = 21):
    """Write ``results.csv`` (header :func:`results_header`, IoU in percent, 1 decimal) atomically.

    ``rows`` maps a method name to its per-class IoU list followed by the mean (see
    :func:`iou_percent`).
    """
    header = results_header(num_classes)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for method, values in rows.items():
        if len(values) != len(header) - 1:
            raise ValueError(f"row {method!r} has {len(values)} values, expected {len(header) - 1}")
        writer.writerow([method, *(_fmt(v) for v in values)])
    return write_text_atomic(path, buffer.getvalue())


def read_results_csv(path: str | Path) -> dict[str, list[float]]:
    """Rows of a results.csv (ours or the paper's) as method -> [per-class IoU..., mean]."""
    with Path(path).open(newline="") as f:
        return _rows_from_csv(f)


def _rows_from_csv(lines: Iterable[str]) -> dict[str, list[float]]:
    reader = csv.reader(lines)
    next(reader)  # header
    return {row[0]: [float(v) for v in row[1:]] for row in reader if row}


def paper_table() -> dict[str, list[float]]:
    """Table 1 of the paper (VOC 2012 test, IoU %), shipped as package data."""
    text = resources.files("deconvnet").joinpath("resources/table1_paper.csv").read_text()
    return _rows_from_csv(io.StringIO(text))


def _class_set(count: int, num_classes: int) -> str:
    return f"{count} of {num_classes}" if count < num_classes else f"all {num_classes}"


def results_markdown(rows: dict[str, list[float]], num_classes: int = 21, title: str = "") -> str:
    """Our rows beside the paper's: for each method the lines ``ours``, ``paper`` and ``diff``.

    Each row ends with the mean and the set of classes it averages. A ``nan`` (a class
    absent from both the ground truth and the predictions) is explained above the table.
    The paper's mean is over all 21 classes; where some of ours are ``nan`` our mean is over
    fewer, so an extra line ``paper, same classes`` gives the paper's mean over exactly our
    classes, and the ``diff`` of the means is taken against that line (like with like).
    The paper's numbers are on the VOC 2012 *test* set; an evaluation on val is only
    comparable in spirit. Methods the paper does not list get no paper/diff lines.
    """
    header = results_header(num_classes)
    paper = paper_table() if num_classes == 21 else {}
    lines = [f"# {title}" if title else "# Per-class IoU (%)", ""]
    lines.append("Paper: Noh et al., ICCV 2015, Table 1 (PASCAL VOC 2012 test). "
                 "diff = ours - paper.")
    lines.append("")
    absent = {method: [name for name, v in zip(header[1:-1], values) if v != v]
              for method, values in rows.items()}
    if any(absent.values()):
        lines.append("`nan`: the class occurs neither in the ground truth nor in the predictions "
                     "of the scored images, so its IoU is undefined (0 / 0); it is left out of "
                     "the mean and of the diff.")
        for method, names in absent.items():
            if names:
                count = num_classes - len(names)
                lines.append(f"- {method}: mean over the {count} classes present "
                             f"(absent: {', '.join(names)}).")
        if paper:
            lines.append("")
            lines.append("The paper's mean is over all 21 classes: the line `paper, same classes` "
                         "gives its mean over the classes of ours, and the diff of the means is "
                         "taken against that line.")
        lines.append("")
    lines.append("| method | | " + " | ".join(header[1:]) + " | mean over |")
    lines.append("|---|---|" + "---:|" * (len(header) - 1) + "---|")
    for method, values in rows.items():
        present = num_classes - len(absent[method])
        lines.append(f"| {method} | ours | " + " | ".join(_fmt(v) for v in values)
                     + f" | {_class_set(present, num_classes)} classes |")
        if method not in paper:
            continue
        ref = paper[method]
        lines.append("| | paper | " + " | ".join(_fmt(v) for v in ref)
                     + f" | {_class_set(num_classes, num_classes)} classes |")
        ref_mean = ref[-1]
        if present < num_classes:  # the paper's mean over exactly the classes we have
            kept = [r for v, r in zip(values[:-1], ref[:-1]) if v == v]
            ref_mean = sum(kept) / len(kept) if kept else float("nan")
            lines.append(f"| | paper, same classes |{' |' * (num_classes)} {_fmt(ref_mean)}"
                         f" | {_class_set(present, num_classes)} classes |")
        diff = [a - b for a, b in zip(values[:-1], ref[:-1])] + [values[-1] - ref_mean]
        lines.append("| | diff | " + " | ".join("nan" if d != d else f"{d:+.1f}" for d in diff)
                     + f" | {_class_set(present, num_classes)} classes |")
    return "\n".join(lines) + "\n"


def write_results_markdown(path: str | Path, rows: dict[str, list[float]], num_classes: int = 21,
                           title: str = ""):
    """Write :func:`results_markdown` to ``path`` atomically."""
    return write_text_atomic(path, results_markdown(rows, num_classes, title))


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path
