"""The synthetic VOC set: VOC layout (torchvision reads it), determinism, annotations,
void bands, class coverage, colour separability, and atomic, non-destructive writing."""

from __future__ import annotations

import colorsys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torchvision

from deconvnet.cli import main as cli_main
from deconvnet.data import synthetic
from deconvnet.data.classes import VOC_CLASSES
from deconvnet.data.imageio import read_index_png
from deconvnet.data.synthetic import CLASS_STYLES, generate
from deconvnet.data.voc import VOCSegmentationIndex
from deconvnet.errors import DataError

VOC = Path("VOCdevkit") / "VOC2012"


@pytest.fixture(scope="module")
def larger_set(tmp_path_factory) -> Path:
    """200 small images: enough for class statistics."""
    root = tmp_path_factory.mktemp("synthetic200")
    generate(root, num_images=200, seed=1, size=64)
    return root


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _hue(rgb) -> float:
    return colorsys.rgb_to_hsv(*(np.asarray(rgb, float) / 255))[0]


def test_torchvision_reads_the_tree_unchanged(synthetic_voc):
    ours = VOCSegmentationIndex(synthetic_voc, "train")
    theirs = torchvision.datasets.VOCSegmentation(synthetic_voc, year="2012", image_set="train",
                                                  download=False)
    assert len(theirs) == len(ours)
    for i in range(len(ours)):
        image, target = theirs[i]
        height, width = ours.sizes[i]
        assert image.size == target.size == (width, height)
        values = np.asarray(target)
        assert set(np.unique(values).tolist()) <= set(range(21)) | {255}
        assert np.array_equal(values, ours.label(i))
        assert np.array_equal(np.asarray(image), ours.image(i))

    detection = torchvision.datasets.VOCDetection(synthetic_voc, year="2012", image_set="val",
                                                  download=False)
    val = VOCSegmentationIndex(synthetic_voc, "val")
    _, annotation = detection[0]
    names = [obj["name"] for obj in annotation["annotation"]["object"]]
    assert names == [VOC_CLASSES[inst.class_id] for inst in val.instances(0)]


def test_layout_sizes_and_splits(synthetic_voc):
    voc = synthetic_voc / VOC
    lists = {s: (voc / "ImageSets/Segmentation" / f"{s}.txt").read_text().split()
             for s in ("train", "val", "trainval")}
    assert len(lists["trainval"]) == 24 and set(lists["train"]).isdisjoint(lists["val"])
    assert sorted(lists["train"] + lists["val"]) == lists["trainval"]
    assert len(lists["val"]) == 7  # val_fraction 0.3
    assert (voc / "ImageSets/Main/dog_train.txt").is_file()
    for image_id in lists["trainval"]:
        for sub, ext in (("JPEGImages", "jpg"), ("SegmentationClass", "png"),
                         ("SegmentationObject", "png"), ("Annotations", "xml")):
            assert (voc / sub / f"{image_id}.{ext}").is_file()
    index = VOCSegmentationIndex(synthetic_voc, "trainval")
    assert all(max(hw) == 128 for hw in index.sizes)
    assert {hw[0] > hw[1] for hw in index.sizes} == {True, False}  # portrait and landscape


def test_default_sizes_are_voc_like(tmp_path):
    generate(tmp_path, num_images=3, seed=0)
    index = VOCSegmentationIndex(tmp_path, "trainval")
    for height, width in index.sizes:
        assert max(height, width) == 500 and min(height, width) in (333, 375, 400)


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    generate(tmp_path / "a", num_images=5, seed=3, size=64)
    generate(tmp_path / "b", num_images=5, seed=3, size=64)
    generate(tmp_path / "c", num_images=5, seed=4, size=64)
    a, b, c = (_files(tmp_path / x) for x in "abc")
    assert a == b
    assert a.keys() == c.keys()
    jpegs = [k for k in a if k.endswith(".jpg")]
    assert len(jpegs) == 5 and all(a[k] != c[k] for k in jpegs)


