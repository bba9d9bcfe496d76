"""Stage-1, stage-2 and whole-image datasets on the synthetic VOC tree."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
import torch

from deconvnet.config import load_config
from deconvnet.data.classes import IGNORE_INDEX
from deconvnet.data.datasets import (
    ExampleTable,
    InstanceIndex,
    Stage1Dataset,
    Stage2Dataset,
    WholeImageDataset,
    WindowDataset,
    balance_classes,
    pad_collate,
    single_instance_label,
)
from deconvnet.data.proposals import load_proposals
from deconvnet.data.store import open_store
from deconvnet.data.transforms import RandomCropFlip
from deconvnet.data.voc import Instance, SplitReader, VOCSegmentationIndex, tight_box
from deconvnet.data.windows import box_iou, cut_window
from deconvnet.errors import DataError


@pytest.fixture(scope="module")
def train_reader(synthetic_voc):
    return VOCSegmentationIndex(synthetic_voc, "train")


@pytest.fixture(scope="module")
def train_index(train_reader):
    return InstanceIndex.build(train_reader)


def test_instance_index_lists_every_instance(train_reader, train_index):
    total = 0
    for i in range(len(train_reader)):
        instances = train_reader.instances(i)
        rows = train_index.rows_of(i)
        np.testing.assert_array_equal(train_index.boxes[rows], [inst.box for inst in instances])
        assert train_index.class_id[rows].tolist() == [inst.class_id for inst in instances]
        assert (train_index.image_index[rows] == i).all()
        total += len(instances)
    assert len(train_index) == total > len(train_reader)


@pytest.mark.parametrize("source", ["decode", "store"])
def test_stage1_examples_match_instances_one_to_one(train_reader, train_index, source, tmp_path):
    reader = train_reader if source == "decode" else open_store(train_reader, tmp_path / "cache")
    dataset = Stage1Dataset(reader, train_index, context_scale=1.2, balance=False, train=False, crop_size=64)
    assert len(dataset) == len(train_index)
    several_seen = False
    for k in range(len(dataset)):
        i, position = int(dataset.table.image_index[k]), int(dataset.table.instance[k])
        instances = train_reader.instances(i)
        instance = instances[position]
        x1, y1, x2, y2 = instance.box
        half = 0.6 * max(x2 - x1, y2 - y1)  # the square holding the 1.2x box
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        np.testing.assert_allclose(dataset.table.boxes[k], [cx - half, cy - half, cx + half, cy + half],
                                   rtol=1e-5, atol=1e-4)
        item = dataset[k]
        assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.uint8
        assert item["label"].shape == (64, 64) and item["label"].dtype == torch.int64
        values = set(item["label"].unique().tolist())
        assert values <= {0, instance.class_id, IGNORE_INDEX} and instance.class_id in values
        # exactly the label built from this instance alone, cut from the window
        expected = single_instance_label(train_reader.label(i), instance.mask, instance.class_id)
        _, expected = cut_window(train_reader.image(i), dataset.table.boxes[k], 64, expected)
        np.testing.assert_array_equal(item["label"].numpy(), expected)
        # the other instances' pixels are background
        others = np.zeros_like(instance.mask)
        for j, other in enumerate(instances):
            if j != position:
                others |= other.mask
        if others.any():
            several_seen = True
            _, others_cut = cut_window(train_reader.image(i), dataset.table.boxes[k], 64,
                                       others.astype(np.uint8))
            inside = others_cut == 1
            assert (item["label"].numpy()[inside] == 0).all()
    assert several_seen  # the synthetic images have several instances


def test_single_instance_label_rule():
    label = np.array([[0, 3, 3], [255, 5, 5], [3, 255, 0]], np.uint8)
    mask = np.array([[0, 1, 1], [0, 0, 0], [1, 0, 0]], bool)
    np.testing.assert_array_equal(single_instance_label(label, mask, 3),
                                  [[0, 3, 3], [255, 0, 0], [3, 255, 0]])


def test_balancing_makes_class_counts_equal(train_reader, train_index):
    plain = Stage1Dataset(train_reader, train_index, balance=False)
    balanced = Stage1Dataset(train_reader, train_index, balance=True, seed=3)
    counts = plain.table.class_counts()
    balanced_counts = balanced.table.class_counts()
    present = counts > 0
    assert len(set(counts[present].tolist())) > 1  # the test is meaningful: unbalanced before
    assert (balanced_counts[present] == counts.max()).all() and (balanced_counts[~present] == 0).all()
    # every original example is still there, duplicates only add
    originals = {(int(i), int(p)) for i, p in zip(plain.table.image_index, plain.table.instance)}
    kept = {(int(i), int(p)) for i, p in zip(balanced.table.image_index, balanced.table.instance)}
    assert originals == kept


def test_balance_rule_on_a_small_table():
    table = ExampleTable(np.arange(6), np.zeros((6, 4), np.float32), np.zeros(6, np.int64),
                         np.array([1, 1, 1, 1, 1, 2]))
    balanced = balance_classes(table)
    assert balanced.class_counts()[1] == 5 and balanced.class_counts()[2] == 5
    assert (balanced.image_index[balanced.class_id == 2] == 5).all()


def test_stage2_windows_are_square_and_from_proposals_overlapping_ground_truth(
        synthetic_voc, tmp_path, train_reader, train_index):
    cfg = load_config(None, [
        f"data.root={synthetic_voc}", "data.train_split=train", f"data.proposals.cache_dir={tmp_path}",
        "data.proposals.method=ground_truth", "data.proposals.min_size=8", "data.proposals.workers=1",
    ])
    proposals = load_proposals(cfg, "train", reader=train_reader)
    dataset = Stage2Dataset(train_reader, proposals, train_index, iou_threshold=0.5, balance=False,
                            train=False, crop_size=48)
    windows = dataset.proposal_table
    assert len(dataset) == len(windows) > 0  # the paper: proposal windows only
    widths, heights = windows.boxes[:, 2] - windows.boxes[:, 0], windows.boxes[:, 3] - windows.boxes[:, 1]
    np.testing.assert_allclose(widths, heights, rtol=1e-5)
    # every window is the rule's window of a proposal whose box overlaps a GT box >= 0.5
    for k in range(len(windows)):
        i = int(windows.image_index[k])
        boxes = proposals[train_reader.ids[i]]
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        sides = 1.2 * np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        rule = np.concatenate([centres - sides[:, None] / 2, centres + sides[:, None] / 2], axis=1)
        match = np.flatnonzero(np.abs(rule - windows.boxes[k]).max(axis=1) < 1e-3)
        assert len(match) > 0
        gt = train_index.boxes[train_index.rows_of(i)]
        assert box_iou(boxes[match], gt).max() >= 0.5
    assert (windows.instance == -1).all()
    # a stricter threshold keeps a subset; the seed's mix adds the stage-1 examples
    strict = Stage2Dataset(train_reader, proposals, train_index, iou_threshold=0.8, balance=False)
    assert len(strict.proposal_table) < len(windows)
    mixed = Stage2Dataset(train_reader, proposals, train_index, balance=False, include_stage1=True)
    assert len(mixed) == len(train_index) + len(windows)
    # labels: all the classes inside the window
    k = len(dataset) - 1
    i = int(dataset.table.image_index[k])
    _, expected = cut_window(train_reader.image(i), dataset.table.boxes[k], 48, train_reader.label(i))
    np.testing.assert_array_equal(dataset[k]["label"].numpy(), expected)


# ------------------------------------------------------------------ elongated synthetic objects


class _ElongatedReader(SplitReader):
    """Images with axis-aligned elongated objects (1:3 and 4:1), drawn here so that the
    expected windows and ratios can be computed by hand."""

    split, root, has_labels = "train", "elongated", True

    def __init__(self, scenes):
        # scenes: per image, a list of (class_id, [x1, y1, x2, y2]) on a 200 x 160 canvas
        self.scenes = scenes
        self.ids = [f"img{i}" for i in range(len(scenes))]
        self.sizes = [(160, 200)] * len(scenes)

    def __len__(self):
        return len(self.scenes)

    def image(self, i):
        image = np.zeros((160, 200, 3), np.uint8)
        for class_id, (x1, y1, x2, y2) in self.scenes[i]:
            image[y1:y2, x1:x2] = 10 * class_id
        return image

    def label(self, i):
        label = np.zeros((160, 200), np.uint8)
        for class_id, (x1, y1, x2, y2) in self.scenes[i]:
            label[y1:y2, x1:x2] = class_id
        return label

    def instances(self, i, label=None):
        out = []
        for class_id, (x1, y1, x2, y2) in self.scenes[i]:
            mask = np.zeros((160, 200), bool)
            mask[y1:y2, x1:x2] = True
            out.append(Instance(class_id, tight_box(mask), mask))
        return out


# a standing "person" (15) 30 x 90 px and a lying "train" (19) 120 x 30 px
ELONGATED = [[(15, [30, 40, 60, 130])], [(19, [50, 60, 170, 90])], [(15, [120, 20, 150, 110])]]


def _extent(label: np.ndarray, class_id: int) -> tuple[float, float]:
    """(width, height) of a class's pixels through their centre row and column."""
    rows, cols = np.nonzero(label == class_id)
    cy, cx = int(round(rows.mean())), int(round(cols.mean()))
    return float((label[cy] == class_id).sum()), float((label[:, cx] == class_id).sum())


