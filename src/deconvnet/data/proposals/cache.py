"""The proposal cache: one ``.npz`` file per split and generator configuration.

File name: ``<cache_dir>/<split>-<method>-<key>.npz`` where ``key`` is a hash of the
method and all its parameters. The file records those parameters and the split's image
ids; a cache whose record does not match the current configuration is never used
(:func:`read_cache` returns None and the caller recomputes).

Arrays in the file: ``ids`` (N unicode), ``offsets`` (N + 1 int64), ``boxes`` (M x 4
float32: image i owns rows offsets[i]:offsets[i+1]) and ``meta`` (a JSON string).
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

CACHE_FORMAT = 2  # 2: EdgeBoxes boxes no longer depend on the order of images


def cache_key(method: str, parameters: dict[str, Any]) -> str:
    text = json.dumps({"method": method, "parameters": parameters}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def cache_path(cache_dir: str | Path, split: str, method: str, parameters: dict[str, Any]) -> Path:
    return Path(cache_dir) / f"{split}-{method}-{cache_key(method, parameters)}.npz"


def write_cache(path: Path, split: str, method: str, parameters: dict[str, Any],
                proposals: dict[str, np.ndarray]) -> Path:
    """Write atomically: a temporary file in the same folder, then os.replace."""
    ids = list(proposals)
    counts = np.array([len(proposals[i]) for i in ids], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    boxes = (np.concatenate([proposals[i] for i in ids]).astype(np.float32)
             if ids else np.zeros((0, 4), np.float32)).reshape(-1, 4)
    meta = {"format": CACHE_FORMAT, "split": split, "method": method, "parameters": parameters}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, ids=np.array(ids, dtype=np.str_), offsets=offsets, boxes=boxes,
                     meta=np.array(json.dumps(meta, sort_keys=True)))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_cache(path: Path, method: str, parameters: dict[str, Any],
               ids: list[str]) -> tuple[dict[str, np.ndarray] | None, str]:
    """(proposals, "") when the cache matches; (None, why not) otherwise."""
    if not path.is_file():
        return None, "no cache yet"
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            cached_ids = data["ids"].tolist()
            offsets, boxes = data["offsets"], data["boxes"]
    # a truncated or overwritten file fails inside zipfile/numpy with any of these
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        return None, f"unreadable cache ({type(err).__name__}: {err})"
    if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT:
        return None, "cache written by another version"
    if meta.get("method") != method or meta.get("parameters") != json.loads(json.dumps(parameters)):
        return None, "generator or parameters differ from the cache's record"
    if cached_ids != list(ids):
        return None, "the split's image list differs from the cache's"
    if (boxes.ndim != 2 or boxes.shape[1] != 4 or offsets.shape != (len(cached_ids) + 1,)
            or offsets[0] != 0 or offsets[-1] != len(boxes) or np.any(np.diff(offsets) < 0)):
        return None, "inconsistent cache (offsets do not match the boxes)"
    return {image_id: boxes[offsets[k]:offsets[k + 1]] for k, image_id in enumerate(cached_ids)}, ""
