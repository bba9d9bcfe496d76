"""The decoded store: same pixels and instances as the decoding reader, atomic, keyed by the
files (stale stores are rebuilt), one builder at a time, cheap to send to loader workers."""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from deconvnet.data import store as store_module
from deconvnet.data.store import StorePaths, StoreReader, open_store, store_key
from deconvnet.data.voc import VOCSegmentationIndex


@pytest.fixture
def copy_voc(synthetic_voc, tmp_path) -> Path:
    root = tmp_path / "voc"
    shutil.copytree(synthetic_voc, root)
    return root


def test_store_gives_what_the_decoding_reader_gives(synthetic_voc, tmp_path):
    voc = VOCSegmentationIndex(synthetic_voc, "train")
    stored = open_store(voc, tmp_path / "cache")
    assert isinstance(stored, StoreReader)
    assert stored.ids == voc.ids and stored.sizes == voc.sizes and stored.split == "train"
    assert stored.has_labels and stored.root == voc.root and stored.index_of == voc.index_of
    assert stored.image_path(3) == voc.image_path(3) and len(stored) == len(voc)
    for i in range(len(voc)):
        assert np.array_equal(stored.image(i), voc.image(i))
        assert np.array_equal(stored.label(i), voc.label(i))
        ours, theirs = stored.instances(i), voc.instances(i)
        assert [x.class_id for x in ours] == [x.class_id for x in theirs]
        for position, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            assert np.array_equal(a.box, b.box) and np.array_equal(a.mask, b.mask)
            alone = stored.instance(i, position)  # one instance without the others: the same
            assert alone.class_id == b.class_id and np.array_equal(alone.box, b.box)
            assert np.array_equal(alone.mask, b.mask)
    with pytest.raises(ValueError):  # read-only views: the store is never written through
        stored.image(0)[0, 0, 0] = 1
    files = sorted(p.name for p in (tmp_path / "cache").iterdir())
    key = store_key(voc)
    assert files == sorted([f"train-{key}.{k}.u8" for k in ("images", "class", "object")]
                           + [f"train-{key}.index.npz", f"train-{key}.json", "train.lock"])
    # the flat files are exactly the decoded bytes, back to back
    total = sum(h * w for h, w in voc.sizes)
    assert os.path.getsize(tmp_path / "cache" / f"train-{key}.images.u8") == 3 * total


def test_both_readers_name_each_ids_image_file(synthetic_voc, tmp_path):
    voc = VOCSegmentationIndex(synthetic_voc, "val")
    jpegs = synthetic_voc / "VOCdevkit" / "VOC2012" / "JPEGImages"
    ids = (synthetic_voc / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    for reader in (voc, open_store(voc, tmp_path / "cache")):
        assert len(reader) == len(ids) == 7
        assert [reader.image_path(i) for i in range(len(reader))] == [jpegs / f"{i}.jpg" for i in ids]


def test_unlabelled_split_stores_images_only(synthetic_voc, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(synthetic_voc, root)
    voc = root / "VOCdevkit" / "VOC2012"
    shutil.copy(voc / "JPEGImages" / "synth_000000.jpg", voc / "JPEGImages" / "test_000001.jpg")
    (voc / "ImageSets" / "Segmentation" / "test.txt").write_text("test_000001\n")
    stored = open_store(VOCSegmentationIndex(root, "test"), tmp_path / "cache")
    assert not stored.has_labels
    assert np.array_equal(stored.image(0), VOCSegmentationIndex(root, "train").image(0))
    from deconvnet.errors import DataError
    with pytest.raises(DataError, match="no labels"):
        stored.label(0)


def test_a_store_without_its_marker_is_rebuilt(synthetic_voc, tmp_path, monkeypatch):
    voc = VOCSegmentationIndex(synthetic_voc, "val")
    paths = StorePaths(tmp_path, "val", store_key(voc))
    open_store(voc, tmp_path)
    paths.marker.unlink()  # as if killed before the last rename
    paths.array("images").write_bytes(b"\0" * paths.array("images").stat().st_size)  # garbage
    stored = open_store(voc, tmp_path)
    assert paths.complete() and np.array_equal(stored.image(1), voc.image(1))
    # complete: opened again without decoding anything
    monkeypatch.setattr(store_module, "build_store", lambda *a, **k: pytest.fail("rebuilt"))
    open_store(voc, tmp_path)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_changed_files_make_the_store_stale(copy_voc, tmp_path, caplog):
    voc = VOCSegmentationIndex(copy_voc, "train")
    old = StorePaths(tmp_path / "cache", "train", store_key(voc))
    open_store(voc, tmp_path / "cache")
    # replace one image by another image's pixels (same size class, new mtime and content)
    from deconvnet.data.imageio import write_jpeg
    replaced = np.ascontiguousarray(voc.image(0)[::-1])
    write_jpeg(voc.image_path(0), replaced)
    os.utime(voc.image_path(0), ns=(1, 1))  # a modification time the old key cannot have
    voc = VOCSegmentationIndex(copy_voc, "train")
    with caplog.at_level(logging.WARNING, logger="deconvnet.data.store"):
        stored = open_store(voc, tmp_path / "cache")
    assert "stale" in caplog.text
    assert stored.paths.key != old.key and np.array_equal(stored.image(0), voc.image(0))
    assert not old.marker.exists() and not old.array("images").exists()  # old files deleted


def test_pickled_reader_carries_paths_not_pixels(synthetic_voc, tmp_path):
    stored = open_store(VOCSegmentationIndex(synthetic_voc, "train"), tmp_path)
    stored.image(0)  # opens the memory map
    data = pickle.dumps(stored)
    assert len(data) < 20_000  # the images alone are far larger
    again = pickle.loads(data)
    assert np.array_equal(again.image(2), stored.image(2))


def test_waiting_process_uses_the_store_built_under_the_lock(synthetic_voc, tmp_path, monkeypatch):
    voc = VOCSegmentationIndex(synthetic_voc, "val")
    paths = StorePaths(tmp_path, "val", store_key(voc))
    built = []
    real_build = store_module.build_store
    monkeypatch.setattr(store_module, "build_store", lambda *a, **k: built.append(1) or real_build(*a, **k))
    result = {}
    with store_module._exclusive(paths.lock):  # the first rank holds the lock while it builds
        waiter = threading.Thread(target=lambda: result.setdefault("reader", open_store(voc, tmp_path)))
        waiter.start()
        real_build(voc, paths)
    waiter.join(timeout=60)
    assert built == [] and np.array_equal(result["reader"].label(0), voc.label(0))


def test_cache_command_builds_the_configured_splits(synthetic_voc, tmp_path, capsys):
    from deconvnet.cli import main

    cache = tmp_path / "cache"
    config = tmp_path / "c.yaml"
    config.write_text(f"data: {{root: {synthetic_voc}, train_split: train, cache_dir: {cache}}}\n")
    assert main(["cache", str(config)]) == 0
    out = capsys.readouterr().out
    assert "train: 17 images" in out and "val: 7 images" in out
    assert len(list(cache.glob("*.json"))) == 2
