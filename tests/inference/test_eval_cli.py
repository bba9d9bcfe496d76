"""`deconvnet eval` / `predict` as a user runs them: checkpoints on disk, the synthetic VOC
tree, proposals, W&B offline, the server archive for an unlabelled split, bad checkpoints."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from deconvnet.cli import main
from deconvnet.metrics import METHODS, read_results_csv

from ..wandb_offline import read_offline_run

pytestmark = pytest.mark.slow

DEMO_EVAL = str(Path(__file__).resolve().parents[2] / "experiments" / "demo" / "eval.yaml")


@pytest.fixture
def checkpoints(tiny_checkpoints) -> dict[str, Path]:
    return tiny_checkpoints


def _args(root: Path, out: Path, checkpoints: dict[str, Path], *extra: str) -> list[str]:
    return [
        f"data.root={root}", "data.synthetic=null", "eval.split=val", f"output_dir={out}",
        f"eval.deconvnet_checkpoint={checkpoints['deconvnet']}",
        f"eval.fcn_checkpoint={checkpoints['fcn8s']}",
        f"data.proposals.cache_dir={out}/proposals", "data.proposals.min_size=16",
        "data.proposals.workers=1", "data.num_workers=0",
        "trainer.accelerator=cpu", "trainer.devices=1", "crf.workers=1", "logger.log_images=2",
        *extra,
    ]


def test_eval_writes_the_table1_files_and_an_offline_wandb_run(synthetic_voc, checkpoints, tmp_path, capsys,
                                                               wandb_flushed):


    out = tmp_path / "eval"
    assert main(["eval", DEMO_EVAL,
                 *_args(synthetic_voc, out, checkpoints, "logger.mode=offline",
                        "eval.save_probabilities=true")]) == 0
    rows = read_results_csv(out / "results.csv")
    assert list(rows) == list(METHODS)
    for row in rows.values():  # the mean is over the classes present (NaN: absent from val)
        assert row[-1] == pytest.approx(np.nanmean(row[:-1]), abs=0.1)
    assert (out / "config.yaml").is_file() and (out / "results.md").is_file()
    assert (out / "iou_chart.png").is_file() and len(list((out / "overlays").glob("*.png"))) == 2
    printed = capsys.readouterr().out
    assert "EDeconvNet+CRF" in printed
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    # the printed table says where every output is
    assert f"outputs in {out}" in printed and "iou_chart.png" in printed and "overlays/" in printed
    assert f"wandb sync {runs[0]}" in printed
    wandb_flushed()  # the run file is complete only once the W&B service has finished it
    run = read_offline_run(runs[0])
    # which proposals (and edges) made DeconvNet's windows: in results.md and the W&B config
    assert "DeconvNet proposals: EdgeBoxes on gradient edges" in (out / "results.md").read_text()
    assert run["config"]["proposal_source"].startswith("EdgeBoxes on gradient edges")
    logged = {key: value for step in run["history"] for key, value in step.items()}
    assert logged["eval/EDeconvNet+CRF/mIoU"] == pytest.approx(rows["EDeconvNet+CRF"][-1], abs=0.05)
    assert logged["eval/per_class_iou/_type"] == "table-file"
    assert logged["eval/iou_chart/_type"] == "images/separated" and logged["eval/overlays/count"] == 2
    (table,) = (runs[0] / "files" / "media" / "table" / "eval").glob("per_class_iou*.table.json")
    logged_table = json.loads(table.read_text())
    assert logged_table["columns"][:3] == ["method", "background", "aeroplane"]
    assert [row[0] for row in logged_table["data"]][:5] == list(METHODS)
    assert "paper: EDeconvNet+CRF" in [row[0] for row in logged_table["data"]]

    # the probability cache re-scores the CRF rows without the networks, identically
    cache = out / "probabilities"
    assert len(list(cache.glob("*.npz"))) == 7
    again = tmp_path / "crf-only"
    assert main(["eval", DEMO_EVAL,
                 *_args(synthetic_voc, again, checkpoints, "logger.mode=disabled",
                        f"eval.probabilities_dir={cache}", "eval.deconvnet_checkpoint=null",
                        "eval.fcn_checkpoint=null")]) == 0
    cached = read_results_csv(again / "results.csv")
    assert list(cached) == list(METHODS)
    for method in METHODS:  # float16 probabilities: equal up to rare argmax ties
        np.testing.assert_allclose(cached[method], rows[method], atol=0.3)


def test_unlabelled_split_gives_server_archives(synthetic_voc, checkpoints, tmp_path):
    root = tmp_path / "voc"
    shutil.copytree(synthetic_voc, root)
    voc = root / "VOCdevkit" / "VOC2012"
    ids = (voc / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[:3]
    (voc / "ImageSets" / "Segmentation" / "test.txt").write_text("\n".join(ids) + "\n")
    for image_id in ids:  # test images have no masks
        (voc / "SegmentationClass" / f"{image_id}.png").unlink()
        (voc / "SegmentationObject" / f"{image_id}.png").unlink(missing_ok=True)
    out = tmp_path / "test"
    assert main(["eval", DEMO_EVAL,
                 *_args(root, out, checkpoints, "eval.split=test", "logger.mode=disabled")]) == 0
    assert not (out / "results.csv").exists()
    for slug in ("fcn8s", "deconvnet", "deconvnet_crf", "edeconvnet", "edeconvnet_crf"):
        with tarfile.open(out / f"{slug}.tar.gz") as tar:
            names = sorted(m.name for m in tar.getmembers() if m.isfile())
        assert names == sorted(f"results/VOC2012/Segmentation/comp6_test_cls/{i}.png" for i in ids)


def test_a_checkpoint_of_the_wrong_network_or_class_count_is_named(synthetic_voc, checkpoints, tiny_checkpoint_factory,
                                                                   tmp_path, capsys):
    swapped = {"deconvnet": checkpoints["fcn8s"], "fcn8s": checkpoints["fcn8s"]}
    out = tmp_path / "bad"
    assert main(["eval", DEMO_EVAL,
                 *_args(synthetic_voc, out, swapped, "logger.mode=disabled")]) == 2
    err = capsys.readouterr().err
    assert str(checkpoints["fcn8s"]) in err and "fcn8s network" in err and "deconvnet" in err
    ten = {**checkpoints, "fcn8s": tiny_checkpoint_factory(tmp_path / "fcn10.ckpt", "fcn8s", num_classes=10)}
    assert main(["eval", DEMO_EVAL,
                 *_args(synthetic_voc, out, ten, "logger.mode=disabled")]) == 2
    err = capsys.readouterr().err
    assert "fcn10.ckpt" in err and "10 classes" in err


def test_predict_writes_label_pngs_and_overlays(synthetic_voc, checkpoints, tmp_path):
    from PIL import Image

    images = sorted((synthetic_voc / "VOCdevkit" / "VOC2012" / "JPEGImages").glob("*.jpg"))[:2]
    out = tmp_path / "pred"
    assert main(["predict", DEMO_EVAL, *map(str, images), "--out", str(out),
                 *_args(synthetic_voc, tmp_path / "eval", checkpoints, "logger.mode=disabled")]) == 0
    for image in images:
        size = Image.open(image).size
        for slug in ("deconvnet_crf", "edeconvnet_crf", "fcn8s"):
            label = Image.open(out / slug / f"{image.stem}.png")
            assert label.mode == "P" and label.size == size
        assert (out / "overlays" / f"{image.stem}.png").is_file()
    assert (out / "config.yaml").is_file() and not (tmp_path / "eval").exists()


def test_predict_never_writes_into_the_evaluation_folder(synthetic_voc, checkpoints, tmp_path, capsys):
    """#13: `deconvnet predict <eval.yaml>` replaced the eval's overlays and config.yaml."""
    out = tmp_path / "eval"
    args = _args(synthetic_voc, out, checkpoints, "logger.mode=disabled", "crf.enabled=false")
    assert main(["eval", DEMO_EVAL, *args]) == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    image = sorted((synthetic_voc / "VOCdevkit" / "VOC2012" / "JPEGImages").glob("*.jpg"))[0]
    assert main(["predict", DEMO_EVAL, str(image), *args]) == 0
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before  # not one file of the evaluation added or changed
    assert (tmp_path / "eval-predict" / "fcn8s" / f"{image.stem}.png").is_file()
    # pointed at the evaluation's folder explicitly: refused in one line, nothing written
    capsys.readouterr()
    assert main(["predict", DEMO_EVAL, str(image), "--out", str(out), *args]) == 2
    assert "holds a training or evaluation run" in capsys.readouterr().err
    assert {p.relative_to(out) for p in out.rglob("*") if p.is_file()} == set(before)


