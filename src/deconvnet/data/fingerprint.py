"""A short identity of the data a run used, so that a result made on other data is noticed.

``data_fingerprint(root, splits)`` -> ``{"root": <dataset id>, "splits": {split: <id>}}``:

- the dataset's id hashes its split lists (``ImageSets/Segmentation/*.txt``), the
  synthetic generator's record (its arguments) when there is one, and the byte sizes of
  the images those lists name: the same files anywhere on disk give the same id, another
  set (another seed, size or image count) a different one;
- a split's id hashes its image ids and the byte size of each image.

Only file names and ``stat`` sizes are read, never pixels, so it costs a directory listing
and one ``stat`` per image.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from deconvnet.data.voc import VOCSegmentationIndex, voc_folder

SYNTHETIC_RECORD = "synthetic.json"  # written by deconvnet.data.synthetic (MARKER)


def _file_size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return -1


def dataset_id(root: str | Path) -> str:
    """The identity of the dataset under ``root`` (see module doc)."""
    voc = voc_folder(root)
    digest = hashlib.sha256()
    lists = voc / "ImageSets" / "Segmentation"
    names: set[str] = set()
    for path in sorted(lists.glob("*.txt")) if lists.is_dir() else []:
        text = path.read_bytes()
        digest.update(path.name.encode() + b"\0" + text + b"\0")
        names.update(line.split()[0] for line in text.decode(errors="replace").splitlines() if line.strip())
    record = voc / SYNTHETIC_RECORD
    if record.is_file():
        digest.update(b"synthetic\0" + record.read_bytes())
    jpegs = voc / "JPEGImages"
    for name in sorted(names):
        digest.update(f"{name}:{_file_size(jpegs / f'{name}.jpg')}\n".encode())
    return digest.hexdigest()[:16]


def split_id(index: VOCSegmentationIndex) -> str:
    """The identity of one opened split: its ids and their image file sizes."""
    digest = hashlib.sha256()
    for i, image_id in enumerate(index.ids):
        digest.update(f"{image_id}:{_file_size(index.image_path(i))}\n".encode())
    return digest.hexdigest()[:16]


def data_fingerprint(root: str | Path, splits: Iterable[str],
                     opened: dict[str, VOCSegmentationIndex] | None = None) -> dict:
    """``{"root": dataset_id(root), "splits": {split: split_id}}`` for ``splits`` of ``root``
    (``opened``: readers already built, reused instead of opening those splits again)."""
    opened = opened or {}
    ids = {}
    for split in dict.fromkeys(str(s) for s in splits):
        index = opened.get(split) or VOCSegmentationIndex(root, split, check_sizes=False)
        ids[split] = split_id(index)
    return {"root": dataset_id(root), "splits": ids}


def describe_difference(recorded: dict, current: dict) -> str:
    """What differs between two fingerprints, in words ('' when they match)."""
    if not recorded or recorded == current:
        return ""
    if recorded.get("root") != current.get("root"):
        return "the dataset (its split lists or image files) differs"
    before = recorded.get("splits", {})
    changed = [s for s in current.get("splits", {}) if before.get(s) not in (None, current["splits"][s])]
    return f"the images of split(s) {', '.join(changed)} differ" if changed else ""
