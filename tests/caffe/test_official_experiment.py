"""experiments/official end to end on the synthetic set: tiny caffemodels laid out like the
released ones -> `deconvnet convert` -> `deconvnet eval` on test (the release's cached boxes,
server archives) and on val (our proposals, results table)."""

from __future__ import annotations

import importlib.util
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from deconvnet.cli import main
from deconvnet.data.voc import VOCSegmentationIndex
from deconvnet.metrics import read_results_csv

pytestmark = pytest.mark.slow

EXPERIMENT = Path(__file__).resolve().parents[2] / "experiments" / "official"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _common(root: Path, out: Path, converted: Path) -> list[str]:
    return [f"data.root={root}", f"output_dir={out}", f"data.proposals.cache_dir={out}/proposals",
            f"eval.deconvnet_checkpoint={converted / 'deconvnet.ckpt'}",
            f"eval.fcn_checkpoint={converted / 'fcn8s.ckpt'}", "data.num_workers=0",
            "data.proposals.workers=1", "trainer.accelerator=cpu", "trainer.devices=1",
            "trainer.precision=32-true", "crf.workers=1", "logger.mode=disabled", "logger.log_images=0"]


def test_official_recipe_end_to_end(synthetic_voc, tmp_path, caffe_writer, capsys):
    tests = _load("test_convert")
    root = tmp_path / "voc"
    shutil.copytree(synthetic_voc, root)
    voc = root / "VOCdevkit" / "VOC2012"
    ids = (voc / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[:2]
    (voc / "ImageSets" / "Segmentation" / "test.txt").write_text("\n".join(ids) + "\n")
    for image_id in ids:  # test images come without masks
        (voc / "SegmentationClass" / f"{image_id}.png").unlink()
        (voc / "SegmentationObject" / f"{image_id}.png").unlink(missing_ok=True)

    # the release, in miniature: DeconvNet (V1, BN INFERENCE), staged FCN-8s, edgebox cache
    release = tmp_path / "official"
    converted = release / "converted"
    deconv = tests.write_deconvnet(caffe_writer, tmp_path / "DeconvNet_trainval_inference.caffemodel",
                                   tests.deconvnet_blobs())
    fcn = tests.write_fcn(caffe_writer, tmp_path / "fcn-8s-pascal.caffemodel", tests.fcn_blobs())
    assert main(["convert", str(deconv), "--network", "deconvnet", "--out", str(converted / "deconvnet.ckpt")]) == 0
    assert main(["convert", str(fcn), "--network", "fcn8s", "--out", str(converted / "fcn8s.ckpt")]) == 0
    cache = release / "edgebox_cached" / "VOC2012_TEST"
    cache.mkdir(parents=True)
    test_reader = VOCSegmentationIndex(root, "test")
    for i, image_id in enumerate(test_reader.ids):
        h, w = test_reader.sizes[i]
        # extended square windows of 112-130 px crossing the border, 1-based padded (padarray(I, [W, H]))
        ours = [[-10, -5, 120, 125], [w - 100, h - 90, w + 12, h + 22], [5, 5, 60, 60]]  # the last < 112: skipped
        rows = [[x1 + 1 + h, y1 + 1 + w, x2 + h, y2 + w] for x1, y1, x2, y2 in ours]
        scipy.io.savemat(cache / f"{image_id}.mat", {"boxes_padded": np.array(rows, np.float64)})
    npz = converted / "edgebox_test.npz"
    assert main(["convert", str(cache), "--proposals", "--data-root", str(root), "--split", "test",
                 "--out", str(npz)]) == 0
    assert f"data.proposals.file={npz}" in capsys.readouterr().out

    out = tmp_path / "official-test"
    assert main(["eval", str(EXPERIMENT / "test.yaml"), *_common(root, out, converted),
                 f"data.proposals.file={npz}"]) == 0
    (proposal_cache,) = (out / "proposals").glob("test-file-*.npz")
    with np.load(proposal_cache) as data:  # the windows the evaluator cut: unclipped, the small one gone
        assert data["ids"].tolist() == ids
        h, w = test_reader.sizes[0]
        np.testing.assert_array_equal(data["boxes"][: data["offsets"][1]],
                                      np.array([[-10, -5, 120, 125], [w - 100, h - 90, w + 12, h + 22]], np.float32))
    for slug in ("fcn8s", "deconvnet", "deconvnet_crf", "edeconvnet", "edeconvnet_crf"):
        with tarfile.open(out / f"{slug}.tar.gz") as tar:
            names = sorted(m.name for m in tar.getmembers() if m.isfile())
        assert names == sorted(f"results/VOC2012/Segmentation/comp6_test_cls/{i}.png" for i in ids)

    val_out = tmp_path / "official-eval"
    assert main(["eval", str(EXPERIMENT / "eval.yaml"), *_common(synthetic_voc, val_out, converted),
                 "data.proposals.min_size=16", "eval.num_proposals=3", "crf.enabled=false"]) == 0
    rows = read_results_csv(val_out / "results.csv")
    assert list(rows) == ["FCN-8s", "DeconvNet", "EDeconvNet"] and all(0 <= r[-1] <= 100 for r in rows.values())
