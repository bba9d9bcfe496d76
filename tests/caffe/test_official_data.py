"""data.source=official: the release's stage-1/2 lists read directly; deconvnet windows-report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deconvnet.config import ConfigError, load_config
from deconvnet.data.datamodules import build_datamodule
from deconvnet.data.imageio import read_index_png, read_rgb, write_index_png, write_jpeg
from deconvnet.data.official import official_list, windows_report
from deconvnet.data.voc import VOCSegmentationIndex
from deconvnet.errors import DataError

CROP = 32


def make_release(synthetic_voc: Path, root: Path) -> dict:
    """A tiny release tree in the official layout, built from the synthetic set.

    stage 1: VOC_OBJECT crops of CROP x CROP with one object's class (others background);
    stage 2: VOC2012_SEG_AUG images with CROP x CROP windows (0-based inclusive), some
    crossing the image border.
    """
    reader = VOCSegmentationIndex(synthetic_voc, "train")
    images = root / "VOC2012"
    stage1, stage2 = [], []
    for folder in ("VOC2012_SEG_AUG/images", "VOC2012_SEG_AUG/segmentations", "VOC_OBJECT/images", "VOC_OBJECT/labels"):
        (images / folder).mkdir(parents=True)
    for i in range(6):
        image, label = reader.image(i), reader.label(i)
        image_id = reader.ids[i]
        seg = images / "VOC2012_SEG_AUG"
        write_jpeg(seg / "images" / f"{image_id}.jpg", image, quality=100)
        write_index_png(seg / "segmentations" / f"{image_id}.png", label)
        h, w = label.shape
        for x1, y1 in ((0, 0), (w - CROP // 2, 5), (-7, h - CROP + 3)):
            stage2.append(f"/VOC2012_SEG_AUG/images/{image_id}.jpg /VOC2012_SEG_AUG/segmentations/"
                          f"{image_id}.png {x1} {y1} {x1 + CROP - 1} {y1 + CROP - 1}")
        for j, inst in enumerate(reader.instances(i, label)[:2]):
            crop_label = np.where(label == 255, 255, 0).astype(np.uint8)
            crop_label[inst.mask] = inst.class_id
            name = f"{image_id}_{j}"
            write_jpeg(images / "VOC_OBJECT" / "images" / f"{name}.jpg", image[:CROP, :CROP], quality=100)
            write_index_png(images / "VOC_OBJECT" / "labels" / f"{name}.png", crop_label[:CROP, :CROP])
            stage1.append(f"/VOC_OBJECT/images/{name}.jpg /VOC_OBJECT/labels/{name}.png")
    for folder, lines in (("stage_1_train_imgset", stage1), ("stage_2_train_imgset", stage2)):
        (root / "imagesets" / folder).mkdir(parents=True)
        for split in ("train", "val"):
            (root / "imagesets" / folder / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return {"stage1": stage1, "stage2": stage2}


@pytest.fixture
def release(synthetic_voc, tmp_path):
    root = tmp_path / "official"
    lines = make_release(synthetic_voc, root)
    return root, lines


def _cfg(synthetic_voc, root, kind, *extra):
    return load_config(None, [f"data.root={synthetic_voc}", f"data.official_root={root}", "data.source=official",
                              f"data.kind={kind}", f"data.crop_size={CROP}", f"data.window_size={CROP + 8}",
                              "data.batch_size=4", "data.num_workers=0", *extra])


def test_stage2_windows_are_the_listed_pixels_padded_with_0_and_255(synthetic_voc, release):
    root, lines = release
    dm = build_datamodule(_cfg(synthetic_voc, root, "stage2"))
    dm.setup("fit")
    assert len(dm.train_set) == len(lines["stage2"]) and len(dm.val_set) == len(lines["stage2"])
    for k in (0, 1, 2):
        img_rel, lab_rel, *coords = lines["stage2"][k].split()
        x1, y1, x2, y2 = (int(c) for c in coords)
        image = read_rgb(root / "VOC2012" / img_rel.lstrip("/"))
        label = read_index_png(root / "VOC2012" / lab_rel.lstrip("/"))
        m = 64  # an independent crop: pad by hand, slice the inclusive window
        padded_image = np.pad(image, ((m, m), (m, m), (0, 0)))
        padded_label = np.pad(label, m, constant_values=255)
        item = dm.val_set[k]
        np.testing.assert_array_equal(item["image"].numpy().transpose(1, 2, 0),
                                      padded_image[y1 + m:y2 + m + 1, x1 + m:x2 + m + 1])
        np.testing.assert_array_equal(item["label"].numpy(), padded_label[y1 + m:y2 + m + 1, x1 + m:x2 + m + 1])


def test_stage1_crops_and_training_batches(synthetic_voc, release):
    root, lines = release
    dm = build_datamodule(_cfg(synthetic_voc, root, "stage1"))
    dm.setup("fit")
    img_rel, lab_rel = lines["stage1"][0].split()
    item = dm.val_set[0]  # a CROP x CROP crop: resized to CROP, i.e. unchanged
    np.testing.assert_array_equal(item["image"].numpy().transpose(1, 2, 0), read_rgb(root / "VOC2012" / img_rel[1:]))
    np.testing.assert_array_equal(item["label"].numpy(), read_index_png(root / "VOC2012" / lab_rel[1:]))
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, CROP, CROP) and batch["label"].shape == (4, CROP, CROP)
    assert set(np.unique(batch["label"].numpy())) <= set(range(21)) | {255}


def test_bad_lists_give_one_clear_line(synthetic_voc, release, tmp_path):
    root, _ = release
    listing = root / "imagesets" / "stage_2_train_imgset" / "train.txt"
    listing.write_text(listing.read_text() + "/a.jpg /a.png 1 2 3\n")
    cfg = _cfg(synthetic_voc, root, "stage2")
    with pytest.raises(DataError, match=r"train.txt, line 19: expected 6 fields"):
        official_list(cfg, "stage2", "train")
    with pytest.raises(DataError, match="official training list not found"):
        official_list(_cfg(synthetic_voc, tmp_path / "nowhere", "stage1"), "stage1", "train")
    with pytest.raises(ConfigError, match="data.source=releases is not one of the allowed values: voc, official"):
        _cfg(synthetic_voc, root, "stage1", "data.source=releases")


def test_windows_report_puts_both_sources_side_by_side(synthetic_voc, release):
    root, lines = release
    report = windows_report(_cfg(synthetic_voc, root, "stage1", "data.train_split=train"))
    assert "ours (train)" in report and "official (stage_1_train_imgset/train.txt)" in report
    total = next(line for line in report.splitlines() if line.strip().startswith("total"))
    assert int(total.split()[-1]) == len(lines["stage1"])  # one example per listed crop
    side = report.splitlines()[report.splitlines().index("window side sqrt(w*h), px of the original image") + 4]
    assert side.split()[0] == "median" and float(side.split()[-1]) == CROP  # every official crop is CROP px
