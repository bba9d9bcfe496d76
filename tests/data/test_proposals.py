"""Proposals: the common filtering rules, each generator, the cache and its invalidation."""

from __future__ import annotations

import hashlib
import json
import logging
import types
from pathlib import Path

import numpy as np
import pytest

from deconvnet.config import load_config
from deconvnet.data.proposals import (
    generators,
    load_proposals,
    precompute_from_config,
    proposal_splits,
    proposals_for_image,
)
from deconvnet.data.proposals.cache import cache_path, read_cache
from deconvnet.data.proposals.edges import edge_map, edge_orientation, gradient_edges
from deconvnet.data.proposals.precompute import ensure_proposals, proposal_parameters
from deconvnet.data.voc import VOCSegmentationIndex
from deconvnet.data.windows import box_iou, clip_boxes
from deconvnet.errors import DataError, UserError


def make_cfg(root: Path, cache: Path, *overrides: str):
    return load_config(None, [
        f"data.root={root}", "data.train_split=train", f"data.proposals.cache_dir={cache}",
        "data.proposals.method=ground_truth", "data.proposals.min_size=16", "data.proposals.workers=1",
        *overrides,
    ])


# ---------------------------------------------------------------------------- filtering rules


def test_finalize_sorts_filters_min_size_and_keeps_top_k():
    boxes = np.array([
        [0, 0, 50, 50], [0, 0, 10, 80], [10, 10, 90, 90], [0, 0, 60, 40], [-20, 0, 30, 60],
    ], np.float32)
    scores = np.array([0.2, 0.9, 0.5, 0.7, 0.4], np.float32)
    out = generators.finalize(boxes, scores, width=100, height=100, min_size=30, top_k=3)
    assert out.dtype == np.float32 and out.shape == (3, 4)
    # [0,0,10,80] is too thin; the one crossing x=0 is clipped to [0,0,30,60] (min side 30: kept)
    np.testing.assert_array_equal(out, [[0, 0, 60, 40], [10, 10, 90, 90], [0, 0, 30, 60]])
    assert generators.finalize(boxes, scores, 100, 100, min_size=200, top_k=50).shape == (0, 4)


def test_min_size_applies_to_the_window_by_default():
    """The official scripts skip extended boxes with min(w, h) < 112: a 100 x 40 box has a
    120 x 120 window (kept), a 90 x 90 box a 108 x 108 one (dropped)."""
    boxes = np.array([[100, 100, 200, 140], [100, 100, 190, 190], [0, 0, 20, 130]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    window = {"context_scale": 1.2, "square": True}
    out = generators.finalize(boxes, scores, 500, 400, min_size=112, top_k=50, window=window)
    np.testing.assert_array_equal(out, [[100, 100, 200, 140], [0, 0, 20, 130]])  # boxes, not windows
    raw = generators.finalize(boxes, scores, 500, 400, min_size=112, top_k=50)  # min_size_on=box
    assert len(raw) == 0
    # extended boxes (windows already): no enlargement, not clipped to the image
    extended = np.array([[-10, -10, 110, 110], [0, 0, 100, 100]], np.float32)
    out = generators.finalize(extended, scores[:2], 90, 90, min_size=112, top_k=50,
                              window={"context_scale": 1.0, "square": True}, clip=False)
    np.testing.assert_array_equal(out, extended[:1])


def test_generator_selection_follows_the_config(synthetic_voc, tmp_path):
    gen = generators.build_generator(make_cfg(synthetic_voc, tmp_path))
    assert gen.window == {"context_scale": 1.2, "square": True} and gen.clip
    assert gen.selection()["min_size_on"] == "window"
    gen = generators.build_generator(make_cfg(synthetic_voc, tmp_path, "data.proposals.min_size_on=box"))
    assert gen.window is None and gen.selection()["min_size_on"] == "box"
    gen = generators.build_generator(make_cfg(synthetic_voc, tmp_path, "data.proposals.extended=true"))
    assert gen.window == {"context_scale": 1.0, "square": True} and not gen.clip
    with pytest.raises(UserError, match="min_size_on"):
        generators.build_generator(make_cfg(synthetic_voc, tmp_path, "data.proposals.min_size_on=edge"))


# ---------------------------------------------------------------------------- generators


def _rectangle_image() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = np.full((160, 200, 3), 120, np.uint8) + rng.integers(0, 8, (160, 200, 3), dtype=np.uint8)
    image[30:130, 40:170] = (220, 40, 40)
    return image, np.array([[40, 30, 170, 130]], np.float32)


def test_edge_orientation_convention_matches_opencv():
    """0 for a vertical edge and pi/2 for a horizontal one, as OpenCV's computeOrientation."""
    vertical = np.zeros((64, 64, 3), np.uint8)
    vertical[:, 32:] = 255
    edges = gradient_edges(vertical)
    assert edges.max() == pytest.approx(1.0)
    assert edge_orientation(edges)[32, 31] == pytest.approx(0.0, abs=0.05)
    edges_h = gradient_edges(vertical.transpose(1, 0, 2).copy())
    assert edge_orientation(edges_h)[31, 32] == pytest.approx(np.pi / 2, abs=0.05)
    thinned, _ = edge_map(vertical)
    assert (thinned[32] > 0).sum() <= 2  # non-maximum suppression leaves a thin line


def test_edgeboxes_finds_a_salient_rectangle():
    image, truth = _rectangle_image()
    boxes, scores = generators.EdgeBoxes(max_candidates=200).propose_image(image)
    assert len(boxes) > 0 and boxes.dtype == np.float32 and len(scores) == len(boxes)
    final = generators.finalize(boxes, scores, 200, 160, min_size=16, top_k=50)
    assert np.isfinite(scores).all() and scores.max() > scores.min()  # a ranking, not ties
    best = scores == scores.max()  # finalize puts the best-scoring box first (it is big enough)
    assert any(np.array_equal(final[0], box) for box in generators.clip_boxes(boxes[best], 200, 160))
    assert box_iou(final, truth).max() > 0.7


def test_edgeboxes_boxes_of_an_image_do_not_depend_on_the_images_before_it(synthetic_voc):
    # OpenCV's EdgeBoxes object keeps state between calls: reused, it gave other boxes for
    # the same image, so the proposals (and the DeconvNet rows) changed with the order in
    # which pool workers met the images.
    reader = VOCSegmentationIndex(synthetic_voc, "val")
    generator = generators.EdgeBoxes(max_candidates=500)
    first, _ = generator.propose_image(reader.image(0))
    for i in range(1, len(reader)):
        generator.propose_image(reader.image(i))
    again, _ = generator.propose_image(reader.image(0))
    assert len(first) > 0 and np.array_equal(first, again)


def test_selective_search_ranks_boxes():
    image, truth = _rectangle_image()
    boxes, scores = generators.SelectiveSearch(max_candidates=300).propose_image(image[::2, ::2].copy())
    assert 0 < len(boxes) <= 300 and np.all(np.diff(scores) < 0)
    assert np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])
    assert box_iou(boxes, truth / 2).max() > 0.7