def test_stage1_windows_of_elongated_objects_are_square_hold_the_context_and_keep_the_aspect():
    reader = _ElongatedReader(ELONGATED)
    dataset = Stage1Dataset(reader, balance=False, train=False, crop_size=224)
    assert len(dataset) == 3
    for k in range(3):
        class_id, (x1, y1, x2, y2) = ELONGATED[int(dataset.table.image_index[k])][0]
        wx1, wy1, wx2, wy2 = dataset.table.boxes[k]
        assert wx2 - wx1 == pytest.approx(wy2 - wy1)  # square
        w, h = 1.2 * (x2 - x1), 1.2 * (y2 - y1)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        assert wx1 <= cx - w / 2 + 1e-4 and wy1 <= cy - h / 2 + 1e-4  # holds the 1.2x box
        assert wx2 >= cx + w / 2 - 1e-4 and wy2 >= cy + h / 2 - 1e-4
        width, height = _extent(dataset[k]["label"].numpy(), class_id)
        assert width / height == pytest.approx((x2 - x1) / (y2 - y1), rel=0.02)


def test_a_perfect_proposal_of_a_1_to_3_object_becomes_a_stage2_example():
    reader = _ElongatedReader(ELONGATED[:1])
    box = np.array([[30, 40, 60, 130]], np.float32)  # exactly the person's box
    dataset = Stage2Dataset(reader, {"img0": box}, balance=False, train=False, crop_size=224)
    assert len(dataset) == 1 and dataset.proposal_table.class_id.tolist() == [15]
    np.testing.assert_allclose(dataset.table.boxes[0], [-9, 31, 99, 139])  # centre (45, 85), side 108
    width, height = _extent(dataset[0]["label"].numpy(), 15)
    assert width / height == pytest.approx(1 / 3, rel=0.02)
    # a proposal around the window of the box but not the box itself is judged by its own box
    loose = np.array([[0, 40, 90, 130]], np.float32)  # IoU with the person 1/3
    with pytest.raises(DataError, match="no stage-2 examples"):
        Stage2Dataset(reader, {"img0": loose}, balance=False)


