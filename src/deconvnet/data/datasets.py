"""Training and evaluation datasets: stage-1 instance windows, stage-2 proposal windows,
whole images.

Examples are rows of an :class:`ExampleTable` (parallel numpy arrays: image, window box,
kept instance), built once at setup from an :class:`InstanceIndex` of the split's
annotated objects; items are decoded on demand through
:class:`~deconvnet.data.voc.VOCSegmentationIndex`.

Every window comes from :func:`~deconvnet.data.windows.make_windows`, the rule inference
uses too: the box enlarged ``context_scale`` (1.2) times about its centre, then the
smallest square holding it (``square``), padded where it leaves the image.

* Stage 1 (PAPER.md, "Training data"): one window per annotated instance, around its
  tight box. Only that instance keeps its class; the other objects' pixels become
  background (0); void stays 255. Class balancing by duplication (:func:`balance_classes`).
* Stage 2: the top ``train_top_k`` proposals of each image (the caller passes them) whose
  box itself has IoU >= ``iou_threshold`` with some ground-truth instance box, each cut by
  the same window rule; labels are all the class labels inside the window; balanced on the
  class of the best-overlapping instance. ``include_stage1`` adds the stage-1 examples
  (the seed's reading of the paper; the paper's own default is proposals only).
* Whole images: for FCN-8s training and for evaluation.

Every window item is a dict ``{"image": uint8 3 x s x s, "label": int64 s x s}``; training
windows are cut to ``window_size`` (250) then randomly cropped to ``crop_size`` (224) and
flipped, validation windows are cut straight to ``crop_size`` (as inference cuts them).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from deconvnet.config import ConfigError
from deconvnet.data.classes import IGNORE_INDEX, NUM_CLASSES, VOC_CLASSES
from deconvnet.data.transforms import RandomCropFlip, to_tensors
from deconvnet.data.windows import box_iou, cut_mask, cut_window, make_windows
from deconvnet.errors import DataError

log = logging.getLogger(__name__)

# -------------------------------------------------------------------------- instance index


@dataclass(frozen=True)
class InstanceIndex:
    """Every annotated instance of a split: image index, position in ``reader.instances(i)``,
    class id and tight box (float32 [x1, y1, x2, y2])."""

    image_index: np.ndarray  # int64 [M], sorted
    position: np.ndarray  # int64 [M]
    class_id: np.ndarray  # int64 [M]
    boxes: np.ndarray  # float32 [M, 4]
    starts: np.ndarray  # int64 [num_images + 1]: image i owns rows starts[i]:starts[i + 1]

    def __len__(self) -> int:
        return len(self.image_index)

    def rows_of(self, i: int) -> slice:
        return slice(int(self.starts[i]), int(self.starts[i + 1]))

    @classmethod
    def build(cls, reader, threads: int = 8) -> InstanceIndex:
        """Read every image's instances once (threads: PNG decoding releases the GIL)."""
        if not reader.has_labels:
            raise DataError(f"split '{reader.split}' has no labels, so it has no instances to train on")

        def boxes_and_classes(i: int) -> tuple[np.ndarray, np.ndarray]:
            instances = reader.instances(i)
            boxes = np.array([inst.box for inst in instances], np.float32).reshape(-1, 4)
            return boxes, np.array([inst.class_id for inst in instances], np.int64)

        with ThreadPoolExecutor(max(1, threads)) as pool:
            results = list(tqdm(pool.map(boxes_and_classes, range(len(reader))), total=len(reader),
                                desc=f"indexing instances of {reader.split}", unit="img",
                                disable=len(reader) < 500, leave=False))
        counts = np.array([len(c) for _, c in results], np.int64)
        return cls(
            image_index=np.repeat(np.arange(len(reader), dtype=np.int64), counts),
            position=np.concatenate([np.arange(n, dtype=np.int64) for n in counts] + [np.zeros(0, np.int64)]),
            class_id=np.concatenate([c for _, c in results] + [np.zeros(0, np.int64)]),
            boxes=np.concatenate([b for b, _ in results] + [np.zeros((0, 4), np.float32)]),
            starts=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        )