def test_selective_search_boxes_of_an_image_do_not_depend_on_the_images_before_it(synthetic_voc):
    # OpenCV ranks selective-search regions with the C library's rand(): unseeded, the same
    # image got the same boxes in another order after other images, so its top-k (and the
    # proposal cache) depended on the order in which images were processed.
    reader = VOCSegmentationIndex(synthetic_voc, "val")
    generator = generators.SelectiveSearch(max_candidates=500)
    first, _ = generator.propose_image(reader.image(0))
    for i in range(1, len(reader)):
        generator.propose_image(reader.image(i))
    again, _ = generator.propose_image(reader.image(0))
    assert len(first) > 10 and np.array_equal(first, again)


def test_selective_search_cache_does_not_depend_on_the_order_of_images(synthetic_voc, tmp_path):
    # the same split computed in two orders (serially and reversed) gives the same top-k
    cfg = make_cfg(synthetic_voc, tmp_path, "data.proposals.method=selective_search",
                   "data.proposals.max_candidates=300")
    reader = VOCSegmentationIndex(synthetic_voc, "val")
    generator = generators.build_generator(cfg)
    forward = [generators.finalize(*generator.propose(reader, i), *reader.sizes[i][::-1], 16, 10)
               for i in range(len(reader))]
    backward = [generators.finalize(*generator.propose(reader, i), *reader.sizes[i][::-1], 16, 10)
                for i in reversed(range(len(reader)))][::-1]
    for a, b in zip(forward, backward):
        np.testing.assert_array_equal(a, b)


class _FakeReader:
    """A split with the given ids, image sizes and (for the oracle) instance boxes per image."""

    split, has_labels = "val", True

    def __init__(self, ids, sizes, boxes=None):
        self.ids, self.sizes, self._boxes = ids, sizes, boxes

    def __len__(self):
        return len(self.ids)

    def instances(self, i):
        return [types.SimpleNamespace(box=np.array(box)) for box in self._boxes[i]]


def test_file_generator_json_and_npz(tmp_path):
    reader = _FakeReader(["a", "b"], [(100, 100), (100, 100)])
    json_path = tmp_path / "boxes.json"
    json_path.write_text(json.dumps({"a": [[0, 0, 50, 50, 0.1], [10, 10, 90, 90, 0.8]], "b": []}))
    gen = generators.FileBoxes(str(json_path))
    gen.check(reader)
    boxes, scores = gen.propose(reader, 0)
    final = generators.finalize(boxes, scores, 100, 100, min_size=10, top_k=5)
    np.testing.assert_array_equal(final, [[10, 10, 90, 90], [0, 0, 50, 50]])  # by the score column
    assert gen.propose(reader, 1)[0].shape == (0, 4)

    npz_path = tmp_path / "boxes.npz"
    np.savez(npz_path, a=np.array([[0, 0, 50, 50], [10, 10, 90, 90]], np.float32), b=np.zeros((0, 4)))
    gen = generators.FileBoxes(str(npz_path))
    boxes, scores = gen.propose(reader, 0)
    final = generators.finalize(boxes, scores, 100, 100, min_size=10, top_k=5)
    np.testing.assert_array_equal(final, [[0, 0, 50, 50], [10, 10, 90, 90]])  # file order = rank

    np.savez(npz_path, a=np.zeros((1, 4)))
    with pytest.raises(DataError, match="no entry for 1 of the 2 images.*'b'"):
        generators.FileBoxes(str(npz_path)).check(reader)
    with pytest.raises(UserError, match="not found"):
        generators.FileBoxes(str(tmp_path / "nope.npz"))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"a": [[1, 2, 3]]}))
    with pytest.raises(DataError, match="bad.json.*shape"):
        generators.FileBoxes(str(bad)).check(reader)


def test_ground_truth_oracle_returns_tight_instance_boxes(synthetic_voc):
    reader = VOCSegmentationIndex(synthetic_voc, "train")
    oracle = generators.GroundTruthOracle(jitters=2)
    boxes, scores = oracle.propose(reader, 0)
    instances = reader.instances(0)
    expected = np.stack([inst.box for inst in instances])  # the window rule adds the context
    assert len(boxes) == 3 * len(instances)
    np.testing.assert_allclose(boxes[: len(instances)], expected)
    assert np.all(scores[: len(instances)] == 1.0) and np.all(scores[len(instances):] < 1.0)
    again, _ = oracle.propose(reader, 0)
    np.testing.assert_array_equal(boxes, again)  # deterministic per image


# ---------------------------------------------------------------------------- cache


@pytest.fixture
def counting(monkeypatch):
    """Counts the oracle's calls (the generator of these tests)."""
    calls = []
    original = generators.GroundTruthOracle.propose

    def propose(self, reader, i):
        calls.append(i)
        return original(self, reader, i)

    monkeypatch.setattr(generators.GroundTruthOracle, "propose", propose)
    return calls


