"""SBD .mat reading and the train_aug split (VOC train + SBD train/val - VOC val)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from deconvnet.data import sbd
from deconvnet.data.imageio import read_index_png
from deconvnet.data.voc import VOCSegmentationIndex
from deconvnet.errors import DataError

VOC = Path("VOCdevkit") / "VOC2012"


def _list(root: Path, split: str) -> list[str]:
    return (root / VOC / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()


def write_annotation(root: Path, image_id: str, class_mask: np.ndarray,
                     instance_mask: np.ndarray, categories: list[int]) -> None:
    """cls/<id>.mat and inst/<id>.mat in SBD's structure (MATLAB v5, as SBD ships them)."""
    present = np.unique(class_mask[class_mask > 0]).astype(np.uint8)
    for kind, struct in (
        ("cls", {"GTcls": {"Segmentation": np.asarray(class_mask, np.uint8),
                           "CategoriesPresent": present}}),
        ("inst", {"GTinst": {"Segmentation": np.asarray(instance_mask, np.uint8),
                             "Categories": np.asarray(categories, np.uint8).reshape(-1, 1)}}),
    ):
        target = sbd.sbd_folder(root) / kind / f"{image_id}.mat"
        target.parent.mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(target, struct, do_compression=True)


def _sbd_masks_from(root: Path, image_id: str) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """SBD-style masks (no void) made from a synthetic image's VOC masks."""
    classes = read_index_png(root / VOC / "SegmentationClass" / f"{image_id}.png")
    objects = read_index_png(root / VOC / "SegmentationObject" / f"{image_id}.png")
    classes[classes == 255] = 0
    objects[objects == 255] = 0
    categories = [int(np.bincount(classes[objects == k]).argmax()) for k in range(1, objects.max() + 1)]
    return classes, objects, categories


@pytest.fixture
def with_sbd(synthetic_voc: Path, tmp_path: Path) -> dict:
    """A copy of the synthetic tree plus a fake SBD that overlaps VOC train and val and adds
    three ids of its own (two with images only in SBD's img/ folder)."""
    root = tmp_path / "data"
    shutil.copytree(synthetic_voc, root)
    voc = root / VOC
    train, val = _list(root, "train"), _list(root, "val")
    new_ids = ["sbd_000001", "sbd_000002", "sbd_000003"]
    sources = {}
    for new, source in zip(new_ids, val[-3:]):
        sources[new] = source
        target = voc / "JPEGImages" / f"{new}.jpg" if new == "sbd_000001" else sbd.image_path(root, new)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(voc / "JPEGImages" / f"{source}.jpg", target)
        write_annotation(root, new, *_sbd_masks_from(root, source))
    # SBD also annotates VOC ids; for VOC train ids VOC's own masks (with void) must win
    blank = np.zeros_like(read_index_png(voc / "SegmentationClass" / f"{train[0]}.png"))
    for image_id in train[:6] + val[:2]:
        write_annotation(root, image_id, blank, blank, [])
    sbd_train = train[:4] + val[:1] + new_ids[:2]
    sbd_val = train[4:6] + val[1:2] + new_ids[2:]
    folder = sbd.sbd_folder(root)
    (folder / "train.txt").write_text("\n".join(sbd_train) + "\n")
    (folder / "val.txt").write_text("\n".join(sbd_val) + "\n")
    return {"root": root, "train": train, "val": val, "new": new_ids, "sources": sources,
            "sbd_train": sbd_train, "sbd_val": sbd_val}


def test_mat_round_trip(tmp_path):
    classes = np.array([[0, 0, 3], [0, 15, 15]], dtype=np.uint8)
    objects = np.array([[0, 0, 1], [0, 2, 2]], dtype=np.uint8)
    write_annotation(tmp_path, "x", classes, objects, [3, 15])
    assert np.array_equal(sbd.read_class_mask(sbd.class_mask_path(tmp_path, "x")), classes)
    seg, categories = sbd.read_instance_mask(sbd.instance_mask_path(tmp_path, "x"))
    assert np.array_equal(seg, objects) and categories.tolist() == [3, 15]
    # one instance: MATLAB files squeeze Categories to a scalar; still a list of one
    write_annotation(tmp_path, "y", classes, (objects > 0).astype(np.uint8), [7])
    assert sbd.read_instance_mask(sbd.instance_mask_path(tmp_path, "y"))[1].tolist() == [7]


