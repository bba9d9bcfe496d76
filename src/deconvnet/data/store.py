"""The decoded store of a split: every image and mask decoded once into memory-mapped uint8
arrays, so that training reads pixels instead of decoding JPEGs and PNGs per window.

Layout under ``data.cache_dir`` (default ``<data.root>/cache``), one set per split and key::

    <split>-<key>.images.u8   all images, H x W x 3 RGB each, back to back
    <split>-<key>.class.u8    all class masks, H x W each (0..20, 255 void)
    <split>-<key>.object.u8   all object masks, H x W each: the instance's position + 1 in
                              ``instances(i)`` (0: no instance), so instance p is ``== p + 1``
    <split>-<key>.index.npz   ids, sizes, byte offsets, every instance's class and tight box
    <split>-<key>.json        the completion marker, written last

The key is a hash of the split's file list with every file's size and modification time
(and this format's version): a changed, added or removed file gives another key, and the
store is rebuilt with a warning (the old files of the split are then deleted). Every file
is written under a temporary name and renamed into place; the marker comes last, so a store
without its marker is never read. Building holds an exclusive lock file (``fcntl.flock``):
when several processes (DDP ranks, DataLoader workers) ask at once, the first builds and
the others wait, then open the finished store.

:class:`StoreReader` has the interface of :class:`~deconvnet.data.voc.VOCSegmentationIndex`
(``ids``, ``image(i)``, ``label(i)``, ``instances(i, label=None)``, ``sizes``, ...), so the
datasets work unchanged on it. Its arrays are read-only memory maps, opened lazily in each
process (pickling a reader to a worker sends only paths), so every worker and every rank
of a node shares one copy in the page cache. VOC ``train_aug`` takes about 10 GB decoded.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from deconvnet.data.voc import Instance, SplitReader, VOCSegmentationIndex
from deconvnet.errors import DataError

log = logging.getLogger(__name__)

STORE_VERSION = 1
KINDS = ("images", "class", "object")  # the memory-mapped arrays, one file each
MAX_INSTANCES = 254  # object masks hold position + 1 in a uint8


# ------------------------------------------------------------------------------ the key


def source_files(reader: VOCSegmentationIndex) -> list[Path]:
    """Every file the split's store is decoded from: images, then class and object masks."""
    files = [reader.image_path(i) for i in range(len(reader))]
    if reader.has_labels:
        files += [reader._class_paths[i] for i in range(len(reader))]
        files += [reader._object_paths[i] for i in range(len(reader))]
    return files