def test_stage2_top_k_and_class_balance():
    reader = _ElongatedReader(ELONGATED)
    person_a, train, person_b = (np.array([s[0][1]], np.float32) for s in ELONGATED)
    jitter = np.array([[1, 0, 1, 0]], np.float32)
    proposals = {  # 6 person proposals, 2 train proposals, 1 miss
        "img0": np.concatenate([person_a, person_a + jitter, person_a - jitter, [[0, 0, 10, 10]]]),
        "img1": np.concatenate([train, train + jitter]),
        "img2": np.concatenate([person_b, person_b + jitter, person_b - jitter]),
    }
    plain = Stage2Dataset(reader, proposals, balance=False)
    assert np.bincount(plain.table.class_id, minlength=21)[[15, 19]].tolist() == [6, 2]
    balanced = Stage2Dataset(reader, proposals, balance=True)
    assert np.bincount(balanced.table.class_id, minlength=21)[[15, 19]].tolist() == [6, 6]
    top2 = Stage2Dataset(reader, proposals, balance=False, top_k=2)
    assert np.bincount(top2.table.class_id, minlength=21)[[15, 19]].tolist() == [4, 2]
    mixed = Stage2Dataset(reader, proposals, balance=True, include_stage1=True)
    # stage-1 part: person 2, train 1 -> balanced to 2 + 2; proposal part 6 + 6
    assert np.bincount(mixed.table.class_id, minlength=21)[[15, 19]].tolist() == [8, 8]


