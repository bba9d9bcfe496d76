"""The eval.* settings reach the networks' outputs: `evaluate(cfg)` on two networks whose
scores are known everywhere, so that every setting changes the numbers in a predictable way.

The networks come from checkpoints as `deconvnet train` writes them, with every weight
zero and only the last bias set: their scores are the same vector at every pixel of every
window, whatever the input. So the DeconvNet score map of an image is that vector times the
number of windows covering the pixel (sum aggregation) or the vector itself wherever a
window lies (max); which windows exist follows from the proposals we write, eval.num_proposals
and data.square_windows (with data.context_scale 1.2), computed here with plain geometry.
The score maps come back through
the probability cache (eval.save_probabilities) and the label PNGs (eval.write_predictions).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from deconvnet.config import load_config
from deconvnet.data.imageio import read_index_png
from deconvnet.data.voc import VOCSegmentationIndex
from deconvnet.inference.run import evaluate
from deconvnet.models import build_model

pytestmark = pytest.mark.slow

DEMO_EVAL = Path(__file__).resolve().parents[2] / "experiments" / "demo" / "eval.yaml"
TINY = {"num_classes": 21, "input_size": 32, "width": 0.0625, "pretrained": "none",
        "weights_style": "torchvision", "init_from": None}
# two classes compete, the others are far below: DeconvNet prefers class 1, FCN-8s class 2;
# where k windows overlap (sum aggregation) the mean of the softmaxes says class 1 and
# softmax(deconv x max(0, fcn)) = softmax(0.3 k, 1.0 k, 0...) says class 2
DECONV_SCORES = {1: 3.0, 2: 1.0}
FCN_SCORES = {1: 0.1, 2: 1.0}
LOW = -10.0
# proposals as fractions of the image (x1, y1, x2, y2), best first: overlapping, not square
FRACTIONS = [(0.10, 0.15, 0.55, 0.45), (0.30, 0.25, 0.70, 0.85), (0.50, 0.05, 0.95, 0.35)]


def _score_vector(scores: dict[int, float]) -> torch.Tensor:
    vector = torch.full((21,), LOW)
    for cls, value in scores.items():
        vector[cls] = value
    return vector


def _constant_checkpoint(path: Path, name: str, scores: dict[int, float]) -> Path:
    """A checkpoint of `name` whose output is `scores` at every pixel."""
    section = {"name": name, **TINY}
    net = build_model(section)
    last_bias = "classifier.bias" if name == "deconvnet" else "score_pool3.bias"
    state = {}
    for key, value in net.state_dict().items():
        if key.startswith("upscore"):  # FCN-8s' fixed bilinear upsampling stays as it is
            state[f"net.{key}"] = value
        elif key == last_bias:
            state[f"net.{key}"] = _score_vector(scores)
        elif value.is_floating_point():
            state[f"net.{key}"] = torch.zeros_like(value)
        else:
            state[f"net.{key}"] = value
    torch.save({"state_dict": state, "hyper_parameters": {"model": section}, "global_step": 1}, path)
    return path



@pytest.fixture(scope="module")
def setup(synthetic_voc, tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval_settings")
    reader = VOCSegmentationIndex(synthetic_voc, "val")
    boxes = {}
    for i, image_id in enumerate(reader.ids):
        height, width = reader.sizes[i]
        boxes[image_id] = [[round(fx1 * width), round(fy1 * height), round(fx2 * width), round(fy2 * height)]
                           for fx1, fy1, fx2, fy2 in FRACTIONS]
    (folder / "boxes.json").write_text(json.dumps(boxes))
    return {
        "folder": folder, "reader": reader, "boxes": boxes,
        "deconvnet": _constant_checkpoint(folder / "deconvnet.ckpt", "deconvnet", DECONV_SCORES),
        "fcn8s": _constant_checkpoint(folder / "fcn8s.ckpt", "fcn8s", FCN_SCORES),
    }


def _run(setup, synthetic_voc, name: str, *overrides: str) -> Path:
    out = setup["folder"] / name
    cfg = load_config(DEMO_EVAL, [
        f"data.root={synthetic_voc}", "data.synthetic=null", "eval.split=val", f"output_dir={out}",
        f"eval.deconvnet_checkpoint={setup['deconvnet']}", f"eval.fcn_checkpoint={setup['fcn8s']}",
        "data.proposals.method=file", f"data.proposals.file={setup['folder'] / 'boxes.json'}",
        f"data.proposals.cache_dir={out}/proposals", "data.proposals.min_size=1",
        "data.proposals.workers=1", "data.num_workers=0", "trainer.accelerator=cpu", "trainer.devices=1",
        "crf.enabled=false", "logger.mode=disabled", "logger.log_images=0",
        "eval.save_probabilities=true", "eval.write_predictions=true", *overrides,
    ])
    evaluate(cfg)
    return out


def _coverage(boxes, height: int, width: int, square: bool,
              context: float = 1.2) -> tuple[np.ndarray, np.ndarray]:
    """(windows covering each pixel centre, pixels at least 2 px from every window edge); a
    window is the box enlarged ``context`` times about its centre, then (``square``) the
    square that holds it: the paper's rule, data.context_scale and data.square_windows."""
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    count = np.zeros((height, width), int)
    clear = np.ones((height, width), bool)
    for x1, y1, x2, y2 in boxes:
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        half_w, half_h = context * (x2 - x1) / 2, context * (y2 - y1) / 2
        if square:
            half_w = half_h = max(half_w, half_h)
        x1, y1, x2, y2 = cx - half_w, cy - half_h, cx + half_w, cy + half_h
        count += (xs >= x1) & (xs < x2) & (ys >= y1) & (ys < y2)
        near_x = (np.abs(xs - x1) < 2) | (np.abs(xs - x2) < 2)
        near_y = (np.abs(ys - y1) < 2) | (np.abs(ys - y2) < 2)
        clear &= ~((near_x & (ys > y1 - 2) & (ys < y2 + 2)) | (near_y & (xs > x1 - 2) & (xs < x2 + 2)))
    return count, clear


