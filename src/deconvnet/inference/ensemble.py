"""EnsembleEvaluator: every row of Table 1 from one pass over a split, through Lightning.

For each image (a batch of one from ``WholeImageDataModule.eval_dataloader``):

1. the raw score maps come from the networks (:class:`EnsemblePredictor`: FCN-8s on the
   image, DeconvNet over the proposal windows) or from a score cache written by an earlier
   run (``eval.save_probabilities``); they give the probability maps of FCN-8s, DeconvNet
   and EDeconvNet (mean or product ensemble);
2. their argmax labels update one confusion matrix per method, on the device;
3. DeconvNet and EDeconvNet maps are sent to the CRF pool (worker processes), which runs
   while the device computes the next images; finished CRF labels update the
   ``+CRF`` rows in order, and at most ``max_pending`` jobs are in flight.

Run it with ``trainer.test``: ``trainer.devices=N`` spreads the images over N processes
(the loader's sampler gives each image to exactly one, with no padding, so set
``use_distributed_sampler=False``) and the confusion matrices are summed across processes
at the end, so every pixel is counted exactly once. Nothing is kept per image beyond the
in-flight CRF jobs, so memory does not grow with the split.
"""

from __future__ import annotations

from dataclasses import dataclass

import lightning as L
import numpy as np
import torch

from deconvnet.inference.crf import CRFParams, CRFPool
from deconvnet.inference.outputs import EvalOutputs, ScoreCache
from deconvnet.inference.predictor import EnsemblePredictor, base_methods, probabilities_from_scores
from deconvnet.metrics import METHODS, confusion_matrix

CRF_INPUTS = ("DeconvNet", "EDeconvNet")  # the maps Table 1 refines with the CRF


@dataclass
class _CRFJob:
    """What comes back with a CRF result: where to count it and what to do with it."""

    image_id: str
    index: int
    method: str  # the +CRF row
    ground_truth: np.ndarray | None  # uint8 H x W (void 255), None when unlabelled


@dataclass
class _ImageRecord:
    """Labels of one image kept until its CRF results arrive (only for overlays/predictions)."""

    image: np.ndarray
    ground_truth: np.ndarray | None
    labels: dict[str, np.ndarray]
    waiting: int