def test_window_leaving_the_image_is_padded(train_reader):
    height, width = train_reader.sizes[0]
    # a square window twice the image's larger side, centred on the image
    side = 2 * max(height, width)
    box = np.array([[width / 2 - side / 2, height / 2 - side / 2, width / 2 + side / 2, height / 2 + side / 2]],
                   np.float32)
    table = ExampleTable(np.zeros(1, np.int64), box, np.full(1, -1, np.int64), np.zeros(1, np.int64))
    item = WindowDataset(train_reader, table, train=False, crop_size=64)[0]
    image, label = item["image"].numpy(), item["label"].numpy()
    # the outer quarter on each side is outside the image
    assert (image[:, :, :15] == 0).all() and (image[:, :15, :] == 0).all()
    assert (label[:, :16] == 255).all() and (label[:16, :] == 255).all()
    assert (label[:, -16:] == 255).all() and (label[-16:, :] == 255).all()
    assert (label[28:36, 28:36] != 255).any()  # the image is in the middle


def test_training_augmentation_crops_and_flips_image_and_label_together():
    rng = np.random.default_rng(0)
    label = rng.integers(0, 21, (250, 250), dtype=np.uint8)
    image = np.stack([label * 10, label, 255 - label], axis=2).astype(np.uint8)
    augment = RandomCropFlip(224)
    torch.manual_seed(0)
    flipped = 0
    for _ in range(12):
        out_image, out_label = augment(image, label)
        assert out_image.shape == (224, 224, 3) and out_label.shape == (224, 224)
        np.testing.assert_array_equal(out_image[:, :, 1], out_label)  # image and label moved together
        flipped += not any(np.array_equal(out_label, label[y:y + 224, x:x + 224])
                           for y in range(27) for x in range(27))
    assert 0 < flipped < 12  # flips happen, but not always
    with pytest.raises(ValueError, match="square window"):
        augment(image[:, :240], label[:, :240])
    with pytest.raises(ValueError, match="square window"):  # a label of another size
        augment(image, label[:240, :240])
    with pytest.raises(ValueError, match="square window"):  # smaller than the crop
        augment(image[:200, :200], label[:200, :200])
    # a window the size of the crop is kept whole, flipped or not
    assert RandomCropFlip().crop_size == 224  # the paper's crop
    whole = {augment(image[:224, :224], label[:224, :224])[1].tobytes() for _ in range(8)}
    assert whole == {label[:224, :224].tobytes(), label[:224, 223::-1].tobytes()}


def test_the_crop_and_the_flip_are_drawn_independently():
    # Each window's row and column index written into it: the output's corner says where the
    # crop was taken and whether it was flipped.
    rows, cols = np.meshgrid(np.arange(250, dtype=np.uint8), np.arange(250, dtype=np.uint8), indexing="ij")
    image, label = np.stack([rows, cols, cols], axis=2), cols.copy()
    augment = RandomCropFlip(224)
    torch.manual_seed(0)
    draws = []
    for _ in range(2000):
        out, _ = augment(image, label)
        flip = out[0, 0, 1] > out[0, -1, 1]
        draws.append((int(out[0, 0, 0]), int(out[0, -1 if flip else 0, 1]), flip))
    y, x, flip = (np.array(v) for v in zip(*draws))
    assert y.min() == x.min() == 0 and y.max() == x.max() == 26  # every offset occurs
    # the flip rate is one half whatever the offsets (albumentations' seeding tied it to y)
    for part in (y < 13, y >= 13, x < 13, x >= 13):
        assert 0.4 < flip[part].mean() < 0.6


def test_torchs_seed_decides_the_augmentation():
    image = np.arange(250 * 250 * 3, dtype=np.uint32).reshape(250, 250, 3).astype(np.uint8)
    label = (np.arange(250 * 250).reshape(250, 250) % 200).astype(np.uint8)
    draws = []
    augment = RandomCropFlip(224)
    for seed in (1, 2, 1):
        torch.manual_seed(seed)
        draws.append([augment(image, label)[1] for _ in range(4)])
    assert any(not np.array_equal(a, b) for a, b in zip(draws[0], draws[1]))
    assert all(np.array_equal(a, b) for a, b in zip(draws[0], draws[2]))  # reproducible per seed
    assert not all(np.array_equal(draws[0][0], d) for d in draws[0][1:])  # each call draws anew


