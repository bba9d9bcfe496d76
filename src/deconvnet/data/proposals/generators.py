"""Proposal generators: one interface, several sources of candidate object boxes.

Every generator returns raw candidates ``(boxes float32 K x 4 [x1, y1, x2, y2], scores
float32 K)`` for one image of a split; :meth:`ProposalGenerator.finalize` then applies the
common rules (:func:`finalize`: clip to the image, drop proposals whose window, or box with
``data.proposals.min_size_on=box``, has a shorter side below ``min_size``, sort by score,
keep ``top_k``). ``parameters()`` and ``selection()`` list everything that changes the
output; the cache records both, so that a change is never served from a stale cache.

* ``edgeboxes`` — EdgeBoxes (``cv2.ximgproc``), as the paper. The edge map comes from the
  Structured Edge model file ``data.proposals.edge_model`` (by default
  ``${data.root}/models/model.yml.gz`` when it exists: ``deconvnet download edge-model``);
  without it, ``data.proposals.edge_fallback`` decides (:func:`build_generator`, which
  warns once): EdgeBoxes on the gradient-magnitude edges of :mod:`.edges`, or selective
  search. :func:`edge_source` says which made the boxes.
* ``selective_search`` — OpenCV's selective search, fast mode; scored by rank.
* ``file`` — precomputed boxes (:class:`FileBoxes` documents the format), e.g. the
  official cached EdgeBoxes converted once.
* ``ground_truth`` — NOT a proposal method: an oracle for debugging and demos that
  returns the annotated instance boxes (tight: the window rule adds the context, as for
  any proposal) and a few jittered copies. Results obtained with it are not comparable with the paper's.
"""

from __future__ import annotations

import json
import logging
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from deconvnet.data.windows import clip_boxes, make_windows, window_params
from deconvnet.errors import DataError, UserError
from deconvnet.hashing import file_sha256

log = logging.getLogger(__name__)

METHODS = ("edgeboxes", "selective_search", "file", "ground_truth")
EDGE_FALLBACKS = ("gradient", "selective_search")
MIN_SIZE_ON = ("window", "box")
DEFAULT_EDGE_MODEL = "models/model.yml.gz"  # under data.root; `deconvnet download edge-model`


def finalize(boxes, scores, width: int, height: int, min_size: float, top_k: int,
             window: dict | None = None, clip: bool = True) -> np.ndarray:
    """The common rules: clip to the image (``clip``), drop proposals whose shorter side is
    below ``min_size``, best score first, ``top_k``.

    ``window``: :func:`~deconvnet.data.windows.make_windows` arguments: the size rule then
    applies to each box's window (the official scripts skip extended boxes with
    min(w, h) < 112); None: to the box itself. The boxes returned are the boxes, not windows.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    if boxes.shape[0] == 0:
        return np.zeros((0, 4), np.float32)
    if clip:
        boxes = clip_boxes(boxes, width, height)
    measured = make_windows(boxes, **window) if window is not None else boxes
    sides = np.minimum(measured[:, 2] - measured[:, 0], measured[:, 3] - measured[:, 1])
    keep = sides >= min_size
    boxes, scores = boxes[keep], scores[keep]
    order = np.argsort(-scores, kind="stable")[:top_k]
    return np.ascontiguousarray(boxes[order], dtype=np.float32)


class ProposalGenerator:
    """Base class. Subclasses implement :meth:`propose_image` or override :meth:`propose`."""

    method = "base"
    # how :meth:`finalize` measures the size rule (set by :func:`build_generator`): the
    # window of each box (make_windows arguments) or, None, the box itself; and whether
    # boxes are clipped to the image (not for boxes that are extended windows already)
    window: dict | None = None
    clip: bool = True

    def parameters(self) -> dict[str, Any]:
        """Everything that changes the output (JSON-serialisable)."""
        return {}

    def selection(self) -> dict[str, Any]:
        """How :meth:`finalize` selects boxes, for the cache record (JSON-serialisable)."""
        return {"min_size_on": "window" if self.window is not None else "box",
                "window": self.window, "clip": self.clip}

    def finalize(self, boxes, scores, width: int, height: int, min_size: float, top_k: int) -> np.ndarray:
        """:func:`finalize` with this generator's window and clipping rules."""
        return finalize(boxes, scores, width, height, min_size, top_k, self.window, self.clip)

    def check(self, reader) -> None:
        """Cheap checks once before a whole split is processed (raise DataError/UserError)."""

    def propose(self, reader, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw (boxes, scores) for image ``i`` of a :class:`VOCSegmentationIndex`."""
        return self.propose_image(reader.image(i))

    def propose_image(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw (boxes, scores) for an H x W x 3 uint8 RGB image."""
        raise UserError(
            f"proposal method '{self.method}' needs a dataset image id; for arbitrary images "
            "set data.proposals.method to edgeboxes or selective_search"
        )

    def __getstate__(self) -> dict:
        # OpenCV objects do not pickle: worker processes rebuild them lazily.
        return {k: (None if k.startswith("_cv") else v) for k, v in self.__dict__.items()}


def _xywh_to_xyxy(rects) -> np.ndarray:
    rects = np.asarray(rects, dtype=np.float32).reshape(-1, 4)
    return np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)


