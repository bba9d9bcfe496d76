"""What an evaluation writes: predictions, overlays, score caches and the Table 1 report.

The evaluator (a LightningModule) only computes; it hands its per-image results and the
final confusion matrices to :class:`EvalOutputs`, which owns the files (all written
atomically) and the W&B logging:

    <output_dir>/results.csv           one row per method (contract: DESIGN.md)
    <output_dir>/results.md            the same beside the paper's Table 1, with differences
    <output_dir>/iou_chart.png         per-class IoU bars against the paper
    <output_dir>/confusion.npz         the confusion matrix of every method (rows: ground truth)
    <output_dir>/overlays/<id>.png     image, ground truth and each method for a few images
    <output_dir>/predictions/<method>/results/VOC2012/Segmentation/comp6_test_cls/<id>.png
    <output_dir>/<method>.tar.gz       the same, ready for the evaluation server
    <probabilities_dir>/<id>.npz       per-image raw score maps (float16), for CRF-only runs
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from deconvnet.errors import DataError
from deconvnet.inference import submission
from deconvnet.metrics import (
    class_names,
    iou_percent,
    paper_table,
    write_results_csv,
    write_results_markdown,
)
from deconvnet.runtime.atomic import save_atomic

log = logging.getLogger(__name__)


def _save_npz_atomic(path: Path, arrays: dict[str, np.ndarray], compressed: bool = False) -> Path:
    return save_atomic(path, lambda handle: (np.savez_compressed if compressed else np.savez)(handle, **arrays))


class ScoreCache:
    """Per-image raw score maps ``<folder>/<id>.npz`` (float16 C x H x W, one per network:
    ``FCN-8s`` and/or ``DeconvNet``), written by ``eval.save_probabilities=true``.

    Every probability map of the evaluation (both networks and either ensemble) is computed
    from these exactly as from the networks, so ``eval.probabilities_dir`` re-runs or sweeps
    the CRF without them. Raw scores rather than probabilities: float16 keeps their relative
    precision, where near-uniform probabilities would collapse into ties.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def save(self, image_id: str, scores: dict[str, np.ndarray]) -> Path:
        arrays = {m: np.asarray(p, dtype=np.float16) for m, p in scores.items()}
        return _save_npz_atomic(self.folder / f"{image_id}.npz", arrays)

    def networks(self) -> list[str]:
        """The networks whose score maps the cache holds (read from one file)."""
        first = next(iter(sorted(self.folder.glob("*.npz"))), None)
        if first is None:
            raise DataError(
                f"eval.probabilities_dir={self.folder} holds no <id>.npz score maps; write them "
                "first with eval.save_probabilities=true (and the network checkpoints)"
            )
        with np.load(first) as data:
            return list(data.files)

    def load(self, image_id: str) -> dict[str, np.ndarray]:
        path = self.folder / f"{image_id}.npz"
        if not path.is_file():
            raise DataError(
                f"missing score map {path}: the cache in eval.probabilities_dir does not cover "
                "this split; rebuild it with eval.save_probabilities=true on the same split"
            )
        with np.load(path) as data:
            return {m: data[m].astype(np.float32) for m in data.files}