def test_no_instances_is_a_data_error():
    reader = type("EmptyReader", (), {"split": "train", "root": "somewhere", "ids": ["a", "b"],
                                      "has_labels": True, "instances": lambda self, i: [],
                                      "__len__": lambda self: 2})()
    with pytest.raises(DataError, match="no stage-1 examples in split 'train'"):
        Stage1Dataset(reader)
    with pytest.raises(DataError, match="no stage-2 examples in split 'train'"):
        Stage2Dataset(reader, {"a": np.zeros((0, 4)), "b": np.zeros((0, 4))})
    with pytest.raises(DataError, match="no stage-2 examples in split 'train'"):
        Stage2Dataset(reader, {"a": np.zeros((0, 4)), "b": np.zeros((0, 4))}, include_stage1=True)


def test_whole_images_keep_their_size_or_are_capped(train_reader):
    item = WholeImageDataset(train_reader)[1]
    height, width = train_reader.sizes[1]
    assert item["image"].shape == (3, height, width) and item["image"].dtype == torch.uint8
    assert item["label"].shape == (height, width) and item["label"].dtype == torch.int64
    assert item["id"] == train_reader.ids[1] and item["index"] == 1
    np.testing.assert_array_equal(item["label"].numpy(), train_reader.label(1))
    capped = WholeImageDataset(train_reader, max_image_size=64)[1]
    assert max(capped["image"].shape[1:]) == 64 and capped["label"].shape == capped["image"].shape[1:]
    assert set(capped["label"].unique().tolist()) <= set(np.unique(train_reader.label(1)).tolist())


def test_unlabelled_split_gives_void_labels(synthetic_voc, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(synthetic_voc, root)
    voc = root / "VOCdevkit" / "VOC2012"
    shutil.copy(voc / "JPEGImages" / "synth_000000.jpg", voc / "JPEGImages" / "test_000001.jpg")
    (voc / "ImageSets" / "Segmentation" / "test.txt").write_text("test_000001\n")
    item = WholeImageDataset(VOCSegmentationIndex(root, "test"))[0]
    assert item["id"] == "test_000001" and (item["label"] == 255).all()
    assert item["label"].shape == item["image"].shape[1:]


def test_pad_collate_pads_image_0_and_label_255():
    items = [{"image": torch.ones(3, 4, 6, dtype=torch.uint8), "label": torch.zeros(4, 6, dtype=torch.int64),
              "id": "a", "index": 0},
             {"image": torch.ones(3, 5, 3, dtype=torch.uint8), "label": torch.zeros(5, 3, dtype=torch.int64),
              "id": "b", "index": 1}]
    batch = pad_collate(items)
    assert batch["image"].shape == (2, 3, 5, 6) and batch["label"].shape == (2, 5, 6)
    assert (batch["image"][0, :, 4] == 0).all() and (batch["label"][0, 4] == 255).all()
    assert (batch["image"][1, :, :, 3:] == 0).all() and (batch["label"][1, :, 3:] == 255).all()
    assert batch["id"] == ["a", "b"] and batch["index"].tolist() == [0, 1]


def test_window_size_below_crop_size_is_refused(train_reader, train_index):
    from deconvnet.errors import UserError

    with pytest.raises(UserError, match="data.window_size"):
        Stage1Dataset(train_reader, train_index, window_size=200, crop_size=224)


def test_setup_logs_the_examples_per_stage_and_class(caplog):
    reader = _ElongatedReader(ELONGATED)
    proposals = {f"img{i}": np.array([scene[0][1]], np.float32) for i, scene in enumerate(ELONGATED)}
    with caplog.at_level(logging.INFO, logger="deconvnet"):
        Stage1Dataset(reader, balance=True)
        Stage2Dataset(reader, proposals, balance=True, include_stage1=True)
    messages = [r.getMessage() for r in caplog.records]
    assert "stage 1, split train: 4 examples (person 2, train 2)" in messages
    assert "stage 2, split train: proposal windows 4 examples (person 2, train 2); 3 before balancing" in messages
    assert "stage 2, split train: stage-1 windows 4 examples (person 2, train 2)" in messages