def store_key(reader: VOCSegmentationIndex) -> str:
    """16 hex digits naming the split's content: its ids and every source file's name,
    size and modification time (nanoseconds), and the store format's version."""
    digest = hashlib.sha256(f"v{STORE_VERSION}\n{reader.split}\n{reader.has_labels}\n".encode())
    for path in source_files(reader):
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            raise DataError(f"missing file: {path} (listed by split '{reader.split}')") from None
        digest.update(f"{path.parent.name}/{path.name}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------------------- the files


class StorePaths:
    """The file names of one split's store with one key."""

    def __init__(self, cache_dir: str | Path, split: str, key: str) -> None:
        self.cache_dir, self.split, self.key = Path(cache_dir), split, key
        self.stem = f"{split}-{key}"

    def array(self, kind: str) -> Path:
        return self.cache_dir / f"{self.stem}.{kind}.u8"

    @property
    def index(self) -> Path:
        return self.cache_dir / f"{self.stem}.index.npz"

    @property
    def marker(self) -> Path:
        return self.cache_dir / f"{self.stem}.json"

    @property
    def lock(self) -> Path:
        return self.cache_dir / f"{self.split}.lock"

    def complete(self) -> bool:
        """True when the marker exists and names this key (it is written after everything else)."""
        try:
            return json.loads(self.marker.read_text()).get("key") == self.key
        except (OSError, ValueError):
            return False

    def others(self) -> list[Path]:
        """Files of this split's stores with other keys (stale ones)."""
        prefix = f"{self.split}-"
        return [p for p in self.cache_dir.glob(f"{prefix}*")
                if not p.name.startswith(self.stem) and len(p.name) > len(prefix) + 16
                and p.name[len(prefix) + 16] == "." and _is_hex(p.name[len(prefix):len(prefix) + 16])]


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


@contextlib.contextmanager
def _exclusive(lock_path: Path):
    """Hold an exclusive lock on ``lock_path`` (blocks while another process holds it)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------- building


def _offsets(sizes: list[tuple[int, int]], channels: int) -> np.ndarray:
    """int64 [N + 1] start of each item in a flat array of items of H x W x channels bytes."""
    counts = np.array([h * w * channels for h, w in sizes], dtype=np.int64)
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def _object_mask(instances: list[Instance], shape: tuple[int, int], path: str) -> np.ndarray:
    if len(instances) > MAX_INSTANCES:
        raise DataError(f"{path}: {len(instances)} instances; the store holds at most {MAX_INSTANCES} per image")
    objects = np.zeros(shape, np.uint8)
    for position, instance in enumerate(instances):
        objects[instance.mask] = position + 1
    return objects


def build_store(reader: VOCSegmentationIndex, paths: StorePaths, threads: int = 4) -> None:
    """Decode every image (and mask) of ``reader`` into the files of ``paths``, atomically."""
    paths.cache_dir.mkdir(parents=True, exist_ok=True)
    n = len(reader)
    image_offsets = _offsets(reader.sizes, 3)
    mask_offsets = _offsets(reader.sizes, 1)
    kinds = KINDS if reader.has_labels else ("images",)
    temps = {kind: _temp_name(paths.array(kind)) for kind in kinds}
    instances_of: list[list[Instance]] = [[] for _ in range(n)]
    try:
        arrays = {}
        for kind in kinds:
            total = int(image_offsets[-1] if kind == "images" else mask_offsets[-1])
            arrays[kind] = np.memmap(temps[kind], dtype=np.uint8, mode="w+", shape=(max(1, total),))

        def decode(i: int) -> None:
            h, w = reader.sizes[i]
            arrays["images"][image_offsets[i]:image_offsets[i + 1]] = reader.image(i).reshape(-1)
            if reader.has_labels:
                label = reader.label(i)
                instances = reader.instances(i, label)
                arrays["class"][mask_offsets[i]:mask_offsets[i + 1]] = label.reshape(-1)
                objects = _object_mask(instances, (h, w), str(reader.image_path(i)))
                arrays["object"][mask_offsets[i]:mask_offsets[i + 1]] = objects.reshape(-1)
                instances_of[i] = instances

        with ThreadPoolExecutor(max(1, threads)) as pool:  # PIL decoding releases the GIL
            for _ in tqdm(pool.map(decode, range(n)), total=n, unit="img",
                          desc=f"decoding {reader.split} into {paths.cache_dir}"):
                pass
        for kind in kinds:
            arrays[kind].flush()
        arrays.clear()  # closes the memory maps before the files are renamed
        counts = np.array([len(x) for x in instances_of], np.int64)
        index_temp = _temp_name(paths.index)
        with open(index_temp, "wb") as f:
            np.savez(
                f, ids=np.array(reader.ids), sizes=np.array(reader.sizes, np.int64).reshape(-1, 2),
                image_offsets=image_offsets, mask_offsets=mask_offsets,
                instance_starts=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
                instance_class=np.array([x.class_id for xs in instances_of for x in xs], np.int64),
                instance_boxes=np.array([x.box for xs in instances_of for x in xs], np.float32).reshape(-1, 4),
                has_labels=np.array(reader.has_labels),
            )
        temps["index"] = index_temp
        for kind in kinds:
            os.replace(temps[kind], paths.array(kind))
        os.replace(index_temp, paths.index)
        marker_temp = _temp_name(paths.marker)
        marker_temp.write_text(json.dumps({"version": STORE_VERSION, "split": reader.split,
                                           "key": paths.key, "images": n}))
        os.replace(marker_temp, paths.marker)  # last: the store is complete from here on
    finally:
        for temp in temps.values():
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()


def open_store(reader: VOCSegmentationIndex, cache_dir: str | Path, threads: int = 4) -> StoreReader:
    """The store of ``reader``'s split, built first if missing or stale (one process builds,
    the others wait on the lock)."""
    paths = StorePaths(cache_dir, reader.split, store_key(reader))
    if not paths.complete():
        with _exclusive(paths.lock):
            if not paths.complete():  # another process may have built it while we waited
                stale = paths.others()
                if any(p.suffix == ".json" for p in stale):
                    log.warning("the decoded store of split '%s' in %s is stale (its files changed); "
                                "rebuilding it", reader.split, paths.cache_dir)
                else:
                    log.info("building the decoded store of split '%s' in %s", reader.split, paths.cache_dir)
                build_store(reader, paths, threads)
                for old in stale:
                    with contextlib.suppress(FileNotFoundError):
                        old.unlink()
    return StoreReader(reader, paths)


def cache_from_config(cfg) -> list[StoreReader]:
    """``deconvnet cache``: the stores of data.train_split, data.val_split and eval.split
    under data.cache_dir, each built unless complete and current."""
    splits = dict.fromkeys(str(s) for s in (cfg.data.train_split, cfg.data.val_split, cfg.eval.split))
    return [open_store(VOCSegmentationIndex(cfg.data.root, split), cfg.data.cache_dir) for split in splits]


# ---------------------------------------------------------------------------- reading


class StoreReader(SplitReader):
    """A split read from its decoded store, with the interface of ``VOCSegmentationIndex``.

    ``image(i)`` (H x W x 3), ``label(i)`` and ``object_mask(i)`` (H x W) are read-only
    uint8 views of the memory maps: copy before writing. ``instances(i)`` gives the same
    instances, in the same order, as the decoding reader.
    """

    def __init__(self, source: VOCSegmentationIndex, paths: StorePaths) -> None:
        self.root, self.split = source.root, source.split
        self.ids = list(source.ids)
        self.index_of = dict(source.index_of)
        self.sizes = list(source.sizes)
        self.has_labels = bool(source.has_labels)
        self._image_paths = [source.image_path(i) for i in range(len(source))]
        self.paths = paths
        with np.load(paths.index) as index:
            sizes = np.array(self.sizes).reshape(-1, 2)
            if list(index["ids"]) != self.ids or not np.array_equal(index["sizes"], sizes):
                raise DataError(f"decoded store {paths.index} does not match split '{self.split}'; "
                                f"delete {paths.cache_dir} to rebuild it")
            self._image_offsets = index["image_offsets"]
            self._mask_offsets = index["mask_offsets"]
            self.instance_starts = index["instance_starts"]
            self.instance_class = index["instance_class"]
            self.instance_boxes = index["instance_boxes"]
        self._arrays: dict[str, np.ndarray] = {}

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_arrays"] = {}  # memory maps are reopened in each process, never pickled
        return state

    def array(self, kind: str) -> np.ndarray:
        """The whole flat read-only memory map of one kind (images, class, object)."""
        if kind not in self._arrays:
            if kind != "images":
                self._require_labels()
            self._arrays[kind] = np.memmap(self.paths.array(kind), dtype=np.uint8, mode="r")
        return self._arrays[kind]

    def offsets(self, kind: str) -> np.ndarray:
        """int64 [N + 1] start of each image's bytes in ``array(kind)``."""
        return self._image_offsets if kind == "images" else self._mask_offsets

    def __repr__(self) -> str:
        return f"StoreReader(split={self.split!r}, images={len(self)}, store={str(self.paths.marker)!r})"

    def image(self, i: int) -> np.ndarray:
        """H x W x 3 uint8 RGB (read-only)."""
        h, w = self.sizes[i]
        return self.array("images")[self._image_offsets[i]:self._image_offsets[i + 1]].reshape(h, w, 3)

    def label(self, i: int) -> np.ndarray:
        """H x W uint8 class ids (0 background, 1..20), 255 void (read-only)."""
        h, w = self.sizes[i]
        return self.array("class")[self._mask_offsets[i]:self._mask_offsets[i + 1]].reshape(h, w)

    def object_mask(self, i: int) -> np.ndarray:
        """H x W uint8: instance position + 1 (0 where no instance) (read-only)."""
        h, w = self.sizes[i]
        return self.array("object")[self._mask_offsets[i]:self._mask_offsets[i + 1]].reshape(h, w)

    def instances(self, i: int, label: np.ndarray | None = None) -> list[Instance]:
        """The annotated objects of image i, in the decoding reader's order (``label`` unused)."""
        count = int(self.instance_starts[i + 1] - self.instance_starts[i])
        return [self.instance(i, position) for position in range(count)]

    def instance(self, i: int, position: int, label: np.ndarray | None = None) -> Instance:
        """Object ``position`` of image i alone: only its own mask is computed."""
        row = int(self.instance_starts[i]) + position
        return Instance(class_id=int(self.instance_class[row]), box=self.instance_boxes[row].copy(),
                        mask=self.object_mask(i) == position + 1)
