"""Proposal generators: one interface, several sources of candidate object boxes.

Every generator returns raw candidates ``(boxes float32 K x 4 [x1, y1, x2, y2], scores
float32 K)`` for one image of a split; :func:`finalize` then applies the common rules
(clip to the image, drop boxes whose shorter side is below ``min_size``, sort by score,
keep ``top_k``). ``parameters()`` lists everything that changes the output; the cache
records it, so that a change is never served from a stale cache.

* ``edgeboxes`` — EdgeBoxes (``cv2.ximgproc``), as the paper. The edge map comes from the
  Structured Edge model file ``data.proposals.edge_model`` when given, otherwise from
  the gradient-magnitude fallback in :mod:`.edges`.
* ``selective_search`` — OpenCV's selective search, fast mode; scored by rank.
* ``file`` — precomputed boxes (:class:`FileBoxes` documents the format), e.g. the
  official cached EdgeBoxes converted once.
* ``ground_truth`` — NOT a proposal method: an oracle for debugging and demos that
  returns the annotated instance boxes (enlarged like stage-1 windows) and a few jittered
  copies. Results obtained with it are not comparable with the paper's.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from deconvnet.data.windows import clip_boxes, enlarge_boxes
from deconvnet.errors import DataError, UserError

METHODS = ("edgeboxes", "selective_search", "file", "ground_truth")


def finalize(boxes, scores, width: int, height: int, min_size: float, top_k: int) -> np.ndarray:
    """The common rules: clip to the image, drop min(w, h) < min_size, best score first, top_k."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    if boxes.shape[0] == 0:
        return np.zeros((0, 4), np.float32)
    boxes = clip_boxes(boxes, width, height)
    sides = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    keep = sides >= min_size
    boxes, scores = boxes[keep], scores[keep]
    order = np.argsort(-scores, kind="stable")[:top_k]
    return np.ascontiguousarray(boxes[order], dtype=np.float32)


def file_digest(path: str | Path) -> str:
    """sha256 of a file's content (recorded so that a replaced file invalidates the cache)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ProposalGenerator:
    """Base class. Subclasses implement :meth:`propose_image` or override :meth:`propose`."""

    method = "base"

    def parameters(self) -> dict[str, Any]:
        """Everything that changes the output (JSON-serialisable)."""
        return {}

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
                "installed cv2 lacks them: the plain opencv-python(-headless) that albumentations "
                "pulls in has overwritten the contrib build. Fix it with `pip install --no-deps "
                "--force-reinstall opencv-contrib-python-headless` (or `make setup`)."
            )
        if edge_model is not None and not Path(edge_model).is_file():
            raise UserError(
                f"data.proposals.edge_model: structured-edge model file not found: {edge_model}. "
                "Give the path of OpenCV's model.yml.gz, or set it to null to use the "
                "in-process gradient edge map."
            )
        self.max_candidates = int(max_candidates)
        self.edge_model = str(edge_model) if edge_model else None
        self.alpha, self.beta = float(alpha), float(beta)
        self._edge_model_digest = file_digest(self.edge_model) if self.edge_model else None
        self._cv_edges = None

    def parameters(self) -> dict[str, Any]:
        return {
            "max_candidates": self.max_candidates, "alpha": self.alpha, "beta": self.beta,
            "edge_model": self._edge_model_digest or "gradient-fallback",
        }

    def _edges(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import cv2

        if self.edge_model is None:
            from deconvnet.data.proposals.edges import edge_map

            return edge_map(image)
        if self._cv_edges is None:
            self._cv_edges = cv2.ximgproc.createStructuredEdgeDetection(self.edge_model)
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
            raise UserError("data.proposals.method=file needs data.proposals.file: the path of a .npz or .json of boxes")
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"data.proposals.file: proposal file not found: {self.path}")
        if self.path.suffix not in (".npz", ".json"):
            raise UserError(f"data.proposals.file: {self.path} must be a .npz or .json file (see FileBoxes)")
        self._digest = file_digest(self.path)
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
    """ORACLE, not a proposal method: the annotated instance boxes enlarged by ``box_scale``
    (like stage-1 windows), score 1, plus ``jitters`` randomly shifted/rescaled copies of
    each (offsets up to ``jitter`` x the box size, deterministic per image id), lower scores.
    For debugging and the demo only; it reads the ground truth of the split it proposes for."""

    method = "ground_truth"

    def __init__(self, box_scale: float = 1.2, jitters: int = 3, jitter: float = 0.1, seed: int = 0) -> None:
        self.box_scale, self.jitters, self.jitter, self.seed = float(box_scale), int(jitters), float(jitter), int(seed)

    def parameters(self) -> dict[str, Any]:
        return {"box_scale": self.box_scale, "jitters": self.jitters, "jitter": self.jitter, "seed": self.seed}

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
        boxes = enlarge_boxes(np.stack([inst.box for inst in instances]), self.box_scale)
        rng = np.random.default_rng([self.seed, zlib.crc32(reader.ids[i].encode())])
        sizes = np.concatenate([boxes[:, 2:] - boxes[:, :2]] * 2, axis=1)  # w, h, w, h
        copies = [boxes]
        for _ in range(self.jitters):
            copies.append(boxes + rng.uniform(-self.jitter, self.jitter, boxes.shape).astype(np.float32) * sizes)
        scores = [np.ones(len(boxes), np.float32)]
        scores += [np.full(len(boxes), 0.5 - 0.01 * j, np.float32) for j in range(self.jitters)]
        return np.concatenate(copies), np.concatenate(scores)


def build_generator(cfg) -> ProposalGenerator:
    """The generator named by ``cfg.data.proposals.method``."""
    pcfg = cfg.data.proposals
    method = str(pcfg.method)
    if method == "edgeboxes":
        return EdgeBoxes(max_candidates=pcfg.max_candidates, edge_model=pcfg.edge_model)
    if method == "selective_search":
        return SelectiveSearch(max_candidates=pcfg.max_candidates)
    if method == "file":
        return FileBoxes(pcfg.file)
    if method == "ground_truth":
        return GroundTruthOracle(box_scale=cfg.data.box_scale, seed=cfg.seed)
    raise UserError(f"data.proposals.method: unknown method '{method}'; choose one of {', '.join(METHODS)}")
