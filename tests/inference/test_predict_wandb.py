"""`deconvnet predict` logs to W&B through the runtime's one setup, as eval does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deconvnet.cli import main
from deconvnet.data.classes import class_names

from ..wandb_offline import read_offline_run

pytestmark = pytest.mark.slow

DEMO_EVAL = str(Path(__file__).resolve().parents[2] / "experiments" / "demo" / "eval.yaml")


def _args(root: Path, checkpoints: dict[str, Path], tmp_path: Path, *extra: str) -> list[str]:
    return [
        f"data.root={root}", "data.synthetic=null", f"output_dir={tmp_path}/eval",
        f"eval.deconvnet_checkpoint={checkpoints['deconvnet']}", f"eval.fcn_checkpoint={checkpoints['fcn8s']}",
        f"data.proposals.cache_dir={tmp_path}/proposals", "data.proposals.min_size=16",
        "data.proposals.workers=1", "trainer.accelerator=cpu", "crf.workers=1", *extra,
    ]


def test_predict_logs_its_images_classes_and_overlays(synthetic_voc, tiny_checkpoints, tmp_path, wandb_flushed):
    images = sorted((synthetic_voc / "VOCdevkit" / "VOC2012" / "JPEGImages").glob("*.jpg"))[:3]
    out = tmp_path / "pred"
    args = _args(synthetic_voc, tiny_checkpoints, tmp_path, "logger.mode=offline", "logger.log_images=2")
    assert main(["predict", DEMO_EVAL, *map(str, images), "--out", str(out), *args]) == 0
    (run_dir,) = (out / "wandb").glob("offline-run-*")
    wandb_flushed()
    run = read_offline_run(run_dir)
    assert run["config"]["predict"] == {"folder": str(out), "num_images": 3}
    assert run["config"]["eval"]["deconvnet_checkpoint"] == str(tiny_checkpoints["deconvnet"])
    logged = {key: value for step in run["history"] for key, value in step.items()}
    assert logged["predict/images"] == 3
    assert logged["predict/overlays/count"] == 2  # logger.log_images of the 3 overlays
    assert logged["predict/overlays/captions"] == [images[0].stem, images[1].stem]

    # the table: one row per image; each method's cell names the classes of its label PNG
    (table,) = (run_dir / "files" / "media" / "table" / "predict").glob("classes*.table.json")
    logged_table = json.loads(table.read_text())
    slugs = {"FCN-8s": "fcn8s", "DeconvNet": "deconvnet", "DeconvNet+CRF": "deconvnet_crf",
             "EDeconvNet": "edeconvnet", "EDeconvNet+CRF": "edeconvnet_crf"}  # Table 1's order
    columns = logged_table["columns"]
    assert columns == ["image", *slugs]
    names = class_names(21)
    assert [row[0] for row in logged_table["data"]] == [p.stem for p in images]
    for row in logged_table["data"]:
        for method, cell in zip(columns[1:], row[1:]):
            label = np.asarray(Image.open(out / slugs[method] / f"{row[0]}.png"))
            assert cell == ", ".join(names[c] for c in np.unique(label))


def test_predict_with_logging_disabled_starts_no_run(synthetic_voc, tiny_checkpoints, tmp_path):
    image = sorted((synthetic_voc / "VOCdevkit" / "VOC2012" / "JPEGImages").glob("*.jpg"))[0]
    out = tmp_path / "pred"
    args = _args(synthetic_voc, tiny_checkpoints, tmp_path, "logger.mode=disabled", "crf.enabled=false")
    assert main(["predict", DEMO_EVAL, str(image), "--out", str(out), *args]) == 0
    assert (out / "fcn8s" / f"{image.stem}.png").is_file()
    assert not (out / "wandb").exists()
