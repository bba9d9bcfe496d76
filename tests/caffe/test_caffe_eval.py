"""An evaluation from a caffe-style checkpoint: a tiny caffemodel laid out like the released
DeconvNet -> `deconvnet convert` -> `deconvnet eval` on the synthetic val split. The score
maps the evaluator caches must be the forward of the Caffe blobs themselves, computed here
with torch.nn.functional from the blobs and the image (tests/caffe/test_convert.py's
reference; no model class, loader or window code of ours involved): they are not when the
converted weights, or the caffe preprocessing they ask for, do not reach the network.

Each image gets one proposal of exactly the network's input size (32 x 32), used as it is
(`data.proposals.extended=true`, `data.square_windows=false`): the window is then a plain
crop of the image, nothing is resized, and with `eval.aggregation=sum` the cached score
map is the network's output inside the window and zero outside.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deconvnet.cli import main
from deconvnet.data.voc import VOCSegmentationIndex

pytestmark = pytest.mark.slow  # about 15 s: an eval run

DEMO_EVAL = Path(__file__).resolve().parents[2] / "experiments" / "demo" / "eval.yaml"
SIDE = 32  # deconvnet_blobs(input_size=32): the converted network's input size
CAFFE_MEAN_BGR = np.array([104.008, 116.669, 122.675], np.float32)  # the official VGG16 mean


def _convert_tests():
    spec = importlib.util.spec_from_file_location("caffe_test_convert", Path(__file__).with_name("test_convert.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module



def test_eval_of_a_converted_caffemodel_gives_the_blobs_forward(synthetic_voc, tmp_path, caffe_writer):
    convert = _convert_tests()
    blobs = convert.deconvnet_blobs(seed=3, input_size=SIDE)
    source = convert.write_deconvnet(caffe_writer, tmp_path / "DeconvNet_trainval_inference.caffemodel", blobs)
    checkpoint = tmp_path / "converted" / "deconvnet.ckpt"
    assert main(["convert", str(source), "--network", "deconvnet", "--out", str(checkpoint)]) == 0

    reader = VOCSegmentationIndex(synthetic_voc, "val")
    ids = reader.ids
    boxes = {}
    for i, image_id in enumerate(ids):
        height, width = reader.sizes[i]
        x1, y1 = (width - SIDE) // 3, (height - SIDE) // 2  # off-centre, inside the image
        boxes[image_id] = [[x1, y1, x1 + SIDE, y1 + SIDE]]
    (tmp_path / "boxes.json").write_text(json.dumps(boxes))

    out = tmp_path / "eval"
    assert main([
        "eval", str(DEMO_EVAL), f"data.root={synthetic_voc}", "data.synthetic=null", "eval.split=val",
        f"output_dir={out}", f"eval.deconvnet_checkpoint={checkpoint}", "eval.fcn_checkpoint=null",
        "data.proposals.method=file", f"data.proposals.file={tmp_path / 'boxes.json'}",
        "data.proposals.extended=true", "data.square_windows=false", "data.proposals.min_size=1",
        f"data.proposals.cache_dir={out}/proposals", "data.proposals.workers=1", "data.num_workers=0",
        "eval.aggregation=sum", "eval.num_proposals=1", "eval.save_probabilities=true",
        "trainer.accelerator=cpu", "trainer.devices=1", "trainer.precision=32-true",
        "crf.enabled=false", "logger.mode=disabled", "logger.log_images=0",
    ]) == 0

    jpegs = synthetic_voc / "VOCdevkit" / "VOC2012" / "JPEGImages"
    for i, image_id in enumerate(ids):
        (x1, y1, x2, y2), = boxes[image_id]
        rgb = np.asarray(Image.open(jpegs / f"{image_id}.jpg").convert("RGB"), np.float32)
        bgr = rgb[y1:y2, x1:x2, ::-1] - CAFFE_MEAN_BGR  # caffe style: BGR, 0-255, minus the mean
        window = torch.from_numpy(np.ascontiguousarray(bgr.transpose(2, 0, 1)))[None]
        with torch.no_grad():
            expected = convert.reference_deconvnet(blobs, window)[0].numpy()
        with np.load(out / "probabilities" / f"{image_id}.npz") as data:
            scores = data["DeconvNet"].astype(np.float32)
        height, width = reader.sizes[i]
        assert scores.shape == (21, height, width)
        assert np.abs(expected).mean() > 0.1  # a forward that is not trivially small
        inside = scores[:, y1:y2, x1:x2]
        # the cache holds float16: tolerance of a half-precision rounding
        np.testing.assert_allclose(inside, expected, rtol=2e-3, atol=2e-3 * np.abs(expected).max())
        outside = scores.copy()
        outside[:, y1:y2, x1:x2] = 0
        assert not outside.any()  # no window there: nothing accumulated
