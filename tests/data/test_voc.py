"""VOC 2012 reader: splits, decoding, instances, and every bad input it must name."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deconvnet.data.imageio import read_index_png, write_index_png
from deconvnet.data.voc import VOCSegmentationIndex, tight_box
from deconvnet.errors import DataError

VOC = Path("VOCdevkit") / "VOC2012"


@pytest.fixture
def voc_copy(synthetic_voc: Path, tmp_path: Path) -> Path:
    """A private copy of the synthetic tree that a test may break."""
    root = tmp_path / "data"
    shutil.copytree(synthetic_voc, root)
    return root


def _list(root: Path, split: str) -> list[str]:
    return (root / VOC / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()


def test_reads_every_split_with_its_images_and_labels(synthetic_voc):
    for split in ("train", "val", "trainval"):
        index = VOCSegmentationIndex(synthetic_voc, split)
        assert index.ids == _list(synthetic_voc, split)
        assert len(index) == len(index.ids) > 0 and index.has_labels
    index = VOCSegmentationIndex(synthetic_voc, "train")
    for i in range(len(index)):
        image, label = index.image(i), index.label(i)
        assert image.dtype == np.uint8 and image.shape == (*index.sizes[i], 3)
        assert label.dtype == np.uint8 and label.shape == index.sizes[i]
        assert set(np.unique(label).tolist()) <= set(range(21)) | {255}
        assert (label == 255).any() and (label > 0).any()
        assert index.index_of[index.ids[i]] == i


def test_labels_are_palette_indices_not_colours(synthetic_voc):
    index = VOCSegmentationIndex(synthetic_voc, "val")
    with Image.open(index._class_paths[0]) as img:
        assert img.mode == "P"
        expected = np.asarray(img)
    assert np.array_equal(index.label(0), expected)


def test_instances_have_tight_boxes_and_majority_classes(synthetic_voc):
    index = VOCSegmentationIndex(synthetic_voc, "trainval")
    total = 0
    for i in range(len(index)):
        label = index.label(i)
        objects = read_index_png(index._object_paths[i])
        instances = index.instances(i)
        ids_in_mask = sorted(set(np.unique(objects).tolist()) - {0, 255})
        assert len(instances) == len(ids_in_mask) >= 1
        union = np.zeros(label.shape, dtype=int)
        for instance_id, inst in zip(ids_in_mask, instances):
            assert inst.mask.dtype == bool and inst.mask.shape == label.shape
            assert np.array_equal(inst.mask, objects == instance_id)
            assert set(np.unique(label[inst.mask]).tolist()) == {inst.class_id}
            x1, y1, x2, y2 = inst.box.tolist()
            assert inst.box.dtype == np.float32
            rows, cols = np.nonzero(inst.mask)
            assert (x1, y1, x2, y2) == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
            union += inst.mask
        assert union.max() == 1  # instances never overlap
        total += len(instances)
    assert total >= len(index)


def test_tight_box_is_exclusive_at_the_far_side():
    mask = np.zeros((10, 12), dtype=bool)
    mask[2:5, 3:9] = True
    assert tight_box(mask).tolist() == [3, 2, 9, 5]
    mask[:] = True
    assert tight_box(mask).tolist() == [0, 0, 12, 10]


def test_unlabelled_test_split(voc_copy):
    voc = voc_copy / VOC
    ids = ["test_000000", "test_000001"]
    for new, old in zip(ids, _list(voc_copy, "val")):
        shutil.copy(voc / "JPEGImages" / f"{old}.jpg", voc / "JPEGImages" / f"{new}.jpg")
    (voc / "ImageSets" / "Segmentation" / "test.txt").write_text("\n".join(ids) + "\n")
    index = VOCSegmentationIndex(voc_copy, "test")
    assert index.ids == ids and not index.has_labels
    assert index.image(1).shape[2] == 3
    with pytest.raises(DataError, match="'test' has no labels"):
        index.label(0)
    with pytest.raises(DataError, match="no labels"):
        index.instances(0)


# ---- bad input --------------------------------------------------------------------------

def test_missing_root_says_where_and_how_to_get_data(tmp_path):
    with pytest.raises(DataError) as err:
        VOCSegmentationIndex(tmp_path / "nowhere", "train")
    message = str(err.value)
    assert str(tmp_path / "nowhere" / VOC) in message
    assert "deconvnet download voc2012 --root" in message and "deconvnet synth --root" in message


def test_root_pointing_at_voc2012_itself_gets_a_hint(synthetic_voc):
    with pytest.raises(DataError, match="looks like the VOC2012 folder itself") as err:
        VOCSegmentationIndex(synthetic_voc / VOC, "train")
    assert str(synthetic_voc) in str(err.value)


def test_unknown_split_lists_the_available_ones(synthetic_voc):
    with pytest.raises(DataError) as err:
        VOCSegmentationIndex(synthetic_voc, "tain")
    assert "'tain'" in str(err.value)
    for name in ("train", "val", "trainval", "train_aug", "trainval_aug"):
        assert name in str(err.value)


def test_empty_split_names_its_list(voc_copy):
    path = voc_copy / VOC / "ImageSets" / "Segmentation" / "val.txt"
    path.write_text("\n \n")
    with pytest.raises(DataError, match="empty") as err:
        VOCSegmentationIndex(voc_copy, "val")
    assert str(path) in str(err.value)


@pytest.mark.parametrize("folder, suffix, what", [
    ("JPEGImages", ".jpg", "image"),
    ("SegmentationClass", ".png", "class mask"),
    ("SegmentationObject", ".png", "object mask"),
])
def test_listed_id_without_its_file(voc_copy, folder, suffix, what):
    image_id = _list(voc_copy, "train")[3]
    missing = voc_copy / VOC / folder / f"{image_id}{suffix}"
    missing.unlink()
    with pytest.raises(DataError, match=f"without its {what}") as err:
        VOCSegmentationIndex(voc_copy, "train")
    assert str(missing) in str(err.value)


def test_mask_of_another_size_names_file_and_sizes(voc_copy):
    image_id = _list(voc_copy, "val")[0]
    path = voc_copy / VOC / "SegmentationClass" / f"{image_id}.png"
    label = read_index_png(path)
    height, width = label.shape
    write_index_png(path, label[:, :-3])
    with pytest.raises(DataError) as err:
        VOCSegmentationIndex(voc_copy, "val")
    message = str(err.value)
    assert str(path) in message and f"{width - 3}x{height}" in message and f"{width}x{height}" in message


def test_label_values_outside_the_classes(voc_copy):
    image_id = _list(voc_copy, "val")[1]
    path = voc_copy / VOC / "SegmentationClass" / f"{image_id}.png"
    label = read_index_png(path)
    label[0, 0], label[1, 1] = 21, 100
    write_index_png(path, label)
    index = VOCSegmentationIndex(voc_copy, "val")  # values are checked on decode
    with pytest.raises(DataError) as err:
        index.label(1)
    assert str(path) in str(err.value) and "[21, 100]" in str(err.value)


def test_colour_mask_instead_of_palette(voc_copy):
    image_id = _list(voc_copy, "val")[0]
    path = voc_copy / VOC / "SegmentationClass" / f"{image_id}.png"
    with Image.open(path) as img:
        img.convert("RGB").save(path)
    index = VOCSegmentationIndex(voc_copy, "val")
    with pytest.raises(DataError, match="palette") as err:
        index.label(0)
    message = str(err.value)
    # what the file is, what is expected, the path once, and not called corrupt
    assert message.count(str(path)) == 1
    assert "is an RGB colour image" in message and "corrupt" not in message
    assert "0..20 and 255" in message and "\n" not in message


def test_corrupt_images_are_named(voc_copy):
    ids = _list(voc_copy, "val")
    garbage = voc_copy / VOC / "JPEGImages" / f"{ids[0]}.jpg"
    original = garbage.read_bytes()
    garbage.write_bytes(b"this is not a jpeg")
    with pytest.raises(DataError) as err:  # unreadable header: caught at setup
        VOCSegmentationIndex(voc_copy, "val")
    assert str(garbage) in str(err.value)

    garbage.write_bytes(original)
    truncated = voc_copy / VOC / "JPEGImages" / f"{ids[1]}.jpg"
    truncated.write_bytes(truncated.read_bytes()[:-600])
    index = VOCSegmentationIndex(voc_copy, "val")  # header still readable
    with pytest.raises(DataError, match="corrupt image") as err:
        index.image(1)
    assert str(truncated) in str(err.value)