# ---------------------------------------------------------------------------- example table


@dataclass(frozen=True)
class ExampleTable:
    """One row per training example: the image, the window box, and which instance alone
    keeps its class (``instance`` = position in ``reader.instances(i)``, or -1: all labels).
    ``class_id`` is the class of the instance (stage 1) or of the best-overlapping instance
    (proposal windows); it is used for balancing and statistics."""

    image_index: np.ndarray  # int64 [N]
    boxes: np.ndarray  # float32 [N, 4] window boxes in image coordinates
    instance: np.ndarray  # int64 [N]
    class_id: np.ndarray  # int64 [N]

    def __len__(self) -> int:
        return len(self.image_index)

    def take(self, rows: np.ndarray) -> ExampleTable:
        return ExampleTable(self.image_index[rows], self.boxes[rows], self.instance[rows], self.class_id[rows])

    @staticmethod
    def concat(*tables: ExampleTable) -> ExampleTable:
        return ExampleTable(*(np.concatenate([getattr(t, f) for t in tables])
                              for f in ("image_index", "boxes", "instance", "class_id")))

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.class_id, minlength=NUM_CLASSES)


def stage1_examples(index: InstanceIndex, context_scale: float = 1.2, square: bool = True) -> ExampleTable:
    """One example per instance: the window of its tight box (:func:`make_windows`)."""
    return ExampleTable(index.image_index.copy(), make_windows(index.boxes, context_scale, square).reshape(-1, 4),
                        index.position.copy(), index.class_id.copy())


def balance_classes(table: ExampleTable, seed: int = 0) -> ExampleTable:
    """Duplicate examples so that every class present has as many as the most frequent one.

    Rule: a class with n examples and a target of T (the largest class count) gets each of
    its examples floor(T / n) times, plus T mod n of them once more, chosen at random
    (seeded). Classes without examples stay absent.
    """
    counts = table.class_counts()
    target = int(counts.max()) if len(table) else 0
    rng = np.random.default_rng(seed)
    rows = []
    for class_id in np.flatnonzero(counts):
        members = np.flatnonzero(table.class_id == class_id)
        repeats, extra = divmod(target, len(members))
        rows.append(np.tile(members, repeats))
        rows.append(rng.choice(members, size=extra, replace=False))
    return table.take(np.sort(np.concatenate(rows)) if rows else np.zeros(0, np.int64))


def proposal_examples(reader, index: InstanceIndex, proposals: dict[str, np.ndarray],
                      iou_threshold: float = 0.5, top_k: int | None = None,
                      context_scale: float = 1.2, square: bool = True,
                      extended: bool = False) -> ExampleTable:
    """Stage-2 examples: each of the first ``top_k`` proposals of an image (all when None)
    whose box has IoU >= ``iou_threshold`` with some ground-truth instance box (the proposal
    box itself, as the paper: the window's context does not count), cut by the window rule
    (:func:`make_windows`); ``class_id`` is the class of the best-overlapping instance.

    ``extended``: the proposals are windows already (the official cached boxes): they are
    not enlarged again, and they are compared with the ground-truth boxes' windows (like
    with like, as the raw proposal box is not known)."""
    proposal_scale = 1.0 if extended else context_scale
    parts = []
    for i, image_id in enumerate(reader.ids):
        boxes = proposals.get(image_id)
        if boxes is None:
            raise DataError(f"no proposals for image '{image_id}' of split '{reader.split}'")
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)[:top_k]
        rows = index.rows_of(i)
        gt = index.boxes[rows]
        if len(boxes) == 0 or len(gt) == 0:
            continue
        if extended:
            gt = make_windows(gt, context_scale, square)
        iou = box_iou(boxes, gt)
        keep = iou.max(axis=1) >= iou_threshold
        if keep.any():
            best = iou[keep].argmax(axis=1)
            parts.append(ExampleTable(np.full(int(keep.sum()), i, np.int64),
                                      make_windows(boxes[keep], proposal_scale, square),
                                      np.full(int(keep.sum()), -1, np.int64),
                                      index.class_id[rows][best]))
    if not parts:
        return ExampleTable(np.zeros(0, np.int64), np.zeros((0, 4), np.float32),
                            np.zeros(0, np.int64), np.zeros(0, np.int64))
    return ExampleTable.concat(*parts)


