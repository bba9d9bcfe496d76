"""PASCAL VOC 2012 segmentation reader: split lists, images, class masks, instances.

The standard tree ``<root>/VOCdevkit/VOC2012``::

    ImageSets/Segmentation/{train,val,trainval,test}.txt   one image id per line
    JPEGImages/<id>.jpg
    SegmentationClass/<id>.png    palette PNG: class ids 0..20, 255 void (object borders)
    SegmentationObject/<id>.png   palette PNG: instance ids 1..N, 0 background, 255 void

Besides the lists in ImageSets/Segmentation there are two SBD-augmented splits; ids only
SBD annotates take their masks from SBD's .mat files (``<root>/benchmark_RELEASE``):

* ``train_aug``: VOC train plus SBD train and val, minus VOC val (10,582 images on the
  real data), for training networks scored on VOC val;
* ``trainval_aug``: VOC trainval plus SBD train and val, nothing held out (12,031 images
  on the real data), for the networks submitted to the test server, as the paper did.

Everything that can be checked without decoding pixels (lists, file existence, image
and mask sizes from the file headers) is checked once, in the constructor; the label
values and the pixel data are checked when an item is decoded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from deconvnet.data import sbd
from deconvnet.data.classes import IGNORE_INDEX, NUM_CLASSES
from deconvnet.data.imageio import image_size, read_index_png, read_rgb
from deconvnet.errors import DataError

VOC_SUBDIR = Path("VOCdevkit") / "VOC2012"
TRAIN_AUG = "train_aug"
TRAINVAL_AUG = "trainval_aug"
AUGMENTED_SPLITS = (TRAIN_AUG, TRAINVAL_AUG)
UNLABELLED_SPLITS = ("test",)  # VOC's test masks are held by the evaluation server

# True at the label values a class mask may hold: the classes and void.
_VALID_LABEL = np.zeros(256, dtype=bool)
_VALID_LABEL[:NUM_CLASSES] = True
_VALID_LABEL[IGNORE_INDEX] = True


@dataclass(frozen=True, eq=False)
class Instance:
    """One annotated object: its class, its tight box and its pixels."""

    class_id: int  # 1..20
    box: np.ndarray  # float32 [x1, y1, x2, y2], x2/y2 exclusive, tight around mask
    mask: np.ndarray  # bool H x W


def tight_box(mask: np.ndarray) -> np.ndarray:
    """float32 [x1, y1, x2, y2] (x2/y2 exclusive) of the True pixels of a non-empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float32)


def voc_folder(root: str | Path) -> Path:
    return Path(root) / VOC_SUBDIR


def _how_to_get(root: Path) -> str:
    return (
        f"Get PASCAL VOC 2012 with `deconvnet download voc2012 --root {root}` (and "
        f"`deconvnet download sbd --root {root}` for train_aug), or make a synthetic set in "
        f"the same layout with `deconvnet synth --root {root}`."
    )


def _file_names(folder: Path) -> set[str]:
    """Names in a folder, listed once (much faster than one stat per id on big splits)."""
    try:
        return set(os.listdir(folder))
    except FileNotFoundError:
        return set()


class SplitReader:
    """What every reader of a split shares (this decoding reader and the decoded store's
    ``store.StoreReader``): its ``split``, ``ids`` (``len``), ``has_labels`` and image files.
    A subclass sets them and decodes ``image(i)``, ``label(i)`` and ``instances(i)``."""

    split: str
    ids: list[str]
    has_labels: bool
    _image_paths: list[Path]

    def __len__(self) -> int:
        return len(self.ids)

    def image_path(self, i: int) -> Path:
        return self._image_paths[i]

    def instance(self, i: int, position: int, label: np.ndarray | None = None) -> Instance:
        """``instances(i, label)[position]`` (a subclass may find it without the others)."""
        return self.instances(i, label)[position]

    def _require_labels(self) -> None:
        if not self.has_labels:
            raise DataError(
                f"split '{self.split}' has no labels (VOC keeps its test masks on the evaluation "
                "server); use it for prediction only, or choose a labelled split such as val"
            )