def test_cache_is_reused_and_recomputed_when_parameters_change(synthetic_voc, tmp_path, counting, caplog):
    cfg = make_cfg(synthetic_voc, tmp_path)
    first = load_proposals(cfg, "val")
    reader = VOCSegmentationIndex(synthetic_voc, "val")
    assert list(first) == reader.ids and len(counting) == len(reader)
    for i, image_id in enumerate(reader.ids):
        boxes = first[image_id]
        assert boxes.dtype == np.float32 and boxes.ndim == 2 and boxes.shape[1] == 4
        assert len(boxes) <= 50
        height, width = reader.sizes[i]
        np.testing.assert_array_equal(boxes, clip_boxes(boxes, width, height))
        # the size rule measures the window (1.2 x the longer side, squared)
        assert np.all(1.2 * np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) >= 16)
    cached = list(tmp_path.glob("val-ground_truth-*.npz"))
    assert len(cached) == 1 and not list(tmp_path.glob(".*tmp"))

    second = load_proposals(cfg, "val")
    assert len(counting) == len(reader)  # served from the cache
    for image_id in first:
        np.testing.assert_array_equal(first[image_id], second[image_id])

    changed = make_cfg(synthetic_voc, tmp_path, "data.proposals.top_k=2")
    third = load_proposals(changed, "val")
    assert len(counting) == 2 * len(reader)  # recomputed for the new parameters
    assert max(len(b) for b in third.values()) <= 2
    assert len(list(tmp_path.glob("val-ground_truth-*.npz"))) == 2

    # a cache whose record does not match (e.g. edited or from older code) is not used silently
    generator = generators.build_generator(cfg)
    params = proposal_parameters(cfg, generator)
    path = cache_path(tmp_path, "val", "ground_truth", params)
    with np.load(path) as data:
        content = dict(data)
    meta = json.loads(str(content["meta"]))
    meta["parameters"]["jitter"] = 0.5
    content["meta"] = np.array(json.dumps(meta))
    with open(path, "wb") as f:
        np.savez(f, **content)
    with caplog.at_level(logging.WARNING):
        load_proposals(cfg, "val")
    assert len(counting) == 3 * len(reader)
    assert "recomputing" in caplog.text and "parameters differ" in caplog.text
    assert read_cache(path, "ground_truth", params, reader.ids)[0] is not None  # rewritten


def test_cache_with_another_image_list_is_stale(synthetic_voc, tmp_path):
    cfg = make_cfg(synthetic_voc, tmp_path)
    generator = generators.build_generator(cfg)
    params = proposal_parameters(cfg, generator)
    _, path = ensure_proposals(cfg, "val")
    ids = VOCSegmentationIndex(synthetic_voc, "val").ids
    assert read_cache(path, "ground_truth", params, ids)[0] is not None
    proposals, why = read_cache(path, "ground_truth", params, ids[:-1])
    assert proposals is None and "image list" in why