def _eval_step_done(args: list[str]) -> bool:
    """What `deconvnet pipeline` decides about the eval step of this config."""
    from deconvnet.config import load_config
    from deconvnet.pipeline import plan

    (step,) = [s for s in plan(Path(DEMO_EVAL).parent) if s.name == "eval"]
    return step.done(load_config(DEMO_EVAL, args))


def test_an_evaluation_killed_while_rerunning_is_not_complete(synthetic_voc, checkpoints, tmp_path,
                                                              monkeypatch, tiny_checkpoint_factory):
    """#13.3: a rerun killed after writing its config.yaml left the old results.csv, and the
    pipeline called the step complete; a retrained checkpoint did not count either."""
    from deconvnet.inference.outputs import EvalOutputs

    out = tmp_path / "eval"
    fcn = tiny_checkpoint_factory(tmp_path / "fcn.ckpt", "fcn8s")
    args = _args(synthetic_voc, out, {**checkpoints, "fcn8s": fcn}, "logger.mode=disabled",
                 "crf.enabled=false")
    assert main(["eval", DEMO_EVAL, *args]) == 0
    assert _eval_step_done(args)

    def killed(self, *a, **k):  # dies before the report is written
        raise MemoryError("killed")

    monkeypatch.setattr(EvalOutputs, "finish", killed)
    with pytest.raises(MemoryError):
        main(["eval", DEMO_EVAL, *args])
    monkeypatch.undo()
    assert (out / "results.csv").is_file() and not _eval_step_done(args)
    assert main(["eval", DEMO_EVAL, *args]) == 0 and _eval_step_done(args)

    tiny_checkpoint_factory(fcn, "fcn8s")  # retrained in place: the results are not its results
    assert not _eval_step_done(args)


def test_a_checkpoint_trained_on_other_data_is_refused(synthetic_voc, checkpoints, tmp_path, capsys):
    """#13.8: a network trained on another synthetic set was evaluated without a word."""
    import torch

    checkpoint = torch.load(checkpoints["deconvnet"], map_location="cpu", weights_only=True)
    checkpoint["deconvnet"] = {"data": {"root": "0123456789abcdef", "splits": {}}}
    other = tmp_path / "other-data.ckpt"
    torch.save(checkpoint, other)
    out = tmp_path / "eval"
    assert main(["eval", DEMO_EVAL, *_args(synthetic_voc, out, {**checkpoints, "deconvnet": other},
                                           "logger.mode=disabled")]) == 2
    err = capsys.readouterr().err
    assert "other-data.ckpt" in err and "another dataset" in err
    assert not (out / "config.yaml").exists()