def test_train_aug_composition(with_sbd):
    d = with_sbd
    index = VOCSegmentationIndex(d["root"], "train_aug")
    expected = (set(d["train"]) | set(d["sbd_train"]) | set(d["sbd_val"])) - set(d["val"])
    assert index.ids == sorted(expected)
    assert not set(index.ids) & set(d["val"])
    assert len(index) == len(d["train"]) + 3

    for image_id in d["new"]:  # SBD-only ids: masks from the .mat files
        i = index.index_of[image_id]
        source_classes, source_objects, categories = _sbd_masks_from(d["root"], d["sources"][image_id])
        assert index.image(i).shape[:2] == index.sizes[i] == source_classes.shape
        assert np.array_equal(index.label(i), source_classes)
        instances = index.instances(i)
        assert [inst.class_id for inst in instances] == categories
        for k, inst in enumerate(instances, start=1):
            assert np.array_equal(inst.mask, source_objects == k)
            rows, cols = np.nonzero(inst.mask)
            assert inst.box.tolist() == [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
    assert str(index.image_path(index.index_of["sbd_000002"])).endswith("img/sbd_000002.jpg")

    for image_id in d["train"][:6]:  # VOC train ids keep VOC's masks (void borders, objects)
        i = index.index_of[image_id]
        assert (index.label(i) == 255).any() and len(index.instances(i)) >= 1


def test_trainval_aug_holds_nothing_out(with_sbd):
    """The test-server training set: VOC trainval + SBD train/val, VOC's masks where VOC has them."""
    d = with_sbd
    index = VOCSegmentationIndex(d["root"], "trainval_aug")
    expected = set(d["train"]) | set(d["val"]) | set(d["sbd_train"]) | set(d["sbd_val"])
    assert index.ids == sorted(expected)
    assert len(index) == len(d["train"]) + len(d["val"]) + 3
    for image_id in d["val"][:2] + d["train"][:2]:  # SBD's blank masks for these must not win
        i = index.index_of[image_id]
        assert (index.label(i) == 255).any() and len(index.instances(i)) >= 1
    i = index.index_of["sbd_000003"]  # an SBD-only id: masks from the .mat files
    assert np.array_equal(index.label(i), _sbd_masks_from(d["root"], d["sources"]["sbd_000003"])[0])


def test_train_aug_without_sbd_says_how_to_get_it(synthetic_voc):
    with pytest.raises(DataError, match="deconvnet download sbd --root") as err:
        VOCSegmentationIndex(synthetic_voc, "train_aug")
    assert str(synthetic_voc / "benchmark_RELEASE" / "dataset") in str(err.value)


def test_missing_sbd_annotation_is_named(with_sbd):
    path = sbd.instance_mask_path(with_sbd["root"], "sbd_000003")
    path.unlink()
    with pytest.raises(DataError, match="without its object mask") as err:
        VOCSegmentationIndex(with_sbd["root"], "train_aug")
    assert str(path) in str(err.value)


def test_missing_sbd_list_is_named(with_sbd):
    path = sbd.sbd_folder(with_sbd["root"]) / "val.txt"
    path.unlink()
    with pytest.raises(DataError, match="SBD split list missing") as err:
        VOCSegmentationIndex(with_sbd["root"], "train_aug")
    assert str(path) in str(err.value)


def test_broken_mat_files_are_named(with_sbd):
    root = with_sbd["root"]
    index = VOCSegmentationIndex(root, "train_aug")
    i = index.index_of["sbd_000001"]
    corrupt = sbd.class_mask_path(root, "sbd_000001")
    corrupt.write_bytes(b"MATLAB 5.0 MAT-file, but then nothing")
    with pytest.raises(DataError, match="corrupt SBD annotation") as err:
        index.label(i)
    assert str(corrupt) in str(err.value)

    wrong = sbd.instance_mask_path(root, "sbd_000001")
    scipy.io.savemat(wrong, {"GTcls": {"Segmentation": np.zeros((2, 2), np.uint8)}})
    with pytest.raises(DataError, match="no 'GTinst' struct") as err:
        sbd.read_instance_mask(wrong)
    assert str(wrong) in str(err.value)

    small = sbd.class_mask_path(root, "sbd_000002")
    write_annotation(root, "sbd_000002", np.zeros((5, 5), np.uint8), np.zeros((5, 5), np.uint8), [])
    with pytest.raises(DataError, match="5x5") as err:
        index.label(index.index_of["sbd_000002"])
    assert str(small) in str(err.value)