def _write_val_cache(synthetic_voc, tmp_path, *overrides):
    cfg = make_cfg(synthetic_voc, tmp_path, *overrides)
    proposals, path = ensure_proposals(cfg, "val")
    return cfg, proposals, path


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "offsets"])
def test_a_corrupt_cache_is_recomputed_with_a_warning(synthetic_voc, tmp_path, counting, caplog, damage):
    cfg, first, path = _write_val_cache(synthetic_voc, tmp_path)
    computed = len(counting)
    content = path.read_bytes()
    if damage == "truncated":  # a copy cut short, a disk that filled up
        path.write_bytes(content[: len(content) // 2])
    elif damage == "garbage":
        path.write_bytes(b"this is not a zip file" * 10)
    elif damage == "empty":
        path.write_bytes(b"")
    else:  # readable, but the offsets point past the boxes
        with np.load(path) as data:
            arrays = dict(data)
        arrays["offsets"] = arrays["offsets"] + 1
        with open(path, "wb") as f:
            np.savez(f, **arrays)
    with caplog.at_level(logging.WARNING):
        again = load_proposals(cfg, "val")
    assert len(counting) == 2 * computed  # recomputed, not a traceback
    assert "recomputing" in caplog.text and str(path) in caplog.text
    assert list(again) == list(first)
    for image_id in first:
        np.testing.assert_array_equal(again[image_id], first[image_id])
    with np.load(path) as data:  # and rewritten whole
        assert int(data["offsets"][-1]) == len(data["boxes"])


def test_cache_of_another_split_with_as_many_images_is_stale(synthetic_voc, tmp_path):
    cfg, _, path = _write_val_cache(synthetic_voc, tmp_path)
    params = proposal_parameters(cfg, generators.build_generator(cfg))
    ids = VOCSegmentationIndex(synthetic_voc, "val").ids
    assert read_cache(path, "ground_truth", params, ids)[0] is not None
    other = [f"x{image_id}" for image_id in ids]  # same length, other ids
    assert read_cache(path, "ground_truth", params, other)[0] is None
    swapped = [ids[1], ids[0], *ids[2:]]  # same ids, another order
    assert read_cache(path, "ground_truth", params, swapped)[0] is None


def test_a_changed_boxes_file_invalidates_the_cache(synthetic_voc, tmp_path):
    reader = VOCSegmentationIndex(synthetic_voc, "val")
    boxes_file = tmp_path / "boxes.json"
    boxes_file.write_text(json.dumps({i: [[0, 0, 40, 40]] for i in reader.ids}))
    overrides = ("data.proposals.method=file", f"data.proposals.file={boxes_file}")
    _, first, _ = _write_val_cache(synthetic_voc, tmp_path / "cache", *overrides)
    assert all(b.tolist() == [[0, 0, 40, 40]] for b in first.values())
    boxes_file.write_text(json.dumps({i: [[2, 3, 50, 60]] for i in reader.ids}))  # same name
    _, second, _ = _write_val_cache(synthetic_voc, tmp_path / "cache", *overrides)
    assert all(b.tolist() == [[2, 3, 50, 60]] for b in second.values())


def test_a_cache_of_another_format_is_not_used(synthetic_voc, tmp_path, monkeypatch):
    from deconvnet.data.proposals import cache

    cfg, _, path = _write_val_cache(synthetic_voc, tmp_path)
    params = proposal_parameters(cfg, generators.build_generator(cfg))
    ids = VOCSegmentationIndex(synthetic_voc, "val").ids
    assert read_cache(path, "ground_truth", params, ids)[0] is not None
    monkeypatch.setattr(cache, "CACHE_FORMAT", cache.CACHE_FORMAT + 1)  # the code moved on
    proposals, why = read_cache(path, "ground_truth", params, ids)
    assert proposals is None and "another version" in why


def test_cache_write_is_atomic(synthetic_voc, tmp_path, monkeypatch):
    cfg = make_cfg(synthetic_voc, tmp_path)
    _, path = ensure_proposals(cfg, "val")
    before = path.read_bytes()
    path.touch()

    def broken_savez(f, **arrays):
        f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    changed = make_cfg(synthetic_voc, tmp_path, "data.proposals.top_k=3")
    with pytest.raises(OSError, match="disk full"):
        ensure_proposals(changed, "val")
    assert path.read_bytes() == before  # the existing cache is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # nothing half-written left


def test_images_without_boxes_get_an_empty_array(synthetic_voc, tmp_path):
    cfg = make_cfg(synthetic_voc, tmp_path, "data.proposals.min_size=10000")
    proposals = load_proposals(cfg, "val")
    assert all(b.shape == (0, 4) and b.dtype == np.float32 for b in proposals.values())


def test_precompute_in_parallel_matches_serial(synthetic_voc, tmp_path, caplog):
    serial = load_proposals(make_cfg(synthetic_voc, tmp_path / "serial"), "val")
    cfg = make_cfg(synthetic_voc, tmp_path / "pool", "data.proposals.workers=2", "data.proposals.splits=[val]")
    with caplog.at_level(logging.INFO, logger="deconvnet"):  # no CLI here: no handler on stdout
        written = precompute_from_config(cfg)
    assert set(written) == {"val"} and written["val"].is_file()
    assert any(r.getMessage().startswith("proposals val:") for r in caplog.records)
    parallel = load_proposals(cfg, "val")
    for image_id in serial:
        np.testing.assert_array_equal(serial[image_id], parallel[image_id])


def test_default_splits_are_training_validation_and_evaluation(synthetic_voc, tmp_path):
    assert proposal_splits(make_cfg(synthetic_voc, tmp_path)) == ["train", "val"]
    assert proposal_splits(make_cfg(synthetic_voc, tmp_path, "eval.split=test")) == ["train", "val", "test"]


def test_oracle_on_a_split_without_labels_and_unknown_method(synthetic_voc, tmp_path):
    with pytest.raises(UserError, match="data.proposals.method=magic is not one of the allowed values"):
        generators.build_generator(make_cfg(synthetic_voc, tmp_path, "data.proposals.method=magic"))
    reader = _FakeReader(["x"], [(10, 10)])
    reader.has_labels = False
    with pytest.raises(DataError) as err:
        generators.GroundTruthOracle().check(reader)
    assert str(err.value) == ("proposal method ground_truth reads the annotations, but split 'val' "
                              "has none; use edgeboxes, selective_search or file")
    with pytest.raises(UserError, match="arbitrary images"):
        proposals_for_image(make_cfg(synthetic_voc, tmp_path), np.zeros((10, 10, 3), np.uint8))


def test_proposals_for_an_arbitrary_image(synthetic_voc, tmp_path):
    image, truth = _rectangle_image()
    cfg = make_cfg(synthetic_voc, tmp_path, "data.proposals.method=edgeboxes", "data.proposals.min_size=50")
    boxes = proposals_for_image(cfg, image)
    assert 0 < len(boxes) <= 50
    assert np.all(1.2 * np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) >= 50)


# ---------------------------------------------------------------- edges: the model or the fallback


@pytest.fixture
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(generators, "_warned_no_edge_model", set())


def _root_with_voc(synthetic_voc: Path, tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    (root / "VOCdevkit").symlink_to(synthetic_voc / "VOCdevkit")
    return root


def test_missing_edge_model_falls_back_with_one_warning(synthetic_voc, tmp_path, caplog, fresh_warnings):
    root = _root_with_voc(synthetic_voc, tmp_path)
    cfg = make_cfg(root, tmp_path / "cache", "data.proposals.method=edgeboxes")
    assert cfg.data.proposals.edge_model == "auto"
    with caplog.at_level(logging.WARNING, logger="deconvnet"):
        first = generators.build_generator(cfg)
        generators.build_generator(cfg)
        source = generators.edge_source(cfg)
    warnings = [r for r in caplog.records if "Structured Edge model" in r.getMessage()]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert str(root / "models" / "model.yml.gz") in message
    assert f"deconvnet download edge-model --root {root / 'models'}" in message
    assert isinstance(first, generators.EdgeBoxes) and first.edge_model is None
    assert source.startswith("EdgeBoxes on gradient edges")
    # the cache records the edges the boxes came from
    _, path = ensure_proposals(cfg, "val")
    with np.load(path) as data:
        meta = json.loads(str(data["meta"]))
    assert meta["parameters"]["edges"].startswith("gradient edges")

    caplog.clear()
    quiet = make_cfg(root, tmp_path / "cache", "data.proposals.method=edgeboxes", "data.proposals.edge_model=null")
    with caplog.at_level(logging.WARNING, logger="deconvnet"):
        assert generators.build_generator(quiet).edge_model is None
    assert not caplog.records  # null: the fallback by choice, no warning

    other = make_cfg(root, tmp_path / "cache", "data.proposals.method=edgeboxes",
                     "data.proposals.edge_fallback=selective_search")
    assert isinstance(generators.build_generator(other), generators.SelectiveSearch)
    assert generators.edge_source(other).startswith("selective search (fallback")
    with pytest.raises(UserError, match="edge_fallback"):
        generators.build_generator(make_cfg(root, tmp_path, "data.proposals.method=edgeboxes",
                                            "data.proposals.edge_model=null", "data.proposals.edge_fallback=canny"))


def test_edge_model_in_the_data_root_is_used(synthetic_voc, tmp_path, caplog, fresh_warnings, write_edge_model):
    root = _root_with_voc(synthetic_voc, tmp_path)
    model = write_edge_model(root / "models" / "model.yml.gz")
    cfg = make_cfg(root, tmp_path / "cache", "data.proposals.method=edgeboxes")
    with caplog.at_level(logging.WARNING, logger="deconvnet"):
        generator = generators.build_generator(cfg)
    assert not caplog.records
    assert generator.edge_model == str(model)
    assert generator.parameters()["edges"].startswith("structured edges (model.yml.gz")
    assert generators.edge_source(cfg).startswith("EdgeBoxes on structured edges")
    image, _ = _rectangle_image()
    boxes, scores = generator.propose_image(image)  # the tiny forest finds no edges: no boxes
    assert boxes.shape == (0, 4) and scores.shape == (0,)
    # a model file OpenCV cannot load is a user error naming the file
    bad = tmp_path / "bad" / "model.yml.gz"
    bad.parent.mkdir()
    bad.write_bytes(b"not a model")
    with pytest.raises(UserError, match="bad/model.yml.gz.*download edge-model"):
        generators.EdgeBoxes(edge_model=str(bad)).propose_image(image)
    assert np.all(np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) >= 50)


def test_cache_round_trip_edge_cases(tmp_path):
    from deconvnet.data.proposals.cache import write_cache

    params = {"top_k": 5}
    # the key names the method: two methods with the same parameters never share a file
    assert cache_path(tmp_path, "val", "a", params) != cache_path(tmp_path, "val", "b", params)
    assert cache_path(tmp_path, "val", "a", params).name.startswith("val-a-")
    # a split without images, into folders that do not exist yet
    empty = write_cache(tmp_path / "x" / "y" / "e.npz", "val", "a", params, {})
    assert read_cache(empty, "a", params, []) == ({}, "")
    boxes = {"i1": np.array([[0, 0, 5, 5]], np.float64), "i2": np.zeros((0, 4)), "i3": np.ones((2, 4))}
    path = write_cache(tmp_path / "c.npz", "val", "a", params, boxes)
    got, why = read_cache(path, "a", params, ["i1", "i2", "i3"])
    assert why == "" and [len(got[k]) for k in ("i1", "i2", "i3")] == [1, 0, 2]
    assert all(v.dtype == np.float32 for v in got.values())

    def damaged(**change):
        with np.load(path) as data:
            arrays = {**dict(data), **change}
        out = tmp_path / "damaged.npz"
        with open(out, "wb") as f:
            np.savez(f, **arrays)
        return read_cache(out, "a", params, ["i1", "i2", "i3"])

    for change in ({"offsets": np.array([1, 1, 1, 3])}, {"offsets": np.array([0, 2, 1, 3])},
                   {"offsets": np.array([0, 1, 1])}, {"boxes": np.ones((3, 5), np.float32)},
                   {"boxes": np.ones((12,), np.float32)}):
        proposals, why = damaged(**change)
        assert proposals is None and "inconsistent" in why, change
    assert damaged(offsets=np.array([0, 1, 1, 3]))[0] is not None  # an empty image is fine


def test_a_first_computation_is_not_a_warning(synthetic_voc, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        load_proposals(make_cfg(synthetic_voc, tmp_path), "val")
    assert "recomputing" not in caplog.text  # no cache yet: nothing to warn about


# ------------------------------------------ generators: details mutation testing asked for


def test_generator_parameters_are_what_the_cache_records(tmp_path):
    # the exact record: a renamed or dropped entry would change every cache's identity
    assert generators.SelectiveSearch(max_candidates=300).parameters() == {
        "mode": "fast", "max_candidates": 300, "rand_seed": 0}
    boxes = tmp_path / "boxes.json"
    boxes.write_text('{"a": [[0, 0, 4, 4]]}')
    digest = hashlib.sha256(boxes.read_bytes()).hexdigest()
    assert generators.FileBoxes(str(boxes)).parameters() == {"file": "boxes.json", "sha256": digest}


def test_file_boxes_say_what_is_wrong_in_one_line(tmp_path):
    with pytest.raises(UserError) as error:
        generators.FileBoxes(None)
    assert str(error.value) == ("data.proposals.method=file needs data.proposals.file: the path of a "
                                ".npz or .json of boxes")
    text = tmp_path / "boxes.txt"
    text.write_text("0 0 4 4")
    with pytest.raises(UserError) as error:
        generators.FileBoxes(str(text))
    assert str(error.value) == f"data.proposals.file: {text} must be a .npz or .json file (see FileBoxes)"
    with pytest.raises(UserError) as error:
        generators.GroundTruthOracle().propose_image(np.zeros((4, 4, 3), np.uint8))
    assert str(error.value) == ("proposal method 'ground_truth' needs a dataset image id; for arbitrary "
                                "images set data.proposals.method to edgeboxes or selective_search")


def test_a_pickled_npz_of_boxes_is_refused(tmp_path):
    path = tmp_path / "boxes.npz"
    np.savez(path, a=np.array([[0, 0, 4, 4]], dtype=object))  # numbers, but stored by pickle
    with pytest.raises(DataError, match=r"^proposal file .*boxes\.npz cannot be read: "):
        generators.FileBoxes(str(path))._table()


def test_an_unloadable_edge_model_names_opencvs_reason(tmp_path):
    import cv2

    path = tmp_path / "model.yml.gz"
    path.write_bytes(b"garbage")
    try:
        cv2.ximgproc.createStructuredEdgeDetection(str(path))
    except cv2.error as err:
        reason = str(err).strip()[:200]
    with pytest.raises(UserError) as error:
        generators.load_structured_edges(path)
    assert str(error.value) == (f"{path} is not a Structured Edge model that OpenCV can load ({reason}); "
                                "delete it and run `deconvnet download edge-model` again")


def test_edge_source_names_the_source_in_words(tmp_path, write_edge_model):
    model = write_edge_model(tmp_path / "models" / "model.yml.gz")
    digest = hashlib.sha256(model.read_bytes()).hexdigest()

    def source(*overrides: str) -> str:
        return generators.edge_source(load_config(None, [f"data.root={tmp_path}", *overrides]))

    assert source() == f"EdgeBoxes on structured edges (model.yml.gz, sha256 {digest[:12]})"  # auto: found
    assert source("data.proposals.edge_model=null") == \
        "EdgeBoxes on gradient edges (in-process fallback, no Structured Edge model)"
    assert source("data.proposals.edge_model=null", "data.proposals.edge_fallback=selective_search") == \
        "selective search (fallback: no Structured Edge model for EdgeBoxes)"
    assert source("data.proposals.method=selective_search") == "selective search"
    assert source("data.proposals.method=ground_truth") == "ground-truth boxes (oracle, not a proposal method)"
    boxes = tmp_path / "boxes.json"
    boxes.write_text("{}")
    assert source("data.proposals.method=file", f"data.proposals.file={boxes}") == "boxes from boxes.json"
    assert source("data.proposals.method=file", f"data.proposals.file={boxes}", "data.proposals.extended=true") \
        == "boxes from boxes.json (extended windows)"


def test_edgeboxes_parameters_are_what_the_cache_records(tmp_path, write_edge_model):
    fallback = generators.EdgeBoxes(max_candidates=7, alpha=0.5, beta=0.6)
    assert fallback.parameters() == {
        "max_candidates": 7, "alpha": 0.5, "beta": 0.6, "edge_model": "gradient-fallback",
        "edges": "gradient edges (in-process fallback, no Structured Edge model)"}
    model = write_edge_model(tmp_path / "model.yml.gz")
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    assert generators.EdgeBoxes(edge_model=str(model)).parameters() == {
        "max_candidates": 2000, "alpha": 0.65, "beta": 0.75, "edge_model": digest,
        "edges": f"structured edges (model.yml.gz, sha256 {digest[:12]})"}


def test_file_boxes_read_scores_ranks_and_say_what_is_missing(tmp_path):
    reader = types.SimpleNamespace(ids=["a", "b", "c"], split="val")
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps({"a": [[0, 0, 4, 4, 0.2], [1, 1, 5, 5, 0.9]], "b": [[0, 0, 2, 2], [1, 1, 3, 3]]}))
    boxes = generators.FileBoxes(str(path))
    with_scores, scores = boxes.propose(reader, 0)
    np.testing.assert_array_equal(with_scores, [[0, 0, 4, 4], [1, 1, 5, 5]])
    np.testing.assert_allclose(scores, [0.2, 0.9])
    _, ranks = boxes.propose(reader, 1)  # no fifth column: the file's order is the ranking
    np.testing.assert_array_equal(ranks, [0, -1])
    with pytest.raises(DataError) as error:
        boxes.propose(reader, 2)
    assert str(error.value) == f"proposal file {path} has no entry for image 'c'"
    with pytest.raises(DataError) as error:
        boxes.check(reader)
    assert str(error.value) == (f"proposal file {path} has no entry for 1 of the 3 images of split 'val' "
                                "(first: 'c'); add them (an empty list for an image without proposals) "
                                "or use another method")


@pytest.mark.parametrize(("content", "reason"), [
    ("[[0, 0, 4, 4]]", "the top level must be an object {id: [[x1, y1, x2, y2], ...]}"),
    ('{"a": [[0, 0, 4]]}', "entry 'a' has shape (1, 3), expected K x 4 or K x 5"),
    ('{"a": [0, 0, 4, 4]}', "entry 'a' has shape (4,), expected K x 4 or K x 5"),
])
def test_a_malformed_boxes_file_says_why(tmp_path, content, reason):
    path = tmp_path / "boxes.json"
    path.write_text(content)
    with pytest.raises(DataError) as error:
        generators.FileBoxes(str(path))._table()
    assert str(error.value) == f"proposal file {path} cannot be read: {reason}"
    empty = tmp_path / "empty.json"
    empty.write_text('{"a": []}')  # an image without proposals: 0 x 4
    assert generators.FileBoxes(str(empty))._table()["a"].shape == (0, 4)


@pytest.mark.parametrize("value", ["", "None", "NULL", " null "])
def test_edge_model_spelt_as_nothing_means_no_model(tmp_path, value):
    cfg = load_config(None, [f"data.root={tmp_path}"])
    cfg.data.proposals.edge_model = value
    assert generators.resolve_edge_model(cfg) is None


@pytest.mark.parametrize(("fallback", "what"), [("gradient", "EdgeBoxes on in-process gradient edges"),
                                                ("selective_search", "selective search")])
def test_the_missing_model_warning_names_the_fallback(tmp_path, fresh_warnings, caplog, fallback, what):
    cfg = load_config(None, [f"data.root={tmp_path}", f"data.proposals.edge_fallback={fallback}"])
    with caplog.at_level(logging.WARNING, logger="deconvnet"):
        assert generators.resolve_edge_model(cfg) is None
    (message,) = [r.getMessage() for r in caplog.records]
    default = tmp_path / "models" / "model.yml.gz"
    assert message == (
        f"no Structured Edge model at {default}, so proposals come from {what} (data.proposals.edge_fallback), "
        "not the paper's EdgeBoxes on Structured Edges. Get the model with `deconvnet download "
        f"edge-model --root {default.parent}` (or `make data`); set data.proposals.edge_model=null to silence this.")
    given = tmp_path / "elsewhere.yml.gz"
    cfg.data.proposals.edge_model = str(given)
    assert generators.resolve_edge_model(cfg) == str(given)  # a path is taken as it is


# ---------------------------------------------------------------------------- generator contracts
# What every generator promises its callers (float32 K x 4 boxes, float32 K scores, the
# parameters the cache records) and each one's use of OpenCV, checked against OpenCV called
# directly.


def test_finalize_returns_contiguous_float32_whatever_it_is_given():
    boxes = np.array([[0, 0, 50, 40], [10, 10, 90, 90]], np.float64)  # float64, scores K x 1
    out = generators.finalize(boxes, [[1], [2]], 100, 100, min_size=10, top_k=5)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, [[10, 10, 90, 90], [0, 0, 50, 40]])
    empty = generators.finalize([], [], 100, 100, min_size=10, top_k=5)
    assert empty.shape == (0, 4) and empty.dtype == np.float32


