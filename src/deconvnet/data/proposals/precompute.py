"""Computing a split's proposals (in parallel, with a progress bar) and serving them cached.

``load_proposals(cfg, split)`` is what the DataModules and the evaluator call;
``precompute_from_config(cfg)`` is the ``deconvnet proposals CONFIG`` command. Which
splits it computes: ``data.proposals.splits`` when set, otherwise ``data.train_split``
(stage-2 training windows), ``data.val_split`` and ``eval.split`` (evaluation), each once.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from deconvnet.data.proposals import generators
from deconvnet.data.proposals.cache import cache_path, read_cache, write_cache
from deconvnet.runtime.children import die_with_parent
from deconvnet.runtime.folders import ensure_writable
from deconvnet.runtime.lock import FolderLock

log = logging.getLogger(__name__)


def proposal_parameters(cfg, generator) -> dict:
    """The cache record: the common filtering rules and the generator's own parameters."""
    pcfg = cfg.data.proposals
    return {"top_k": int(pcfg.top_k), "min_size": float(pcfg.min_size), **generator.selection(),
            **generator.parameters()}


def _one_image(reader, generator, i: int, min_size: float, top_k: int) -> np.ndarray:
    boxes, scores = generator.propose(reader, i)
    height, width = reader.sizes[i]
    return generator.finalize(boxes, scores, width, height, min_size, top_k)


# Worker-process state, set once per process by the pool initializer.
_WORKER: dict = {}


def _init_worker(parent_pid: int, reader, generator, min_size: float, top_k: int) -> None:
    import cv2

    die_with_parent(parent_pid)  # no orphaned worker after a kill -9 of `deconvnet proposals`
    cv2.setNumThreads(1)  # the pool already uses every core
    _WORKER.update(reader=reader, generator=generator, min_size=min_size, top_k=top_k)


def _work(i: int) -> np.ndarray:
    return _one_image(_WORKER["reader"], _WORKER["generator"], i, _WORKER["min_size"], _WORKER["top_k"])


def compute_proposals(reader, generator, min_size: float, top_k: int, workers: int = 0) -> dict[str, np.ndarray]:
    """Proposals for every image of ``reader``: {id: float32 K x 4}, computed by ``workers``
    processes (0: all cores; 1: in this process)."""
    generator.check(reader)
    workers = (os.cpu_count() or 1) if workers <= 0 else workers
    workers = max(1, min(workers, len(reader)))
    bar = dict(total=len(reader), desc=f"proposals {reader.split} ({generator.method})", unit="img")
    if workers == 1:
        results = [_one_image(reader, generator, i, min_size, top_k) for i in tqdm(range(len(reader)), **bar)]
    else:
        # spawn: OpenCV's thread pool does not survive fork reliably
        context = mp.get_context("spawn")
        chunk = max(1, min(16, len(reader) // (workers * 8)))
        with context.Pool(workers, initializer=_init_worker,
                          initargs=(os.getpid(), reader, generator, min_size, top_k)) as pool:
            results = list(tqdm(pool.imap(_work, range(len(reader)), chunksize=chunk), **bar))
    return dict(zip(reader.ids, results))


def _open_split(cfg, split: str):
    from deconvnet.data.synthetic import ensure_synthetic
    from deconvnet.data.voc import VOCSegmentationIndex

    ensure_synthetic(cfg)  # a recipe's synthetic set is made when missing
    return VOCSegmentationIndex(cfg.data.root, split, check_sizes=False)


def ensure_proposals(cfg, split: str, reader=None) -> tuple[dict[str, np.ndarray], Path]:
    """(proposals, cache file): read from the cache when it matches, otherwise computed and cached."""
    reader = reader if reader is not None else _open_split(cfg, split)
    generator = generators.build_generator(cfg)
    pcfg = cfg.data.proposals
    parameters = proposal_parameters(cfg, generator)
    path = cache_path(pcfg.cache_dir, split, generator.method, parameters)
    proposals, why = read_cache(path, generator.method, parameters, list(reader.ids))
    if proposals is not None:
        return proposals, path
    if why != "no cache yet":
        log.warning("proposals: not using %s (%s); recomputing", path, why)
    ensure_writable(path.parent, "data.proposals.cache_dir")  # before the work, not after it
    # one writer per cache file: a second run computing the same cache stops at once
    with FolderLock(path.parent, what=f"computation of {path.name}", name=f".{path.name}.lock"):
        proposals = compute_proposals(reader, generator, float(pcfg.min_size), int(pcfg.top_k), int(pcfg.workers))
        write_cache(path, split, generator.method, parameters, proposals)
    return proposals, path


def load_proposals(cfg, split: str, reader=None) -> dict[str, np.ndarray]:
    """{image id: float32 K x 4 [x1, y1, x2, y2]} for every image of ``split``: best score
    first, inside the image, window side >= data.proposals.min_size, at most data.proposals.top_k
    (K may be 0). ``reader``: an already opened VOCSegmentationIndex of that split."""
    return ensure_proposals(cfg, split, reader)[0]


def proposal_splits(cfg) -> list[str]:
    """The splits ``deconvnet proposals`` computes (see the module docstring)."""
    chosen = list(cfg.data.proposals.splits) or [cfg.data.train_split, cfg.data.val_split, cfg.eval.split]
    return list(dict.fromkeys(str(s) for s in chosen))


def precompute_from_config(cfg) -> dict[str, Path]:
    """``deconvnet proposals CONFIG``: compute (or verify) the cache of every split; prints a summary."""
    written = {}
    for split in proposal_splits(cfg):
        proposals, path = ensure_proposals(cfg, split)
        counts = np.array([len(b) for b in proposals.values()])
        log.info(f"proposals {split}: {len(counts)} images, {counts.mean() if len(counts) else 0:.1f} boxes "
              f"per image, {int((counts == 0).sum())} without any -> {path}")
        written[split] = path
    return written


def proposals_for_image(cfg, image: np.ndarray) -> np.ndarray:
    """Proposals for one arbitrary RGB image (``deconvnet predict``): not cached."""
    generator = generators.build_generator(cfg)
    boxes, scores = generator.propose_image(image)
    pcfg = cfg.data.proposals
    return generator.finalize(boxes, scores, image.shape[1], image.shape[0], float(pcfg.min_size), int(pcfg.top_k))
