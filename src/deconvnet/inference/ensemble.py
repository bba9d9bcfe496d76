"""EnsembleEvaluator: every row of Table 1 from one pass over a split, through Lightning.

For each image (a batch of one from ``WholeImageDataModule.eval_dataloader``):

1. the raw score maps come from the networks (:class:`EnsemblePredictor`: FCN-8s on the
   image, DeconvNet over the proposal windows) or from a score cache written by an earlier
   run (``eval.save_probabilities``); they give the probability maps of FCN-8s, DeconvNet
   and EDeconvNet (mean or product ensemble);
2. their argmax labels update one confusion matrix per method, on the device;
3. DeconvNet and EDeconvNet maps go to the CRF stage (:class:`CRFStage`, worker
   processes), which runs while the device computes the next images; finished images
   come back in order, their CRF labels update the ``+CRF`` rows, and at most the pool's
   ``max_pending`` jobs are in flight.

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

from deconvnet.inference.crf import CRFParams
from deconvnet.inference.crf_stage import CRF_INPUTS, CRFStage
from deconvnet.inference.outputs import EvalOutputs, ScoreCache
from deconvnet.inference.predictor import EnsemblePredictor, base_methods, probabilities_from_scores
from deconvnet.metrics import METHODS, confusion_matrix

__all__ = ["CRF_INPUTS", "EnsembleEvaluator"]

ROWS_KEY = "eval_rows"  # trainer.callback_metrics key prefix of the IoU rows


@dataclass
class _Image:
    """What comes back with an image's finished labels: where to count them, what to write."""

    image_id: str
    index: int
    ground_truth: np.ndarray | None  # uint8 H x W (void 255), None when unlabelled
    rgb: np.ndarray | None  # kept only for the images whose files are written


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
        crf_rows = [f"{m}+CRF" for m in self.base_methods if m in CRF_INPUTS] if crf is not None else []
        self.methods = [m for m in METHODS if m in self.base_methods or m in crf_rows]
        self.register_buffer(
            "confusion", torch.zeros(len(self.methods), num_classes, num_classes, dtype=torch.int64),
            persistent=False,
        )
        self.results: dict[str, np.ndarray] = {}  # filled at the end of the pass (every process)
        self.rows: dict[str, list[float]] = {}  # IoU rows, on global rank 0
        self._stage: CRFStage | None = None

    # ------------------------------------------------------------------ lifecycle

    def on_test_epoch_start(self) -> None:
        self.confusion.zero_()
        self.teardown("test")
        workers = self.crf_workers
        if self.crf is not None and workers <= 0:
            from deconvnet.inference.crf import default_workers

            workers = default_workers(processes_per_node=max(1, self.trainer.num_devices))
        self._stage = CRFStage(self.crf, workers)

    def on_test_epoch_end(self) -> None:
        if self._stage is not None:
            self._finished(self._stage.finish())
            self.teardown("test")
        total = self.trainer.strategy.reduce(self.confusion.clone(), reduce_op="sum")
        self.results = {m: total[i].cpu().numpy() for i, m in enumerate(self.methods)}
        if self.trainer.is_global_zero and self.outputs is not None:
            self.rows = self.outputs.finish(self.results if self.has_labels else None, self.logger)
            # callback_metrics travel back to the launching process (ddp_spawn): see rows_from
            for method, row in self.rows.items():
                self.trainer.callback_metrics[f"{ROWS_KEY}/{method}"] = torch.tensor(row, dtype=torch.float64)
        self.trainer.strategy.barrier()

    @staticmethod
    def rows_from(trainer: L.Trainer) -> dict[str, list[float]]:
        """The IoU rows (method -> [per-class IoU %, mean]) of the pass ``trainer`` just ran,
        also in the process that launched ``ddp_spawn`` workers; Table 1's order."""
        prefix = f"{ROWS_KEY}/"
        rows = {key[len(prefix):]: [float(v) for v in value.reshape(-1).tolist()]
                for key, value in trainer.callback_metrics.items() if key.startswith(prefix)}
        return {m: rows[m] for m in METHODS if m in rows}

    def teardown(self, stage: str) -> None:
        if self._stage is not None:  # an interrupted pass: stop the workers
            self._stage.close()
            self._stage = None

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
        crf = self._stage is not None and self._stage.enabled
        need_pixels = crf or keep_labels  # on the host: for the CRF, the files
        rgb = image[0].permute(1, 2, 0).cpu().numpy() if need_pixels else None
        gt = target.to(torch.uint8).cpu().numpy() if crf and self.has_labels else None

        labels: dict[str, np.ndarray] = {}
        for method, prob in probs.items():
            pred = prob.argmax(0)
            self._count(method, pred, target)
            if keep_labels:
                labels[method] = pred.to(torch.uint8).cpu().numpy()
        if keep_labels and gt is None and self.has_labels:
            gt = target.to(torch.uint8).cpu().numpy()
        to_refine = {m: p.cpu().numpy() for m, p in probs.items() if m in CRF_INPUTS} if crf else {}
        key = _Image(image_id, index, gt, rgb if keep_labels else None)
        self._finished(self._stage.add(key, rgb, labels, to_refine))

    def _finished(self, images: list[tuple[_Image, dict[str, np.ndarray]]]) -> None:
        """Count the +CRF labels of finished images and write their files."""
        for image, labels in images:
            for method, crf_labels in labels.items():
                if method.endswith("+CRF") and image.ground_truth is not None:
                    self._count(method, torch.from_numpy(crf_labels).long(),
                                torch.from_numpy(image.ground_truth).long())
            if image.rgb is not None:
                ordered = {m: labels[m] for m in self.methods if m in labels}
                self.outputs.image_done(image.image_id, image.index, image.rgb, image.ground_truth, ordered)

    # Lightning needs these to exist for trainer.test; there is nothing to train.
    def configure_optimizers(self) -> None:
        return None
