"""#13 item 7: the full data check decodes every image and mask and reports every bad file."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deconvnet.cli import main
from deconvnet.config import load_config
from deconvnet.data.check import check_data
from deconvnet.errors import DataError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def broken_voc(synthetic_voc, tmp_path) -> tuple[Path, dict[str, Path]]:
    """A copy of the session's synthetic set with three bad files that headers do not show."""
    root = tmp_path / "voc"
    shutil.copytree(synthetic_voc, root)
    voc = root / "VOCdevkit" / "VOC2012"
    train = (voc / "ImageSets/Segmentation/train.txt").read_text().split()
    val = (voc / "ImageSets/Segmentation/val.txt").read_text().split()
    bad = {
        "truncated": voc / "JPEGImages" / f"{train[0]}.jpg",
        "label37": voc / "SegmentationClass" / f"{train[1]}.png",
        "object_size": voc / "SegmentationObject" / f"{val[0]}.png",
    }
    data = bad["truncated"].read_bytes()
    bad["truncated"].write_bytes(data[: len(data) // 2])  # the header survives, the pixels do not
    with Image.open(bad["label37"]) as img:
        labels = np.array(img)
        palette = img.getpalette()
    labels[0, 0] = 37  # not a class, not void
    out = Image.fromarray(labels)
    out.putpalette(palette)
    out.save(bad["label37"])
    with Image.open(bad["object_size"]) as img:
        smaller = img.crop((0, 0, img.width - 4, img.height))
        smaller.save(bad["object_size"])
    return root, bad


def _cfg(root: Path, *extra: str):
    return load_config(REPO / "experiments/table1/stage1.yaml",
                       [f"data.root={root}", "data.train_split=train", "data.val_split=val", *extra])


def test_headers_alone_pass_what_decoding_finds(broken_voc):
    root, _ = broken_voc
    cfg = _cfg(root)  # data.check=headers, the default: the object mask is only read for train
    counts = check_data(cfg, splits=["train"])
    assert counts == {"train": 17}


@pytest.mark.parametrize("workers", [1, 2])
def test_full_check_reports_every_bad_file_at_once(broken_voc, workers):
    root, bad = broken_voc
    with pytest.raises(DataError) as caught:
        check_data(_cfg(root, "data.check=full"), workers=workers)
    message = str(caught.value)
    assert "found 3 bad file(s)" in message
    assert f"corrupt image file {bad['truncated']}" in message
    assert f"class mask {bad['label37']} holds values [37]" in message
    assert f"mask {bad['object_size']} is" in message and "must have its image's size" in message


def test_pipeline_full_flag_runs_the_full_check(broken_voc, capsys):
    root, bad = broken_voc
    code = main(["pipeline", "--steps", "data", "--full", str(REPO / "experiments/table1"),
                 f"data.root={root}", "data.train_split=train", "data.val_split=val"])
    assert code == 2
    err = capsys.readouterr().err.split("\r")[-1]  # after the progress bars
    assert "\ndeconvnet pipeline: error: the full data check found 3 bad file(s)" in err
    assert "Traceback" not in err and all(str(p) in err for p in bad.values())


def test_a_clean_set_passes_the_full_check(synthetic_voc):
    counts = check_data(_cfg(synthetic_voc, "data.check=full"), workers=1)
    assert counts == {"train": 17, "val": 7}