def test_finalize_keeps_the_given_order_among_equal_scores():
    """Ties (e.g. the file method's rank scores after a merge) keep their input order: an
    unstable sort reorders them between runs of numpy and so changes the top-k."""
    boxes = np.array([[i, 0, i + 50, 50] for i in range(40)], np.float32)
    scores = np.array([1, 0] * 20, np.float32)
    out = generators.finalize(boxes, scores, 200, 100, min_size=10, top_k=40, clip=False)
    expected = list(range(0, 40, 2)) + list(range(1, 40, 2))
    np.testing.assert_array_equal(out[:, 0], expected)


def test_a_generator_finalizes_with_its_own_window_and_clipping_rules():
    generator = generators.ProposalGenerator()
    generator.window, generator.clip = {"context_scale": 1.2, "square": True}, False
    # 100 x 100: its 120 x 120 window passes min_size 112 (the box alone would not);
    # not clipped, so it still crosses the left border
    out = generator.finalize(np.array([[-10, 0, 90, 100]], np.float32), [1.0], 200, 200, 112, 5)
    np.testing.assert_array_equal(out, [[-10, 0, 90, 100]])
    assert generator.selection() == {"min_size_on": "window", "clip": False,
                                     "window": {"context_scale": 1.2, "square": True}}


def test_xywh_rectangles_become_corner_boxes():
    np.testing.assert_array_equal(generators._xywh_to_xyxy([[5, 7, 30, 10], [0, 1, 2, 40]]),
                                  [[5, 7, 35, 17], [0, 1, 2, 41]])