class EnsembleEvaluator(L.LightningModule):
    """Scores FCN-8s, DeconvNet, DeconvNet+CRF, EDeconvNet, EDeconvNet+CRF (those whose
    networks are present) over a split; see the module docstring."""

    def __init__(
        self,
        predictor: EnsemblePredictor | None,
        num_classes: int,
        proposals: dict[str, np.ndarray] | None = None,
        crf: CRFParams | None = None,
        crf_workers: int = 0,
        outputs: EvalOutputs | None = None,
        cache: ScoreCache | None = None,
        has_labels: bool = True,
        ensemble: str | None = None,
    ) -> None:
        super().__init__()
        if (predictor is None) == (cache is None):
            raise ValueError("EnsembleEvaluator needs either a predictor (networks) or a score cache")
        self.predictor = predictor
        self.cache = cache
        self.num_classes = num_classes
        self.proposals = proposals or {}
        self.crf = crf
        self.crf_workers = crf_workers
        self.outputs = outputs
        self.has_labels = has_labels
        # the ensemble rule: the predictor's, unless given (a cache has none of its own)
        self.ensemble = ensemble or (predictor.ensemble if predictor is not None else "mean")
        self.base_methods = base_methods(predictor.networks if predictor is not None else cache.networks())
        crf_rows = [f"{m}+CRF" for m in self.base_methods if m in CRF_INPUTS] if crf else []
        self.methods = [m for m in METHODS if m in self.base_methods or m in crf_rows]
        self.register_buffer(
            "confusion", torch.zeros(len(self.methods), num_classes, num_classes, dtype=torch.int64),
            persistent=False,
        )
        self.results: dict[str, np.ndarray] = {}  # filled at the end of the pass (every process)
        self.rows: dict[str, list[float]] = {}  # IoU rows, on global rank 0
        self._pool: CRFPool | None = None
        self._records: dict[str, _ImageRecord] = {}

    # ------------------------------------------------------------------ lifecycle

    def on_test_epoch_start(self) -> None:
        self.confusion.zero_()
        self._records.clear()
        if self.crf is not None and self._pool is None:
            workers = self.crf_workers
            if workers <= 0:
                from deconvnet.inference.crf import default_workers

                workers = default_workers(processes_per_node=max(1, self.trainer.num_devices))
            self._pool = CRFPool(self.crf, workers)

    def on_test_epoch_end(self) -> None:
        if self._pool is not None:
            self._collect(self._pool.drain())
            self._pool.close()
            self._pool = None
        total = self.trainer.strategy.reduce(self.confusion.clone(), reduce_op="sum")
        self.results = {m: total[i].cpu().numpy() for i, m in enumerate(self.methods)}
        if self.trainer.is_global_zero and self.outputs is not None:
            self.rows = self.outputs.finish(self.results if self.has_labels else None, self.logger)
        self.trainer.strategy.barrier()

    def teardown(self, stage: str) -> None:
        if self._pool is not None:  # an interrupted pass: stop the workers
            self._pool.close()
            self._pool = None

    # ------------------------------------------------------------------ one image

    def probabilities(self, image: torch.Tensor, image_id: str) -> dict[str, torch.Tensor]:
        """Base-method probability maps (C x H x W, on the device) of one image."""
        if self.predictor is not None:
            scores = self.predictor.scores(image, self.proposals.get(image_id))
            if self.outputs is not None and self.outputs.cache is not None:
                self.outputs.save_scores(image_id, {m: s.cpu().numpy() for m, s in scores.items()})
        else:
            scores = {m: torch.from_numpy(s).to(image.device) for m, s in self.cache.load(image_id).items()}
        return probabilities_from_scores(scores, self.ensemble)

    def _count(self, method: str, pred: torch.Tensor, target: torch.Tensor) -> None:
        if not self.has_labels:
            return
        i = self.methods.index(method)
        if torch.are_deterministic_algorithms_enabled() and pred.is_cuda:
            pred, target = pred.cpu(), target.cpu()  # bincount has no deterministic CUDA kernel
        self.confusion[i] += confusion_matrix(pred, target, self.num_classes).to(self.confusion.device)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        image, image_id, index = batch["image"], batch["id"][0], int(batch["index"][0])
        target = batch["label"][0]
        probs = self.probabilities(image, image_id)
        keep_labels = self.outputs is not None and self.outputs.wants_labels(index)
        need_pixels = self._pool is not None or keep_labels  # on the host: for the CRF, the files
        rgb = image[0].permute(1, 2, 0).cpu().numpy() if need_pixels else None
        gt = target.to(torch.uint8).cpu().numpy() if need_pixels and self.has_labels else None

        labels: dict[str, np.ndarray] = {}
        for method, prob in probs.items():
            pred = prob.argmax(0)
            self._count(method, pred, target)
            if keep_labels:
                labels[method] = pred.to(torch.uint8).cpu().numpy()
        crf_jobs = [m for m in probs if m in CRF_INPUTS] if self._pool is not None else []
        if keep_labels:
            self._records[image_id] = _ImageRecord(rgb, gt, labels, waiting=len(crf_jobs))
        for method in crf_jobs:
            job = _CRFJob(image_id, index, f"{method}+CRF", gt)
            self._pool.submit(job, rgb, probs[method].cpu().numpy())
        if self._pool is not None:
            self._collect(self._pool.ready())
        if keep_labels and not crf_jobs:
            self._finish_image(image_id, index)

    def _collect(self, finished: list[tuple[_CRFJob, np.ndarray]]) -> None:
        """Count finished CRF results (in submission order) and complete their images."""
        for job, crf_labels in finished:
            if job.ground_truth is not None:
                self._count(job.method, torch.from_numpy(crf_labels).long(),
                            torch.from_numpy(job.ground_truth).long())
            record = self._records.get(job.image_id)
            if record is not None:
                record.labels[job.method] = crf_labels
                record.waiting -= 1
                if record.waiting == 0:
                    self._finish_image(job.image_id, job.index)

    def _finish_image(self, image_id: str, index: int) -> None:
        record = self._records.pop(image_id)
        ordered = {m: record.labels[m] for m in self.methods if m in record.labels}
        self.outputs.image_done(image_id, index, record.image, record.ground_truth, ordered)

    # Lightning needs these to exist for trainer.test; there is nothing to train.
    def configure_optimizers(self) -> None:
        return None