class EdgeBoxes(ProposalGenerator):
    """EdgeBoxes with OpenCV's defaults (alpha 0.65, beta 0.75) and ``max_candidates`` boxes."""

    method = "edgeboxes"

    def __init__(self, max_candidates: int = 2000, edge_model: str | None = None,
                 alpha: float = 0.65, beta: float = 0.75) -> None:
        import cv2

        if not hasattr(cv2, "ximgproc") or not hasattr(cv2.ximgproc, "createEdgeBoxes"):
            raise UserError(
                "EdgeBoxes needs OpenCV's contrib modules (cv2.ximgproc.createEdgeBoxes), but the "
                "installed cv2 lacks them: a plain opencv-python(-headless), as packages such as albumentations "
                "pull in, has overwritten the contrib build. Fix it with `pip install --no-deps "
                "--force-reinstall opencv-contrib-python-headless` (or `make setup`)."
            )
        if edge_model is not None and not Path(edge_model).is_file():
            raise UserError(
                f"data.proposals.edge_model: structured-edge model file not found: {edge_model}. "
                "Get it with `deconvnet download edge-model --root DIR` and give DIR/model.yml.gz, "
                "or set it to null to use data.proposals.edge_fallback."
            )
        self.max_candidates = int(max_candidates)
        self.edge_model = str(edge_model) if edge_model else None
        self.alpha, self.beta = float(alpha), float(beta)
        self._edge_model_digest = file_sha256(self.edge_model) if self.edge_model else None
        self._cv_edges = None

    def parameters(self) -> dict[str, Any]:
        return {
            "max_candidates": self.max_candidates, "alpha": self.alpha, "beta": self.beta,
            "edge_model": self._edge_model_digest or "gradient-fallback",
            "edges": self.edges(),
        }

    def edges(self) -> str:
        """Which edges the boxes come from (recorded in the cache, shown in results.md/W&B)."""
        if self.edge_model:
            return f"structured edges ({Path(self.edge_model).name}, sha256 {self._edge_model_digest[:12]})"
        return "gradient edges (in-process fallback, no Structured Edge model)"

    def _edges(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.edge_model is None:
            from deconvnet.data.proposals.edges import edge_map

            return edge_map(image)
        if self._cv_edges is None:
            self._cv_edges = load_structured_edges(self.edge_model)
        edges = self._cv_edges.detectEdges(image.astype(np.float32) / 255.0)
        orientation = self._cv_edges.computeOrientation(edges)
        return self._cv_edges.edgesNms(edges, orientation), orientation

    def propose_image(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import cv2

        # A new EdgeBoxes object per image: a reused one keeps state between calls and gives
        # other boxes for the same image, so results would depend on the order of images.
        edge_boxes = cv2.ximgproc.createEdgeBoxes(
            alpha=self.alpha, beta=self.beta, maxBoxes=self.max_candidates)
        edges, orientation = self._edges(image)
        found = edge_boxes.getBoundingBoxes(edges, orientation)
        rects, scores = found if isinstance(found, tuple) else (found, None)
        if rects is None or len(rects) == 0:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
        boxes = _xywh_to_xyxy(rects)
        if scores is None or len(scores) != len(boxes):  # old OpenCV: boxes come sorted
            scores = -np.arange(len(boxes), dtype=np.float32)
        return boxes, np.asarray(scores, np.float32).reshape(-1)


class SelectiveSearch(ProposalGenerator):
    """OpenCV's selective search in fast mode; boxes come ranked, the score is -rank.

    OpenCV ranks regions by ``rand() * level``; the C ``rand()`` is seeded with
    :data:`SELECTIVE_SEARCH_SEED` before every image, so an image's boxes and their order
    do not depend on the images processed before it."""

    method = "selective_search"

    def __init__(self, max_candidates: int = 2000) -> None:
        import cv2

        if not hasattr(cv2, "ximgproc") or not hasattr(cv2.ximgproc, "segmentation"):
            raise UserError(
                "selective search needs OpenCV's contrib modules (cv2.ximgproc.segmentation); "
                "reinstall with `pip install --no-deps --force-reinstall opencv-contrib-python-headless`"
            )
        self.max_candidates = int(max_candidates)

    def parameters(self) -> dict[str, Any]:
        return {"mode": "fast", "max_candidates": self.max_candidates, "rand_seed": SELECTIVE_SEARCH_SEED}

    def propose_image(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import cv2

        # OpenCV ranks the regions by rand() x level with the C library's global rand():
        # without a fixed seed the same image gets its boxes in another order after other
        # images, so the top-k (and the cache) would depend on the order of processing.
        _seed_c_rand(SELECTIVE_SEARCH_SEED)
        search = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
        search.setBaseImage(np.ascontiguousarray(image[:, :, ::-1]))  # OpenCV wants BGR
        search.switchToSelectiveSearchFast()
        rects = search.process()[: self.max_candidates]
        boxes = _xywh_to_xyxy(rects)
        return boxes, -np.arange(len(boxes), dtype=np.float32)


SELECTIVE_SEARCH_SEED = 0  # the C rand() seed set before every selective search


def _seed_c_rand(seed: int) -> None:
    """``srand(seed)`` of the C library OpenCV calls ``rand()`` from (this process's libc)."""
    import ctypes

    try:
        libc = ctypes.CDLL(None)  # the symbols already loaded: the libc cv2 links against
        libc.srand(ctypes.c_uint(seed))
    except (OSError, AttributeError, TypeError) as err:  # not a POSIX libc (e.g. Windows)
        raise UserError(
            f"selective search cannot seed the C library's rand() here ({err}), so its ranking "
            "would depend on the order of images; use data.proposals.method=edgeboxes"
        ) from None


class FileBoxes(ProposalGenerator):
    """Precomputed proposals from a file, mapping image id -> K x 4 or K x 5 numbers.

    Format: ``.npz`` with one array per image id (the key is the id), or ``.json`` with an
    object ``{"<id>": [[x1, y1, x2, y2(, score)], ...]}``. Coordinates are 0-based pixels of
    the original image with x2/y2 exclusive (MATLAB's 1-based [x y w h] boxes convert as
    x1 = x - 1, y1 = y - 1, x2 = x1 + w, y2 = y1 + h). A fifth column is the score (higher
    is better); without it, the file's order is the ranking. Every image of the split must
    have an entry (an empty list is fine: the evaluator then uses the whole image).
    """

    method = "file"

    def __init__(self, path: str | None) -> None:
        if not path:
            raise UserError(
                "data.proposals.method=file needs data.proposals.file: the path of a .npz or .json of boxes"
            )
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"data.proposals.file: proposal file not found: {self.path}")
        if self.path.suffix not in (".npz", ".json"):
            raise UserError(f"data.proposals.file: {self.path} must be a .npz or .json file (see FileBoxes)")
        self._digest = file_sha256(self.path)
        self._boxes: dict[str, np.ndarray] | None = None

    def parameters(self) -> dict[str, Any]:
        return {"file": self.path.name, "sha256": self._digest}

    def _table(self) -> dict[str, np.ndarray]:
        if self._boxes is None:
            try:
                if self.path.suffix == ".npz":
                    with np.load(self.path, allow_pickle=False) as data:
                        raw = {key: data[key] for key in data.files}
                else:
                    raw = json.loads(self.path.read_text())
                    if not isinstance(raw, dict):
                        raise ValueError("the top level must be an object {id: [[x1, y1, x2, y2], ...]}")
                table = {}
                for key, value in raw.items():
                    arr = np.asarray(value, dtype=np.float32)
                    arr = arr.reshape(0, 4) if arr.size == 0 else arr
                    if arr.ndim != 2 or arr.shape[1] not in (4, 5):
                        raise ValueError(f"entry '{key}' has shape {arr.shape}, expected K x 4 or K x 5")
                    table[str(key)] = arr
            except (OSError, ValueError, TypeError) as err:
                raise DataError(f"proposal file {self.path} cannot be read: {err}") from None
            self._boxes = table
        return self._boxes

    def check(self, reader) -> None:
        missing = [image_id for image_id in reader.ids if image_id not in self._table()]
        if missing:
            raise DataError(
                f"proposal file {self.path} has no entry for {len(missing)} of the {len(reader.ids)} "
                f"images of split '{reader.split}' (first: '{missing[0]}'); add them (an empty list "
                "for an image without proposals) or use another method"
            )

    def propose(self, reader, i: int) -> tuple[np.ndarray, np.ndarray]:
        image_id = reader.ids[i]
        arr = self._table().get(image_id)
        if arr is None:
            raise DataError(f"proposal file {self.path} has no entry for image '{image_id}'")
        scores = arr[:, 4] if arr.shape[1] == 5 else -np.arange(len(arr), dtype=np.float32)
        return arr[:, :4], scores


class GroundTruthOracle(ProposalGenerator):
    """ORACLE, not a proposal method: the annotated instances' tight boxes, score 1 (the
    window rule adds the context, as for any proposal), plus ``jitters`` randomly
    shifted/rescaled copies of each (offsets up to ``jitter`` x the box size, deterministic
    per image id), lower scores. For debugging and the demo only; it reads the ground truth
    of the split it proposes for."""

    method = "ground_truth"

    def __init__(self, jitters: int = 3, jitter: float = 0.1, seed: int = 0) -> None:
        self.jitters, self.jitter, self.seed = int(jitters), float(jitter), int(seed)

    def parameters(self) -> dict[str, Any]:
        return {"boxes": "tight", "jitters": self.jitters, "jitter": self.jitter, "seed": self.seed}

    def check(self, reader) -> None:
        if not reader.has_labels:
            raise DataError(
                f"proposal method ground_truth reads the annotations, but split '{reader.split}' "
                "has none; use edgeboxes, selective_search or file"
            )

    def propose(self, reader, i: int) -> tuple[np.ndarray, np.ndarray]:
        instances = reader.instances(i)
        if not instances:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
        boxes = np.stack([inst.box for inst in instances]).astype(np.float32)
        rng = np.random.default_rng([self.seed, zlib.crc32(reader.ids[i].encode())])
        sizes = np.concatenate([boxes[:, 2:] - boxes[:, :2]] * 2, axis=1)  # w, h, w, h
        copies = [boxes]
        for _ in range(self.jitters):
            copies.append(boxes + rng.uniform(-self.jitter, self.jitter, boxes.shape).astype(np.float32) * sizes)
        scores = [np.ones(len(boxes), np.float32)]
        scores += [np.full(len(boxes), 0.5 - 0.01 * j, np.float32) for j in range(self.jitters)]
        return np.concatenate(copies), np.concatenate(scores)


def load_structured_edges(path: str | Path):
    """OpenCV's Structured Edge detector from ``model.yml.gz``; UserError if it cannot load."""
    import cv2

    try:
        return cv2.ximgproc.createStructuredEdgeDetection(str(path))
    except cv2.error as err:
        raise UserError(
            f"{path} is not a Structured Edge model that OpenCV can load ({str(err).strip()[:200]}); "
            "delete it and run `deconvnet download edge-model` again"
        ) from None


_warned_no_edge_model: set[str] = set()


def resolve_edge_model(cfg) -> str | None:
    """The Structured Edge model file EdgeBoxes uses, or None (``data.proposals.edge_fallback``).

    ``edge_model: auto`` (default): ``${data.root}/models/model.yml.gz`` when it exists,
    otherwise None with ONE warning (per process and path) that says how to get the model;
    null: None without a warning; anything else: that path (which must exist).
    """
    value = cfg.data.proposals.edge_model
    if value is None or str(value).strip().lower() in ("", "none", "null"):
        return None
    if str(value) != "auto":
        return str(value)
    default = Path(str(cfg.data.root)) / DEFAULT_EDGE_MODEL
    if default.is_file():
        return str(default)
    if str(default) not in _warned_no_edge_model:
        _warned_no_edge_model.add(str(default))
        fallback = str(cfg.data.proposals.edge_fallback)
        what = ("EdgeBoxes on in-process gradient edges" if fallback == "gradient" else "selective search")
        log.warning(
            "no Structured Edge model at %s, so proposals come from %s (data.proposals.edge_fallback), "
            "not the paper's EdgeBoxes on Structured Edges. Get the model with `deconvnet download "
            "edge-model --root %s` (or `make data`); set data.proposals.edge_model=null to silence this.",
            default, what, default.parent)
    return None


def build_generator(cfg) -> ProposalGenerator:
    """The generator named by ``cfg.data.proposals.method``, with the selection rules of
    ``cfg.data.proposals`` (size rule on the window or the box; extended boxes not clipped)."""
    generator = _build_source(cfg)
    pcfg = cfg.data.proposals
    if str(pcfg.min_size_on) not in MIN_SIZE_ON:
        raise UserError(f"data.proposals.min_size_on: unknown value '{pcfg.min_size_on}'; "
                        f"choose one of {', '.join(MIN_SIZE_ON)}")
    generator.window = window_params(cfg.data, proposals=True) if str(pcfg.min_size_on) == "window" else None
    generator.clip = not bool(pcfg.extended)
    return generator


def edge_source(cfg) -> str:
    """Which source makes the proposals of ``cfg``, in words (for results.md and W&B):
    for EdgeBoxes, which edges (Structured Edges or the fallback)."""
    pcfg = cfg.data.proposals
    method = str(pcfg.method)
    if method == "edgeboxes":
        generator = _build_source(cfg)
        if isinstance(generator, EdgeBoxes):
            return f"EdgeBoxes on {generator.edges()}"
        return "selective search (fallback: no Structured Edge model for EdgeBoxes)"
    if method == "file":
        extended = " (extended windows)" if bool(pcfg.extended) else ""
        return f"boxes from {Path(str(pcfg.file)).name}{extended}"
    if method == "ground_truth":
        return "ground-truth boxes (oracle, not a proposal method)"
    return method.replace("_", " ")


def _build_source(cfg) -> ProposalGenerator:
    """The generator named by ``cfg.data.proposals.method``."""
    pcfg = cfg.data.proposals
    method = str(pcfg.method)
    if method == "edgeboxes":
        edge_model = resolve_edge_model(cfg)
        if edge_model is None:
            fallback = str(pcfg.edge_fallback)
            if fallback not in EDGE_FALLBACKS:
                raise UserError(f"data.proposals.edge_fallback: unknown value '{fallback}'; "
                                f"choose one of {', '.join(EDGE_FALLBACKS)}")
            if fallback == "selective_search":
                return SelectiveSearch(max_candidates=pcfg.max_candidates)
        return EdgeBoxes(max_candidates=pcfg.max_candidates, edge_model=edge_model)
    if method == "selective_search":
        return SelectiveSearch(max_candidates=pcfg.max_candidates)
    if method == "file":
        return FileBoxes(pcfg.file)
    if method == "ground_truth":
        return GroundTruthOracle(seed=cfg.seed)
    raise UserError(f"data.proposals.method: unknown method '{method}'; choose one of {', '.join(METHODS)}")