def test_pickled_generators_drop_their_opencv_objects_only():
    generator = generators.EdgeBoxes(max_candidates=7)
    generator._cv_edges = object()  # stands for OpenCV's detector, which does not pickle
    state = generator.__getstate__()
    assert state["_cv_edges"] is None and state["max_candidates"] == 7 and state["alpha"] == 0.65


def _edgeboxes_from_opencv(image, alpha, beta, max_boxes):
    """OpenCV's EdgeBoxes on the fallback edges, called directly: x1, y1, x2, y2 and scores."""
    import cv2

    edges, orientation = edge_map(image)
    rects, scores = cv2.ximgproc.createEdgeBoxes(alpha=alpha, beta=beta, maxBoxes=max_boxes) \
        .getBoundingBoxes(edges, orientation)
    rects = np.asarray(rects, np.float32).reshape(-1, 4)
    return np.c_[rects[:, :2], rects[:, :2] + rects[:, 2:]], np.asarray(scores).reshape(-1)


def test_edgeboxes_passes_alpha_beta_and_the_box_count_to_opencv():
    image, _ = _rectangle_image()
    image[100:150, 10:60] = (20, 200, 30)  # two more objects: enough boxes for every setting
    image[5:40, 150:195] = (250, 250, 0)
    boxes, scores = generators.EdgeBoxes(max_candidates=25, alpha=0.5, beta=0.9).propose_image(image)
    expected_boxes, expected_scores = _edgeboxes_from_opencv(image, 0.5, 0.9, 25)
    assert len(boxes) == 25 and scores.dtype == np.float32
    np.testing.assert_array_equal(boxes, expected_boxes)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-6)
    # the settings matter on this image, so a setting that did not reach OpenCV would show
    assert not np.array_equal(boxes, _edgeboxes_from_opencv(image, 0.65, 0.75, 25)[0])
    assert len(_edgeboxes_from_opencv(image, 0.5, 0.9, 2000)[0]) > 25
    defaults = generators.EdgeBoxes()
    assert (defaults.max_candidates, defaults.alpha, defaults.beta) == (2000, 0.65, 0.75)


