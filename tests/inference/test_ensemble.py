"""The EnsembleEvaluator end to end: an oracle scores 100% on every row, files are written,
and two DDP processes count exactly the pixels one process counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from deconvnet.inference.crf import PRESETS
from deconvnet.inference.ensemble import EnsembleEvaluator
from deconvnet.inference.outputs import EvalOutputs
from deconvnet.inference.predictor import EnsemblePredictor
from deconvnet.metrics import METHODS, read_results_csv, results_header

from .conftest import AlwaysAeroplane, ColourOracle, eval_trainer, scene_loader


def _oracle_proposals(scenes) -> dict[str, np.ndarray]:
    """Hand-made proposals: none for img000 (whole-image fallback), an empty array for
    img001, boxes crossing the border elsewhere."""
    out = {"img001": np.zeros((0, 4), np.float32)}
    for i, (image, _) in enumerate(scenes[2:], start=2):
        h, w = image.shape[:2]
        out[f"img{i:03d}"] = np.array(
            [[-10, -8, w * 0.6, h * 0.7], [w * 0.3, h * 0.2, w + 12, h + 5], [0, 0, w, h],
             [w * 0.2, h * 0.3, w * 0.8, h * 0.9]], np.float32)
    return out


@pytest.mark.slow
def test_oracle_scores_100_percent_on_every_row(scenes, tmp_path):
    predictor = EnsemblePredictor(ColourOracle(), ColourOracle(), input_size=64, num_proposals=50,
                                  proposal_batch_size=3, window_square=True)
    outputs = EvalOutputs(tmp_path, overlays=2)
    evaluator = EnsembleEvaluator(predictor, num_classes=21, proposals=_oracle_proposals(scenes),
                                  crf=PRESETS["official"], crf_workers=1, outputs=outputs)
    assert evaluator.methods == list(METHODS)
    eval_trainer().test(evaluator, dataloaders=scene_loader(scenes), verbose=False)

    valid = sum(int((gt != 255).sum()) for _, gt in scenes)
    for method, confusion in evaluator.results.items():
        assert confusion.sum() == valid, method  # every labelled pixel counted once
        assert np.trace(confusion) == valid, method  # and right
    rows = read_results_csv(tmp_path / "results.csv")
    assert list(rows) == list(METHODS)
    assert all(value == 100.0 for row in rows.values() for value in row)
    assert (tmp_path / "results.csv").read_text().splitlines()[0] == ",".join(results_header())
    markdown = (tmp_path / "results.md").read_text()
    assert "| EDeconvNet+CRF | ours | 100.0" in markdown and "| | paper | 93.1 | 89.9" in markdown
    with Image.open(tmp_path / "iou_chart.png") as chart:  # a readable picture with bars in it
        chart.load()
        assert min(chart.size) > 200
        assert len(chart.convert("RGB").getcolors(maxcolors=1 << 16) or []) > 8
    assert sorted(p.name for p in (tmp_path / "overlays").glob("*.png")) == ["img000.png", "img001.png"]
    saved = np.load(tmp_path / "confusion.npz")
    assert sorted(saved.files) == sorted(METHODS)


def test_rows_without_networks_are_skipped_and_a_wrong_network_scores_low(scenes, tmp_path):
    predictor = EnsemblePredictor(deconvnet=AlwaysAeroplane(), fcn=None, input_size=32)
    evaluator = EnsembleEvaluator(predictor, num_classes=21, crf=None, outputs=EvalOutputs(tmp_path, overlays=0))
    assert evaluator.methods == ["DeconvNet"]
    eval_trainer().test(evaluator, dataloaders=scene_loader(scenes[:2]), verbose=False)
    rows = read_results_csv(tmp_path / "results.csv")
    assert list(rows) == ["DeconvNet"]
    # pixels nothing covers (none here: the fallback window covers the image) would be
    # background; the constant network says aeroplane wherever a window lies
    assert rows["DeconvNet"][0] == 0.0 and rows["DeconvNet"][-1] < 20


def test_product_ensemble_and_sum_aggregation_keep_the_oracle_exact(scenes, tmp_path):
    predictor = EnsemblePredictor(ColourOracle(), ColourOracle(), input_size=64, aggregation="sum",
                                  ensemble="product")
    evaluator = EnsembleEvaluator(predictor, num_classes=21, proposals=_oracle_proposals(scenes),
                                  crf=None, outputs=None)
    assert evaluator.methods == ["FCN-8s", "DeconvNet", "EDeconvNet"]
    eval_trainer().test(evaluator, dataloaders=scene_loader(scenes), verbose=False)
    for confusion in evaluator.results.values():
        assert np.trace(confusion) == confusion.sum() > 0


@pytest.mark.slow
def test_ddp_spawn_gives_exactly_the_single_process_confusion(synthetic_voc, tmp_path):
    """Two gloo processes on the odd-sized synthetic val split (7 images) count the same
    pixels as one process, each exactly once, for every row including the CRF ones."""
    from deconvnet.config import load_config
    from deconvnet.data.datamodules import WholeImageDataModule
    from deconvnet.data.voc import VOCSegmentationIndex
    from deconvnet.inference.predictor import with_normalizer

    reader = VOCSegmentationIndex(synthetic_voc, "val")
    assert len(reader) % 2 == 1
    cfg = load_config(overrides=[f"data.root={synthetic_voc}", "eval.split=val", "data.num_workers=0"])
    torch.manual_seed(0)
    deconvnet = with_normalizer(nn.Conv2d(3, 21, 3, padding=1), "torchvision")
    fcn = with_normalizer(nn.Conv2d(3, 21, 5, padding=2), "torchvision")
    proposals = {}
    for i, image_id in enumerate(reader.ids):  # a few boxes per image, one image without
        h, w = reader.image(i).shape[:2]
        proposals[image_id] = np.array([[0, 0, w / 2, h / 2], [w / 3, h / 4, w, h]], np.float32)[: i % 3]

    def confusion_of(out, **trainer_kwargs):
        predictor = EnsemblePredictor(deconvnet, fcn, input_size=32)
        evaluator = EnsembleEvaluator(predictor, 21, proposals, crf=PRESETS["official"], crf_workers=1,
                                      outputs=EvalOutputs(out, overlays=0))
        eval_trainer(**trainer_kwargs).test(evaluator, datamodule=WholeImageDataModule(cfg), verbose=False)
        with np.load(out / "confusion.npz") as data:
            return {m: data[m] for m in data.files}

    single = confusion_of(tmp_path / "one")
    double = confusion_of(tmp_path / "two", strategy="ddp_spawn", devices=2)
    labelled = sum(int((reader.label(i) != 255).sum()) for i in range(len(reader)))
    assert sorted(single) == sorted(double) == sorted(METHODS)
    for method in METHODS:
        assert single[method].sum() == labelled
        np.testing.assert_array_equal(double[method], single[method])
    # the networks are random: the rows differ, so equality above is not trivial
    assert not np.array_equal(single["DeconvNet"], single["FCN-8s"])


def _constant_cache(folder, scenes):
    """A score cache for the scenes: DeconvNet says class 1 (3 vs 1), FCN-8s class 2 (1 vs
    0.1), everything else -10: mean of the softmaxes -> 1, softmax(deconv x max(0, fcn)) -> 2."""
    from deconvnet.inference.outputs import ScoreCache

    cache = ScoreCache(folder)
    for i, (image, _) in enumerate(scenes):
        h, w = image.shape[:2]
        deconv, fcn = np.full((21, h, w), -10.0), np.full((21, h, w), -10.0)
        deconv[1], deconv[2], fcn[1], fcn[2] = 3.0, 1.0, 0.1, 1.0
        cache.save(f"img{i:03d}", {"DeconvNet": deconv, "FCN-8s": fcn})
    return cache


@pytest.mark.parametrize(("ensemble", "winner"), [(None, 1), ("mean", 1), ("product", 2)])
def test_a_score_cache_alone_gives_every_row_with_its_ensemble(scenes, tmp_path, ensemble, winner):
    cache = _constant_cache(tmp_path / "cache", scenes[:2])
    evaluator = EnsembleEvaluator(None, num_classes=21, cache=cache, crf=None, ensemble=ensemble)
    assert evaluator.methods == ["FCN-8s", "DeconvNet", "EDeconvNet"]
    eval_trainer().test(evaluator, dataloaders=scene_loader(scenes[:2]), verbose=False)
    valid = sum(int((gt != 255).sum()) for _, gt in scenes[:2])
    predicted = {m: confusion.sum(0) for m, confusion in evaluator.results.items()}  # per predicted class
    assert predicted["DeconvNet"][1] == valid and predicted["FCN-8s"][2] == valid
    assert predicted["EDeconvNet"][winner] == valid  # no ensemble given: the mean (the paper's)


def test_the_evaluator_needs_exactly_one_source_of_scores(tmp_path):
    from deconvnet.inference.outputs import ScoreCache

    for predictor, cache in ((None, None), (EnsemblePredictor(fcn=nn.Conv2d(3, 21, 1)), ScoreCache(tmp_path))):
        with pytest.raises(ValueError) as error:
            EnsembleEvaluator(predictor, num_classes=21, cache=cache)
        assert str(error.value) == "EnsembleEvaluator needs either a predictor (networks) or a score cache"


def test_the_evaluator_passes_each_images_proposals_and_caches_its_scores(scenes, tmp_path):
    """One proposal box on img000: with max aggregation the pixels no window covers score 0
    (uniform: background), so DeconvNet's aeroplane pixels are exactly those of its window;
    the raw scores land in the cache under the image's id."""
    (image, gt), = scenes[:1]
    h, w = image.shape[:2]
    box = np.array([[8, 8, 40, 40]], np.float32)  # window (x 1.2, square): [4.8, 4.8, 43.2, 43.2]
    predictor = EnsemblePredictor(deconvnet=AlwaysAeroplane(), input_size=16)
    outputs = EvalOutputs(tmp_path / "out", overlays=0, probabilities_dir=tmp_path / "cache")
    evaluator = EnsembleEvaluator(predictor, num_classes=21, proposals={"img000": box}, crf=None, outputs=outputs)
    assert evaluator.results == {} and evaluator.rows == {}  # filled by the pass
    assert "confusion" not in evaluator.state_dict()  # a counter, not a weight
    eval_trainer().test(evaluator, dataloaders=scene_loader(scenes[:1]), verbose=False)
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    inside = (xs >= 4.8) & (xs < 43.2) & (ys >= 4.8) & (ys < 43.2)
    confusion = evaluator.results["DeconvNet"]
    assert confusion.dtype == np.int64
    assert confusion[:, 1].sum() == int((inside & (gt != 255)).sum())
    assert confusion[:, 0].sum() == int((~inside & (gt != 255)).sum())
    with np.load(tmp_path / "cache" / "img000.npz") as cached:
        assert cached.files == ["DeconvNet"] and cached["DeconvNet"].shape == (21, h, w)