def single_instance_label(label: np.ndarray, mask: np.ndarray, class_id: int) -> np.ndarray:
    """Stage-1 label: the instance keeps ``class_id``, void stays 255, everything else is 0."""
    return np.where(mask, np.uint8(class_id), np.where(label == IGNORE_INDEX, np.uint8(IGNORE_INDEX), np.uint8(0)))


# ------------------------------------------------------------------------------- datasets


def check_window_size(window_size: int, crop_size: int) -> None:
    """Training windows are cut at ``window_size``, then cropped to ``crop_size``."""
    if int(window_size) < int(crop_size):
        raise ConfigError(f"data.window_size ({window_size}) must be >= data.crop_size ({crop_size}): "
                          "windows are resized to window_size, then cropped to crop_size")


class WindowDataset(Dataset):
    """Windows of an :class:`ExampleTable`, cut, resized and (for training) augmented."""

    def __init__(self, reader, table: ExampleTable, train: bool = True,
                 window_size: int = 250, crop_size: int = 224) -> None:
        check_window_size(window_size, crop_size)
        self.reader, self.table, self.train = reader, table, train
        self.window_size, self.crop_size = int(window_size), int(crop_size)
        self.augment = RandomCropFlip(self.crop_size) if train else None

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        i, box = int(self.table.image_index[k]), self.table.boxes[k]
        size = self.window_size if self.train else self.crop_size
        full_label = self.reader.label(i)
        image, label = cut_window(self.reader.image(i), box, size, full_label)
        position = int(self.table.instance[k])
        if position >= 0:
            # The stage-1 rule applied to the window, not the whole image: cutting is nearest
            # for both, and the rule is per pixel (outside the image: void, not the instance).
            instance = self.reader.instance(i, position, full_label)  # label passed: decoded once
            label = single_instance_label(label, cut_mask(instance.mask, box, size), instance.class_id)
        if self.augment is not None:
            image, label = self.augment(image, label)
        image_t, label_t = to_tensors(image, label)
        return {"image": image_t, "label": label_t}


def _no_examples(reader, what: str) -> DataError:
    return DataError(
        f"no {what} in split '{reader.split}' of {reader.root}: its {len(reader)} images have no "
        "annotated object instances (SegmentationObject masks with object ids of classes 1..20)"
    )


def class_summary(table: ExampleTable) -> str:
    """'N examples: class n, ...' for the log."""
    counts = table.class_counts()
    per_class = ", ".join(f"{VOC_CLASSES[c]} {counts[c]}" for c in np.flatnonzero(counts))
    return f"{len(table)} examples ({per_class})"


class Stage1Dataset(WindowDataset):
    """One window per annotated instance (the window rule around its tight box), optionally
    class-balanced."""

    def __init__(self, reader, index: InstanceIndex | None = None, context_scale: float = 1.2,
                 square: bool = True, balance: bool = True, train: bool = True, window_size: int = 250,
                 crop_size: int = 224, seed: int = 0) -> None:
        self.index = index if index is not None else InstanceIndex.build(reader)
        table = stage1_examples(self.index, context_scale, square)
        if len(table) == 0:
            raise _no_examples(reader, "stage-1 examples")
        if balance:
            table = balance_classes(table, seed)
        if train:
            log.info("stage 1, split %s: %s", reader.split, class_summary(table))
        super().__init__(reader, table, train, window_size, crop_size)