def _deconvnet_scores(out: Path, image_id: str) -> np.ndarray:
    with np.load(out / "probabilities" / f"{image_id}.npz") as data:
        return data["DeconvNet"].astype(np.float32)


@pytest.mark.parametrize(("aggregation", "num_proposals", "square"), [
    ("sum", 3, False), ("max", 3, False), ("sum", 2, False), ("sum", 3, True),
])
def test_deconvnet_scores_follow_aggregation_proposals_and_window_shape(setup, synthetic_voc,
                                                                         aggregation, num_proposals, square):
    out = _run(setup, synthetic_voc, f"{aggregation}-{num_proposals}-{square}",
               f"eval.aggregation={aggregation}", f"eval.num_proposals={num_proposals}",
               f"data.square_windows={str(square).lower()}")
    vector = _score_vector(DECONV_SCORES).numpy()
    reader = setup["reader"]
    for i, image_id in enumerate(reader.ids):
        height, width = reader.sizes[i]
        count, clear = _coverage(setup["boxes"][image_id][:num_proposals], height, width, square)
        # the accumulator starts at zero (official): max keeps max(0, score) where a window lies
        expected = (vector[:, None] * count[clear][None] if aggregation == "sum"
                    else np.maximum(vector, 0)[:, None] * (count[clear] > 0)[None])
        assert count[clear].max() == num_proposals  # the windows overlap: sum differs from max
        scores = _deconvnet_scores(out, image_id)
        assert scores.shape == (21, height, width)
        np.testing.assert_allclose(scores[:, clear], expected, rtol=2e-3, atol=1e-2)


@pytest.mark.parametrize(("ensemble", "winner"), [("mean", 1), ("product", 2)])
def test_the_ensemble_setting_decides_the_edeconvnet_labels(setup, synthetic_voc, ensemble, winner):
    out = _run(setup, synthetic_voc, f"ensemble-{ensemble}", f"eval.ensemble={ensemble}",
               "eval.aggregation=sum")
    reader = setup["reader"]
    for i, image_id in enumerate(reader.ids):
        height, width = reader.sizes[i]
        count, clear = _coverage(setup["boxes"][image_id], height, width, square=True)
        folder = out / "predictions"
        labels = {slug: read_index_png(next((folder / slug).rglob(f"{image_id}.png")))
                  for slug in ("fcn8s", "deconvnet", "edeconvnet")}
        covered = clear & (count > 0)
        assert covered.sum() > 100
        assert (labels["fcn8s"] == 2).all()  # FCN-8s alone says class 2 everywhere
        assert (labels["deconvnet"][covered] == 1).all()  # DeconvNet alone says class 1
        assert (labels["edeconvnet"][covered] == winner).all()