def _fake_opencv_edgeboxes(monkeypatch, found):
    """cv2.ximgproc.createEdgeBoxes replaced by one whose getBoundingBoxes returns ``found``."""
    import cv2

    class FakeEdgeBoxes:
        def getBoundingBoxes(self, edges, orientation):
            return found

    monkeypatch.setattr(cv2.ximgproc, "createEdgeBoxes", lambda **kwargs: FakeEdgeBoxes())


def test_edgeboxes_from_an_opencv_without_scores_ranks_by_order(monkeypatch):
    """Older OpenCV returns only the rectangles, best first: the score is minus the rank."""
    image, _ = _rectangle_image()
    _fake_opencv_edgeboxes(monkeypatch, np.array([[0, 0, 40, 20], [5, 5, 10, 30], [1, 2, 3, 4]]))
    boxes, scores = generators.EdgeBoxes().propose_image(image)
    np.testing.assert_array_equal(boxes, [[0, 0, 40, 20], [5, 5, 15, 35], [1, 2, 4, 6]])
    assert scores.dtype == np.float32 and scores.tolist() == [0, -1, -2]
    _fake_opencv_edgeboxes(monkeypatch, (np.array([[0, 0, 40, 20]]), np.array([[0.25]])))
    boxes, scores = generators.EdgeBoxes().propose_image(image)
    assert boxes.tolist() == [[0, 0, 40, 20]] and scores.dtype == np.float32 and scores.tolist() == [0.25]


@pytest.mark.parametrize("found", [((), ()), None])
def test_edgeboxes_finding_nothing_gives_empty_float32_arrays(monkeypatch, found):
    image, _ = _rectangle_image()
    _fake_opencv_edgeboxes(monkeypatch, found)
    boxes, scores = generators.EdgeBoxes().propose_image(image)
    assert boxes.shape == (0, 4) and boxes.dtype == np.float32
    assert scores.shape == (0,) and scores.dtype == np.float32


def test_structured_edges_get_the_image_as_rgb_in_0_1(tmp_path):
    """The Structured Edge detector (its model cannot be downloaded here) is given float32
    RGB scaled to [0, 1], and its NMS-thinned edges and orientation go to EdgeBoxes."""
    seen = {}

    class FakeDetector:
        def detectEdges(self, image):
            seen["image"] = image
            return np.zeros(image.shape[:2], np.float32)

        def computeOrientation(self, edges):
            return np.ones_like(edges)

        def edgesNms(self, edges, orientation):
            seen["nms"] = orientation
            return edges + 2

    model = tmp_path / "model.yml.gz"
    model.write_bytes(b"stands for the model")
    generator = generators.EdgeBoxes(edge_model=str(model))
    generator._cv_edges = FakeDetector()
    image = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3) * 4
    edges, orientation = generator._edges(image)
    assert seen["image"].dtype == np.float32
    np.testing.assert_allclose(seen["image"], image / 255.0, rtol=1e-6)
    assert np.all(edges == 2) and np.all(orientation == 1) and np.all(seen["nms"] == 1)


def test_edgeboxes_messages_say_what_is_wrong_and_how_to_fix_it(monkeypatch, tmp_path):
    with pytest.raises(UserError) as missing:
        generators.EdgeBoxes(edge_model=str(tmp_path / "model.yml.gz"))
    assert str(missing.value) == (
        f"data.proposals.edge_model: structured-edge model file not found: {tmp_path / 'model.yml.gz'}. "
        "Get it with `deconvnet download edge-model --root DIR` and give DIR/model.yml.gz, "
        "or set it to null to use data.proposals.edge_fallback.")
    for message in _errors_without_contrib(monkeypatch, generators.EdgeBoxes, segmentation=None):
        assert message == (
            "EdgeBoxes needs OpenCV's contrib modules (cv2.ximgproc.createEdgeBoxes), but the "
            "installed cv2 lacks them: a plain opencv-python(-headless), as packages such as albumentations "
            "pull in, has overwritten the contrib build. Fix it with `pip install --no-deps "
            "--force-reinstall opencv-contrib-python-headless` (or `make setup`).")