def test_annotations_agree_with_the_masks(synthetic_voc):
    index = VOCSegmentationIndex(synthetic_voc, "trainval")
    for i, image_id in enumerate(index.ids):
        root = ET.parse(synthetic_voc / VOC / "Annotations" / f"{image_id}.xml").getroot()
        height, width = index.sizes[i]
        assert (int(root.findtext("size/width")), int(root.findtext("size/height"))) == (width, height)
        objects = root.findall("object")
        instances = index.instances(i)
        assert 1 <= len(instances) == len(objects) <= 4
        image = index.image(i)
        for obj, inst in zip(objects, instances):
            assert obj.findtext("name") == VOC_CLASSES[inst.class_id]
            # XML boxes are 1-based inclusive; they hold the object with its void border
            xml_box = np.array([float(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")])
            xml_box[:2] -= 1
            assert (xml_box[:2] <= inst.box[:2]).all() and (xml_box[2:] >= inst.box[2:]).all()
            assert np.abs(xml_box - inst.box).max() <= 0.05 * max(height, width)  # thin tips go void
            # the pixels really have the class's colour (hue survives the texture's shading)
            hue = _hue(np.median(image[inst.mask], axis=0))
            distance = np.abs(hue - np.array([_hue(style.colour) for style in CLASS_STYLES]))
            assert np.minimum(distance, 1 - distance).argmin() + 1 == inst.class_id


def _check_void_band(objects: np.ndarray, radius: int) -> None:
    """Two different regions never come closer than `radius` pixels without void between."""
    height, width = objects.shape
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            a = objects[max(0, dy):height + min(0, dy), max(0, dx):width + min(0, dx)]
            b = objects[max(0, -dy):height + min(0, -dy), max(0, -dx):width + min(0, -dx)]
            touching = (a != b) & (a != 255) & (b != 255)
            assert not touching.any(), f"regions touch at offset ({dy}, {dx})"


def test_void_bands_separate_objects_from_their_surroundings(synthetic_voc, tmp_path):
    index = VOCSegmentationIndex(synthetic_voc, "trainval")
    for i in range(len(index)):
        objects = read_index_png(index._object_paths[i])
        assert (objects == 255).any()
        assert np.array_equal(objects == 255, index.label(i) == 255)
        _check_void_band(objects, radius=1)
    # VOC-sized images get a VOC-like band, about 5 px wide
    generate(tmp_path, num_images=2, seed=0)
    big = VOCSegmentationIndex(tmp_path, "trainval")
    _check_void_band(read_index_png(big._object_paths[0]), radius=2)


def test_every_class_is_well_covered_with_large_occluded_objects(larger_set):
    coverage = {}
    large = occluded = truncated = images = 0
    for split in ("train", "val"):
        index = VOCSegmentationIndex(larger_set, split)
        counts = np.zeros(21, dtype=int)
        for i in range(len(index)):
            instances = index.instances(i)
            for class_id in {inst.class_id for inst in instances}:
                counts[class_id] += 1
            boxes = np.stack([inst.box for inst in instances])
            longest = (boxes[:, 2:] - boxes[:, :2]).max()
            large += longest >= 0.4 * min(index.sizes[i])
            images += 1
        coverage[split] = counts
    for image_xml in (larger_set / VOC / "Annotations").glob("*.xml"):
        text = image_xml.read_text()
        occluded += "<occluded>1</occluded>" in text
        truncated += "<truncated>1</truncated>" in text
    assert coverage["train"][1:].min() >= 7 and coverage["val"][1:].min() >= 3
    assert large >= 0.9 * images
    assert occluded >= 0.2 * images and truncated >= 0.2 * images


def test_classes_are_separable_by_colour_alone(larger_set):
    """Learnability floor: a per-pixel rule (grey -> background, else nearest class hue)
    already scores a high mean IoU on val, so a network with shape and texture does better."""
    hues = np.array([_hue(style.colour) for style in CLASS_STYLES])
    index = VOCSegmentationIndex(larger_set, "val")
    confusion = np.zeros((21, 21), dtype=np.int64)
    for i in range(len(index)):
        rgb = index.image(i).reshape(-1, 3).astype(np.float64) / 255
        label = index.label(i).reshape(-1)
        high, low = rgb.max(1), rgb.min(1)
        chroma = np.maximum(high - low, 1e-6)
        r, g, b = rgb.T
        hue = np.where(high == r, ((g - b) / chroma) % 6,
                       np.where(high == g, (b - r) / chroma + 2, (r - g) / chroma + 4)) / 6
        distance = np.abs(hue[:, None] - hues[None])
        nearest = np.minimum(distance, 1 - distance).argmin(1) + 1
        prediction = np.where(chroma / np.maximum(high, 1e-6) > 0.5, nearest, 0)
        keep = label != 255
        np.add.at(confusion, (label[keep], prediction[keep]), 1)
    tp = np.diag(confusion)
    iou = tp / (confusion.sum(0) + confusion.sum(1) - tp)
    assert iou.mean() > 0.9 and iou.min() > 0.75


def test_existing_trees_are_kept_or_refused(tmp_path):
    target = generate(tmp_path, num_images=3, seed=0, size=48)
    before = _files(target)
    assert generate(tmp_path, num_images=3, seed=0, size=48) == target  # same arguments: kept
    assert _files(target) == before
    with pytest.raises(DataError, match="refusing to overwrite"):
        generate(tmp_path, num_images=3, seed=1, size=48)
    (target / "synthetic.json").unlink()
    with pytest.raises(DataError, match="not this generator's"):
        generate(tmp_path, num_images=3, seed=0, size=48)


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    calls = []
    real = synthetic.write_jpeg

    def failing_write(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(synthetic, "write_jpeg", failing_write)
    with pytest.raises(KeyboardInterrupt):
        generate(tmp_path, num_images=5, seed=0, size=48)
    assert list((tmp_path / "VOCdevkit").iterdir()) == []
    monkeypatch.setattr(synthetic, "write_jpeg", real)
    assert generate(tmp_path, num_images=5, seed=0, size=48).is_dir()


def test_cli_synth(tmp_path, capsys):
    assert cli_main(["synth", "--root", str(tmp_path), "--images", "4", "--size", "48", "--seed", "2"]) == 0
    lists = tmp_path / VOC / "ImageSets" / "Segmentation"
    assert len((lists / "trainval.txt").read_text().split()) == 4
    assert cli_main(["synth", "--root", str(tmp_path / "x"), "--images", "1"]) == 2
    assert "--images must be at least 2" in capsys.readouterr().err
