"""The EnsembleEvaluator's wiring around one pass: how many CRF workers it starts, how the
counts of several processes are combined, how the rows reach the launching process and the
logger, and an unlabelled split."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.strategies import SingleDeviceStrategy

import deconvnet.inference.crf as crf_module
import deconvnet.inference.ensemble as ensemble_module
from deconvnet.inference.crf import PRESETS
from deconvnet.inference.crf_stage import CRFStage
from deconvnet.inference.ensemble import EnsembleEvaluator
from deconvnet.inference.outputs import EvalOutputs
from deconvnet.inference.predictor import EnsemblePredictor
from deconvnet.metrics import iou_percent

from .conftest import AlwaysAeroplane, eval_trainer, scene_loader


def _trainer(tmp_path, **kwargs) -> L.Trainer:
    return eval_trainer(default_root_dir=tmp_path, **kwargs)


def _evaluator(**kwargs) -> EnsembleEvaluator:
    """DeconvNet says aeroplane inside one window of img000 and background elsewhere."""
    predictor = EnsemblePredictor(deconvnet=AlwaysAeroplane(), input_size=16)
    proposals = {"img000": np.array([[8, 8, 40, 40]], np.float32)}
    return EnsembleEvaluator(predictor, num_classes=21, proposals=proposals, **kwargs)


@pytest.fixture
def stages(monkeypatch):
    """The CRF stages the evaluator starts, as (params, workers), and the processes per
    node it asks ``default_workers`` about (which answers 3)."""
    made, asked = [], []

    def recording_stage(params, workers=0):
        made.append((params, workers))
        return CRFStage(params, 1 if params is not None else 0)

    def default_workers(processes_per_node=1):
        asked.append(processes_per_node)
        return 3

    monkeypatch.setattr(ensemble_module, "CRFStage", recording_stage)
    monkeypatch.setattr(crf_module, "default_workers", default_workers)
    return made, asked


@pytest.mark.parametrize(("crf", "crf_workers", "workers", "asked"), [
    (PRESETS["official"], None, 3, [1]),  # by default the cores of the node, shared by its processes
    (PRESETS["official"], 0, 3, [1]),  # 0: the same
    (PRESETS["official"], 1, 1, []),  # as given
    (PRESETS["official"], 2, 2, []),
    (None, 0, 0, []),  # no CRF: no workers
])
def test_the_crf_stage_gets_the_workers_asked_for(scenes, tmp_path, stages, crf, crf_workers, workers, asked):
    evaluator = _evaluator(crf=crf, **({} if crf_workers is None else {"crf_workers": crf_workers}))
    _trainer(tmp_path).test(evaluator, dataloaders=scene_loader(scenes[:1]), verbose=False)
    made, asked_about = stages
    assert made == [(crf, workers)] and asked_about == asked


def test_the_counts_of_all_processes_are_summed(scenes, tmp_path, monkeypatch):
    """The confusion matrices go through the strategy's reduction with "sum" (under DDP an
    all-reduce): a reduction standing for two processes that saw the same images doubles them."""
    single = _evaluator(crf=None)
    _trainer(tmp_path).test(single, dataloaders=scene_loader(scenes[:2]), verbose=False)
    ops = []

    def two_processes(self, tensor, group=None, reduce_op="mean"):
        ops.append((reduce_op, tuple(tensor.shape)))
        return tensor * 2 if reduce_op == "sum" else tensor

    monkeypatch.setattr(SingleDeviceStrategy, "reduce", two_processes)
    doubled = _evaluator(crf=None)
    _trainer(tmp_path).test(doubled, dataloaders=scene_loader(scenes[:2]), verbose=False)
    assert [op for op, shape in ops if shape == (1, 21, 21)] == ["sum"]  # the confusion matrices
    np.testing.assert_array_equal(doubled.results["DeconvNet"], 2 * single.results["DeconvNet"])


def test_the_rows_reach_the_launching_process_in_full_precision(scenes, tmp_path):
    evaluator = _evaluator(crf=None, outputs=EvalOutputs(tmp_path / "out", overlays=0))
    trainer = _trainer(tmp_path)
    trainer.test(evaluator, dataloaders=scene_loader(scenes[:2]), verbose=False)
    expected = iou_percent(evaluator.results["DeconvNet"])
    assert any(float(np.float32(v)) != v for v in expected if v == v)  # float32 would round these
    rows = EnsembleEvaluator.rows_from(trainer)
    assert list(rows) == ["DeconvNet"]
    np.testing.assert_array_equal(rows["DeconvNet"], expected)


def test_the_logger_gets_the_rows(scenes, tmp_path, monkeypatch):
    given = []
    monkeypatch.setattr(EvalOutputs, "_log", lambda self, rows, logger: given.append((rows, logger)))
    logger = CSVLogger(tmp_path / "logs")
    evaluator = _evaluator(crf=None, outputs=EvalOutputs(tmp_path / "out", overlays=0))
    _trainer(tmp_path, logger=logger).test(evaluator, dataloaders=scene_loader(scenes[:1]), verbose=False)
    ((rows, received),) = given
    assert received is logger and list(rows) == ["DeconvNet"]


def test_an_unlabelled_split_writes_no_scores(scenes, tmp_path):
    out = tmp_path / "out"
    evaluator = _evaluator(crf=PRESETS["official"], crf_workers=1, has_labels=False,
                           outputs=EvalOutputs(out, overlays=1))
    _trainer(tmp_path).test(evaluator, dataloaders=scene_loader(scenes[:2]), verbose=False)
    assert evaluator.rows == {} and not (out / "results.csv").exists()
    assert all(confusion.sum() == 0 for confusion in evaluator.results.values())
    assert (out / "overlays" / "img000.png").is_file()  # the pictures are still written


@pytest.mark.parametrize("crf", [None, PRESETS["official"]])
def test_the_pictures_get_the_image_its_ground_truth_and_uint8_labels(scenes, tmp_path, monkeypatch, crf):
    """What the overlay and prediction writer receives, with and without the CRF: the RGB
    image, the ground truth and every row's labels as uint8 (only for the images it keeps)."""
    received = []
    monkeypatch.setattr(EvalOutputs, "image_done", lambda self, *args: received.append(args))
    evaluator = _evaluator(crf=crf, crf_workers=1, outputs=EvalOutputs(tmp_path / "out", overlays=1))
    _trainer(tmp_path).test(evaluator, dataloaders=scene_loader(scenes[:2]), verbose=False)
    ((image_id, index, rgb, ground_truth, labels),) = received  # overlays=1: img000 only
    image, gt = scenes[0]
    assert (image_id, index) == ("img000", 0)
    np.testing.assert_array_equal(rgb, image)
    assert ground_truth.dtype == np.uint8
    np.testing.assert_array_equal(ground_truth, gt)
    assert list(labels) == (["DeconvNet"] if crf is None else ["DeconvNet", "DeconvNet+CRF"])
    assert all(lab.dtype == np.uint8 for lab in labels.values())
    ys, xs = np.mgrid[0:gt.shape[0], 0:gt.shape[1]] + 0.5  # the window of [8, 8, 40, 40]: [4.8, 43.2)
    inside = (xs >= 4.8) & (xs < 43.2) & (ys >= 4.8) & (ys < 43.2)
    np.testing.assert_array_equal(labels["DeconvNet"], inside.astype(np.uint8))