class VOCSegmentationIndex(SplitReader):
    """Ids and decoders of one split of VOC 2012 (``train_aug`` also reads SBD).

    ``image(i)`` is H x W x 3 uint8 RGB, ``label(i)`` H x W uint8 (0..20, 255 void),
    ``instances(i)`` a list of :class:`Instance`. ``sizes[i]`` is (height, width).
    """

    def __init__(self, root: str | Path, split: str, check_sizes: bool = True) -> None:
        self.root = Path(root)
        self.split = split
        self.voc_dir = voc_folder(self.root)
        if not self.voc_dir.is_dir():
            hint = ""
            if (self.root / "JPEGImages").is_dir():  # a common slip: pointing at VOC2012 itself
                hint = (f"{self.root} looks like the VOC2012 folder itself; give its grandparent "
                        f"{self.root.parent.parent} as the root. ")
            raise DataError(f"VOC 2012 not found: expected the folder {self.voc_dir}. " + hint + _how_to_get(self.root))
        self.ids, sbd_ids = self._read_split()
        self.index_of = {image_id: i for i, image_id in enumerate(self.ids)}
        self._resolve_paths(sbd_ids)
        self.sizes: list[tuple[int, int]] = []
        self.validate(check_sizes)

    # ---- setup -----------------------------------------------------------------------

    def available_splits(self) -> list[str]:
        lists = self.voc_dir / "ImageSets" / "Segmentation"
        names = sorted(p.stem for p in lists.glob("*.txt")) if lists.is_dir() else []
        return names + list(AUGMENTED_SPLITS)

    def _read_list(self, name: str) -> list[str]:
        path = self.voc_dir / "ImageSets" / "Segmentation" / f"{name}.txt"
        if not path.is_file():
            raise DataError(
                f"split list missing: {path} (needed for split '{self.split}'). "
                f"Available splits: {', '.join(self.available_splits())}. " + _how_to_get(self.root)
            )
        ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
        if not ids:
            raise DataError(f"split '{name}' is empty: {path} lists no image ids")
        return ids

    def _read_split(self) -> tuple[list[str], set[str]]:
        """The split's ids, and those whose masks come from SBD."""
        if self.split in AUGMENTED_SPLITS:
            voc_train, voc_val = set(self._read_list("train")), set(self._read_list("val"))
            sbd_all = set(sbd.split_ids(self.root, "train")) | set(sbd.split_ids(self.root, "val"))
            # VOC's own masks where VOC has them; train_aug holds VOC val out entirely
            voc_labelled = voc_train if self.split == TRAIN_AUG else voc_train | voc_val
            held_out = voc_val if self.split == TRAIN_AUG else set()
            ids = sorted((voc_labelled | sbd_all) - held_out)
            return ids, set(ids) - voc_labelled
        if self.split not in self.available_splits():
            raise DataError(
                f"unknown split '{self.split}' in {self.voc_dir / 'ImageSets' / 'Segmentation'}; "
                f"available: {', '.join(self.available_splits())}"
            )
        return self._read_list(self.split), set()

    def _resolve_paths(self, sbd_ids: set[str]) -> None:
        jpeg_dir = self.voc_dir / "JPEGImages"
        jpegs = _file_names(jpeg_dir)
        self._from_sbd = [image_id in sbd_ids for image_id in self.ids]
        self._image_paths = [
            jpeg_dir / f"{i}.jpg" if f"{i}.jpg" in jpegs or not from_sbd else sbd.image_path(self.root, i)
            for i, from_sbd in zip(self.ids, self._from_sbd)
        ]
        self._class_paths = [
            sbd.class_mask_path(self.root, i) if s else self.voc_dir / "SegmentationClass" / f"{i}.png"
            for i, s in zip(self.ids, self._from_sbd)
        ]
        self._object_paths = [
            sbd.instance_mask_path(self.root, i) if s else self.voc_dir / "SegmentationObject" / f"{i}.png"
            for i, s in zip(self.ids, self._from_sbd)
        ]

    def validate(self, check_sizes: bool = True) -> None:
        """Every listed id has its files; image and mask sizes agree (from headers only)."""
        listed = {}  # folder -> names in it, listed once
        def exists(path: Path) -> bool:
            if path.parent not in listed:
                listed[path.parent] = _file_names(path.parent)
            return path.name in listed[path.parent]

        self._check_exist(self._image_paths, "image", exists)
        masks_present = all(exists(p) for p in self._class_paths + self._object_paths)
        self.has_labels = masks_present or self.split not in UNLABELLED_SPLITS
        if self.has_labels:
            self._check_exist(self._class_paths, "class mask", exists)
            self._check_exist(self._object_paths, "object mask", exists)

        self.sizes = []
        progress = tqdm(range(len(self.ids)), desc=f"checking {self.split}", unit="img",
                        disable=len(self.ids) < 2000, leave=False)
        for i in progress:
            width, height = image_size(self._image_paths[i])
            self.sizes.append((height, width))
            if check_sizes and self.has_labels and not self._from_sbd[i]:
                for mask_path in (self._class_paths[i], self._object_paths[i]):
                    self._check_size(mask_path, image_size(mask_path)[::-1], i)

    def _check_exist(self, paths: list[Path], what: str, exists) -> None:
        missing = [p for p in paths if not exists(p)]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise DataError(
                f"split '{self.split}' lists an id without its {what}: {missing[0]} is missing{more}. "
                "Re-extract the dataset or remove the id from the split list."
            )

    def _check_size(self, path: Path, mask_hw: tuple[int, int], i: int) -> None:
        if tuple(mask_hw) != self.sizes[i]:
            (mh, mw), (ih, iw) = mask_hw, self.sizes[i]
            raise DataError(
                f"mask {path} is {mw}x{mh} (WxH) but its image {self._image_paths[i]} is {iw}x{ih}; "
                "a mask must have its image's size"
            )

    # ---- access ------------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"VOCSegmentationIndex(root={str(self.root)!r}, split={self.split!r}, images={len(self)})"

    def image(self, i: int) -> np.ndarray:
        """H x W x 3 uint8 RGB."""
        rgb = read_rgb(self._image_paths[i])
        if rgb.shape[:2] != self.sizes[i]:
            raise DataError(f"image {self._image_paths[i]} changed size since the split was indexed")
        return rgb

    def label(self, i: int) -> np.ndarray:
        """H x W uint8 class ids (0 background, 1..20), 255 void."""
        self._require_labels()
        path = self._class_paths[i]
        labels = sbd.read_class_mask(path) if self._from_sbd[i] else read_index_png(path)
        self._check_size(path, labels.shape, i)
        valid = _VALID_LABEL[labels]
        if not valid.all():
            bad = np.unique(labels[~valid]).tolist()
            raise DataError(
                f"class mask {path} holds values {bad} outside the classes 0..{NUM_CLASSES - 1} "
                f"and {IGNORE_INDEX} (void); fix or regenerate the mask"
            )
        return labels

    def instances(self, i: int, label: np.ndarray | None = None) -> list[Instance]:
        """The annotated objects of image i, in instance-id order.

        label: ``label(i)`` if the caller has already decoded it (saves decoding it twice).
        """
        self._require_labels()
        path = self._object_paths[i]
        if self._from_sbd[i]:
            objects, categories = sbd.read_instance_mask(path)
            self._check_size(path, objects.shape, i)
        else:
            objects = read_index_png(path)
            self._check_size(path, objects.shape, i)  # before it is compared with the class mask
            categories = self._majority_classes(objects, self.label(i) if label is None else label)
        result = []
        for instance_id in np.unique(objects):
            if instance_id == 0 or (instance_id == IGNORE_INDEX and not self._from_sbd[i]):
                continue
            class_id = int(categories[instance_id - 1])
            if not 1 <= class_id < NUM_CLASSES:
                continue  # no object class for this instance (inconsistent masks)
            mask = objects == instance_id
            result.append(Instance(class_id=class_id, box=tight_box(mask), mask=mask))
        return result

    @staticmethod
    def _majority_classes(objects: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Per instance id k (at k-1): the most frequent object class among its pixels, 0 if none."""
        pairs = objects.astype(np.int64) * 256 + labels
        counts = np.bincount(pairs.ravel(), minlength=256 * 256).reshape(256, 256)
        object_counts = counts[1:, 1:NUM_CLASSES]  # void and background excluded
        return np.where(object_counts.sum(1) > 0, object_counts.argmax(1) + 1, 0)