class Stage2Dataset(WindowDataset):
    """Stage 2 (PAPER.md, "Training data"): the windows of the top ``top_k`` proposals that
    overlap a ground-truth instance (IoU of the proposal box >= ``iou_threshold``), all class
    labels inside, class-balanced (``balance``) on the best-overlapping instance's class.
    ``include_stage1``: the stage-1 examples too (balanced on their own, as in stage 1).
    ``extended``: see :func:`proposal_examples`.

    ``proposal_table`` holds the proposal examples before balancing; ``stage1_table`` the
    stage-1 examples used (empty unless ``include_stage1``)."""

    def __init__(self, reader, proposals: dict[str, np.ndarray], index: InstanceIndex | None = None,
                 iou_threshold: float = 0.5, context_scale: float = 1.2, square: bool = True,
                 balance: bool = True, include_stage1: bool = False, top_k: int | None = None,
                 extended: bool = False, train: bool = True, window_size: int = 250,
                 crop_size: int = 224, seed: int = 0) -> None:
        self.index = index if index is not None else InstanceIndex.build(reader)
        self.proposal_table = proposal_examples(reader, self.index, proposals, iou_threshold, top_k,
                                                context_scale, square, extended)
        if len(self.proposal_table) == 0 and not include_stage1:
            raise DataError(
                f"no stage-2 examples in split '{reader.split}' of {reader.root}: none of its proposals "
                f"has IoU >= data.iou_threshold={iou_threshold} with an annotated instance; check the "
                "proposals (data.proposals.*), lower the threshold, or set data.stage2_include_stage1=true"
            )
        proposal_part = balance_classes(self.proposal_table, seed) if balance else self.proposal_table
        self.stage1_table = (stage1_examples(self.index, context_scale, square) if include_stage1
                             else self.proposal_table.take(np.zeros(0, np.int64)))
        if include_stage1 and len(self.stage1_table) == 0:
            raise _no_examples(reader, "stage-2 examples")
        stage1_part = balance_classes(self.stage1_table, seed) if balance else self.stage1_table
        if train:
            log.info("stage 2, split %s: proposal windows %s; %d before balancing", reader.split,
                     class_summary(proposal_part), len(self.proposal_table))
            if include_stage1:
                log.info("stage 2, split %s: stage-1 windows %s", reader.split, class_summary(stage1_part))
        super().__init__(reader, ExampleTable.concat(stage1_part, proposal_part), train, window_size, crop_size)


class WholeImageDataset(Dataset):
    """Whole images with their labels (all 255 for a split without labels), id and index.

    ``max_image_size``: when set, images are resized (bilinear; labels nearest) so that the
    longer side is at most this; None keeps the original size (always so for evaluation).
    """

    def __init__(self, reader, max_image_size: int | None = None) -> None:
        if len(reader) == 0:
            raise DataError(f"split '{reader.split}' of {reader.root} has no images")
        self.reader = reader
        self.max_image_size = int(max_image_size) if max_image_size else None

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, i: int) -> dict:
        image = self.reader.image(i)
        if self.reader.has_labels:
            label = self.reader.label(i)
        else:
            label = np.full(image.shape[:2], IGNORE_INDEX, np.uint8)
        if self.max_image_size and max(image.shape[:2]) > self.max_image_size:
            scale = self.max_image_size / max(image.shape[:2])
            size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
            label = cv2.resize(label, size, interpolation=cv2.INTER_NEAREST)
        image_t, label_t = to_tensors(image, label)
        return {"image": image_t, "label": label_t, "id": self.reader.ids[i], "index": i}


def pad_collate(items: list[dict]) -> dict:
    """Batch images of different sizes: pad at the bottom/right (image 0, label 255)."""
    height = max(item["image"].shape[1] for item in items)
    width = max(item["image"].shape[2] for item in items)
    images = torch.zeros((len(items), 3, height, width), dtype=torch.uint8)
    labels = torch.full((len(items), height, width), IGNORE_INDEX, dtype=torch.int64)
    for b, item in enumerate(items):
        _, h, w = item["image"].shape
        images[b, :, :h, :w] = item["image"]
        labels[b, :h, :w] = item["label"]
    batch = {"image": images, "label": labels}
    if "id" in items[0]:
        batch["id"] = [item["id"] for item in items]
        batch["index"] = torch.tensor([item["index"] for item in items], dtype=torch.int64)
    return batch