class EvalOutputs:
    """Files and W&B logging of one evaluation run (picklable: it travels to DDP workers)."""

    def __init__(
        self,
        output_dir: str | Path,
        num_classes: int = 21,
        write_predictions: bool = False,
        overlays: int = 4,
        probabilities_dir: str | Path | None = None,
        title: str = "",
    ) -> None:
        self.output_dir = Path(output_dir)
        self.num_classes = num_classes
        self.write_predictions = write_predictions
        self.overlays = overlays
        self.cache = ScoreCache(probabilities_dir) if probabilities_dir else None
        self.title = title

    @property
    def predictions_dir(self) -> Path:
        return self.output_dir / "predictions"

    @property
    def overlays_dir(self) -> Path:
        return self.output_dir / "overlays"

    def wants_labels(self, index: int) -> bool:
        """Whether image ``index`` (position in the split) needs its label maps handed over."""
        return self.write_predictions or index < self.overlays

    def save_scores(self, image_id: str, scores: dict[str, np.ndarray]) -> None:
        if self.cache is not None:
            self.cache.save(image_id, scores)

    def image_done(
        self, image_id: str, index: int, image: np.ndarray, ground_truth: np.ndarray | None,
        labels: dict[str, np.ndarray],
    ) -> None:
        """All methods' labels of one image (CRF included): predictions and overlay."""
        if self.write_predictions:
            for method, lab in labels.items():
                submission.write_prediction(self.predictions_dir, method, image_id, lab)
        if index < self.overlays:
            from deconvnet.viz import overlay_panel, save_rgb_png

            panel = overlay_panel(image, ground_truth, labels, title=image_id)
            save_rgb_png(self.overlays_dir / f"{image_id}.png", panel)

    def finish(self, confusions: dict[str, np.ndarray] | None, logger: Any = None) -> dict[str, list[float]]:
        """Called once, on global rank 0, after every process has finished: the report
        (when the split has labels), the server archives, W&B. Returns method -> IoU row."""
        rows: dict[str, list[float]] = {}
        if self.write_predictions and self.predictions_dir.is_dir():
            for folder in sorted(p for p in self.predictions_dir.iterdir() if p.is_dir()):
                method = folder.name
                archive = submission.make_archive(self.predictions_dir, method, archive_dir=self.output_dir)
                log.info(f"server archive: {archive}")
        if confusions:
            rows = {m: iou_percent(c) for m, c in confusions.items()}
            out = self.output_dir
            _save_npz_atomic(out / "confusion.npz", {m: np.asarray(c) for m, c in confusions.items()})
            write_results_csv(out / "results.csv", rows, self.num_classes)
            write_results_markdown(out / "results.md", rows, self.num_classes, self.title)
            self._chart(rows)
            log.info(format_table(rows, self.num_classes))
            log.info(self._where(logger))
        if logger is not None:
            self._log(rows, logger)
        return rows

    def _where(self, logger: Any) -> str:
        """The lines that tell the user where each output is."""
        out = self.output_dir
        lines = [f"outputs in {out}:",
                 "  results.csv, results.md  per-class IoU (results.md beside the paper's Table 1)",
                 "  iou_chart.png            per-class IoU of each method against the paper"]
        if self.overlays and self.overlays_dir.is_dir():
            lines.append(f"  {self.overlays_dir.name}/{' ' * (23 - len(self.overlays_dir.name))}"
                         "image, ground truth and each method's labels")
        run_dir = getattr(getattr(logger, "experiment", None), "dir", None) if logger is not None else None
        if run_dir:
            run = Path(run_dir).parent
            offline = run.name.startswith("offline-")
            lines.append(f"  W&B run                  {run}" + (f"  (upload: wandb sync {run})" if offline else ""))
        return "\n".join(lines)

    def _chart(self, rows: dict[str, list[float]]) -> Path:
        from deconvnet.viz import iou_chart, save_figure

        paper = paper_table() if self.num_classes == 21 else {}
        fig = iou_chart(rows, class_names(self.num_classes), paper)
        return save_figure(fig, self.output_dir / "iou_chart.png")

    def _log(self, rows: dict[str, list[float]], logger: Any) -> None:
        """Per-class table, mean IoUs, the chart and the overlays to W&B (or any logger's metrics)."""
        if rows:
            logger.log_metrics({f"eval/{m}/mIoU": v[-1] for m, v in rows.items()})
        if not hasattr(logger, "log_table"):  # not W&B: metrics only
            return
        if rows:
            columns = ["method", *class_names(self.num_classes), "mean"]
            data = [[m, *v] for m, v in rows.items()]
            paper = paper_table() if self.num_classes == 21 else {}
            data += [[f"paper: {m}", *paper[m]] for m in rows if m in paper]
            logger.log_table(key="eval/per_class_iou", columns=columns, data=data)
            chart = self.output_dir / "iou_chart.png"
            if chart.is_file():
                logger.log_image(key="eval/iou_chart", images=[str(chart)])
        overlays = sorted(self.overlays_dir.glob("*.png")) if self.overlays_dir.is_dir() else []
        if overlays:
            logger.log_image(key="eval/overlays", images=[str(p) for p in overlays],
                             caption=[p.stem for p in overlays])


def format_table(rows: dict[str, list[float]], num_classes: int = 21) -> str:
    """A plain-text per-class IoU table (methods as columns) for the terminal."""
    names = [*class_names(num_classes), "mean"]
    methods = list(rows)
    width = max(len(n) for n in names)
    cols = [max(len(m), 5) for m in methods]
    lines = ["per-class IoU (%)", " " * width + "  " + "  ".join(m.rjust(c) for m, c in zip(methods, cols))]
    for i, name in enumerate(names):
        values = "  ".join(f"{rows[m][i]:{c}.1f}" for m, c in zip(methods, cols))
        lines.append(f"{name:<{width}}  {values}")
    return "\n".join(lines)