def _errors_without_contrib(monkeypatch, make, **other_parts) -> list[str]:
    """The UserError messages of ``make()`` with a cv2 whose ximgproc has only
    ``other_parts``, and with a cv2 without ximgproc."""
    import cv2

    messages = []
    for ximgproc in (types.SimpleNamespace(**other_parts), None):
        if ximgproc is None:
            monkeypatch.delattr(cv2, "ximgproc")
        else:
            monkeypatch.setattr(cv2, "ximgproc", ximgproc)
        with pytest.raises(UserError) as err:
            make()
        messages.append(str(err.value))
    return messages


def test_selective_search_without_contrib_says_how_to_fix(monkeypatch):
    for message in _errors_without_contrib(monkeypatch, generators.SelectiveSearch, createEdgeBoxes=None):
        assert message == (
            "selective search needs OpenCV's contrib modules (cv2.ximgproc.segmentation); "
            "reinstall with `pip install --no-deps --force-reinstall opencv-contrib-python-headless`")


def test_selective_search_runs_on_the_bgr_image_with_c_rand_seeded():
    """Against OpenCV called directly: BGR input, srand(SELECTIVE_SEARCH_SEED) first."""
    import ctypes

    import cv2

    image, _ = _rectangle_image()
    image = image[::2, ::2].copy()
    image[:, :50] = (30, 90, 200)  # a region whose colour order matters
    boxes, scores = generators.SelectiveSearch(max_candidates=40).propose_image(image)
    assert generators.SelectiveSearch().parameters() == {"mode": "fast", "max_candidates": 2000, "rand_seed": 0}
    ctypes.CDLL(None).srand(ctypes.c_uint(generators.SELECTIVE_SEARCH_SEED))
    search = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    search.setBaseImage(np.ascontiguousarray(image[:, :, ::-1]))
    search.switchToSelectiveSearchFast()
    rects = search.process()[:40].astype(np.float32)
    np.testing.assert_array_equal(boxes, np.c_[rects[:, :2], rects[:, :2] + rects[:, 2:]])
    assert scores.dtype == np.float32 and scores.tolist() == [-float(k) for k in range(len(boxes))]


def test_c_rand_is_seeded_with_the_given_seed_and_a_libc_without_srand_is_a_user_error(monkeypatch):
    import ctypes

    libc = ctypes.CDLL(None)
    libc.srand(ctypes.c_uint(5))
    expected = [libc.rand() for _ in range(3)]
    generators._seed_c_rand(5)
    assert [libc.rand() for _ in range(3)] == expected

    def no_libc(name):
        raise OSError("no such library")

    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    with pytest.raises(UserError) as err:
        generators._seed_c_rand(0)
    assert str(err.value) == (
        "selective search cannot seed the C library's rand() here (no such library), so its ranking "
        "would depend on the order of images; use data.proposals.method=edgeboxes")


def test_file_boxes_are_float32_whatever_the_file_holds(tmp_path):
    reader = _FakeReader(["a"], [(100, 100)])
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps({"a": [[0, 0, 50, 50], [10, 10, 90, 90]]}))  # integers, no score
    boxes, scores = generators.FileBoxes(str(path)).propose(reader, 0)
    assert boxes.dtype == np.float32 and scores.dtype == np.float32 and scores.tolist() == [0, -1]


def test_the_oracle_jitters_each_side_within_its_fraction_of_the_box_size():
    boxes = [[10, 20, 210, 60], [300, 100, 320, 400]]  # 200 x 40 and 20 x 300: sides differ
    reader = _FakeReader(["a", "b"], [(500, 500)] * 2, boxes=[boxes, []])
    oracle = generators.GroundTruthOracle(jitters=50, jitter=0.1, seed=3)
    out, scores = oracle.propose(reader, 0)
    assert out.dtype == np.float32 and scores.dtype == np.float32 and out.shape == (2 * 51, 4)
    np.testing.assert_array_equal(out[:2], boxes)
    tight = np.array(boxes, np.float32)
    sizes = np.c_[tight[:, 2] - tight[:, 0], tight[:, 3] - tight[:, 1]][:, [0, 1, 0, 1]]
    offsets = (out[2:].reshape(50, 2, 4) - tight) / sizes  # in units of the box's own size
    assert np.all(np.abs(offsets) <= 0.1 + 1e-5)
    assert offsets.min() < -0.08 and offsets.max() > 0.08  # both ways, up to the fraction
    expected_scores = [1.0, 1.0] + [np.float32(0.5 - 0.01 * j) for j in range(50) for _ in range(2)]
    np.testing.assert_array_equal(scores, expected_scores)
    other_seed, _ = generators.GroundTruthOracle(jitters=50, jitter=0.1, seed=4).propose(reader, 0)
    assert not np.array_equal(out, other_seed)
    empty_boxes, empty_scores = oracle.propose(reader, 1)
    assert empty_boxes.shape == (0, 4) and empty_boxes.dtype == np.float32
    assert empty_scores.shape == (0,) and empty_scores.dtype == np.float32


def test_the_oracle_records_its_settings():
    assert generators.GroundTruthOracle().parameters() == {"boxes": "tight", "jitters": 3, "jitter": 0.1, "seed": 0}


def test_proposal_settings_outside_their_choices_name_the_key_and_the_choices(synthetic_voc, tmp_path):
    """load_config checks the choices; a config changed after loading (a sweep agent, a
    notebook) meets the generator's own check."""
    def error(**changes):
        cfg = make_cfg(synthetic_voc, tmp_path, "data.proposals.method=edgeboxes", "data.proposals.edge_model=null")
        for key, value in changes.items():
            cfg.data.proposals[key] = value
        with pytest.raises(UserError) as err:
            generators.build_generator(cfg)
        return str(err.value)

    assert error(min_size_on="edge") == "data.proposals.min_size_on: unknown value 'edge'; choose one of window, box"
    assert error(method="sift") == ("data.proposals.method: unknown method 'sift'; "
                                    "choose one of edgeboxes, selective_search, file, ground_truth")
    assert error(edge_fallback="canny") == \
        "data.proposals.edge_fallback: unknown value 'canny'; choose one of gradient, selective_search"
    generator = generators.build_generator(make_cfg(
        synthetic_voc, tmp_path, "data.proposals.method=edgeboxes", "data.proposals.edge_model=null",
        "data.proposals.max_candidates=123"))
    assert isinstance(generator, generators.EdgeBoxes) and generator.max_candidates == 123
