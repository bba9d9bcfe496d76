"""Checking the splits a config will use, before any training: ``data.check=headers|full``.

``headers`` (the default, seconds on VOC) opens each split as the readers do: the lists, the
existence of every file, image and mask sizes from the file headers. ``full`` also decodes
every image and every mask, in parallel with a progress bar, and reports every bad file at
once (a truncated JPEG, a label value outside the classes and 255, an RGB mask, a mask of
another size than its image) instead of failing on the first one hours into training.

    deconvnet pipeline experiments/table1 --steps data --full
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os

from tqdm import tqdm

from deconvnet.errors import DataError

log = logging.getLogger(__name__)

# bad files listed in the error; the count says how many more there are
MAX_LISTED = 50


def splits_to_check(cfg) -> list[str]:
    """The splits a recipe reads: training, validation and evaluation (each once); the eval
    split only when its list exists (VOC's test split may not be downloaded)."""
    from deconvnet.data.voc import voc_folder

    splits = [str(cfg.data.train_split), str(cfg.data.val_split)]
    lists = voc_folder(cfg.data.root) / "ImageSets" / "Segmentation"
    if (lists / f"{cfg.eval.split}.txt").is_file():
        splits.append(str(cfg.eval.split))
    return list(dict.fromkeys(splits))


def problems_of(reader, i: int) -> list[str]:
    """Every problem of item ``i`` of a VOCSegmentationIndex: decodes its image and, for a
    labelled split, its class mask (values, size) and instance mask (size)."""
    problems = []
    try:
        reader.image(i)
    except (DataError, OSError, ValueError) as err:
        problems.append(str(err))
    if reader.has_labels:
        try:
            label = reader.label(i)
            reader.instances(i, label)
        except (DataError, OSError, ValueError) as err:
            problems.append(str(err))
    return problems


# Worker-process state, set once per process by the pool initializer.
_READER: list = []


def _init_worker(parent_pid: int, reader) -> None:
    from deconvnet.runtime.children import die_with_parent

    die_with_parent(parent_pid)  # no orphaned worker after a kill -9 of the check
    _READER[:] = [reader]


def _check_item(i: int) -> list[str]:
    return problems_of(_READER[0], i)


def full_check(reader, workers: int = 0) -> list[str]:
    """The problems of every item of ``reader`` (empty: all good), in item order, decoded by
    ``workers`` processes (0: all cores; 1: in this process)."""
    workers = (os.cpu_count() or 1) if workers <= 0 else workers
    workers = max(1, min(workers, len(reader)))
    bar = dict(total=len(reader), desc=f"checking {reader.split} (full)", unit="img")
    if workers == 1:
        results = [problems_of(reader, i) for i in tqdm(range(len(reader)), **bar)]
    else:
        chunk = max(1, min(16, len(reader) // (workers * 8)))
        context = mp.get_context("spawn")
        with context.Pool(workers, initializer=_init_worker, initargs=(os.getpid(), reader)) as pool:
            results = list(tqdm(pool.imap(_check_item, range(len(reader)), chunksize=chunk), **bar))
    return [problem for item in results for problem in item]


def check_data(cfg, splits: list[str] | None = None, workers: int = 0) -> dict[str, int]:
    """Check ``splits`` (default :func:`splits_to_check`) of ``cfg.data.root`` as
    ``cfg.data.check`` says; returns {split: images}. Raises one DataError listing every bad
    file found (a full check) or the first problem (headers)."""
    from deconvnet.data.synthetic import ensure_synthetic
    from deconvnet.data.voc import VOCSegmentationIndex

    ensure_synthetic(cfg)
    full = str(cfg.data.check) == "full"
    counts, problems = {}, []
    for split in splits or splits_to_check(cfg):
        # headers: sizes are compared here; full: the decoding compares them, for every file
        reader = VOCSegmentationIndex(cfg.data.root, split, check_sizes=not full)
        counts[split] = len(reader)
        if full:
            problems += [f"[{split}] {p}" for p in full_check(reader, workers)]
        log.info("data %s: %d images in %s (%s check)", split, len(reader), cfg.data.root, cfg.data.check)
    if problems:
        listed = "\n  ".join(problems[:MAX_LISTED])
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        raise DataError(
            f"the full data check found {len(problems)} bad file(s) in {cfg.data.root}; replace or "
            f"re-generate them, or remove their ids from the split lists:\n  {listed}{more}"
        )
    return counts
