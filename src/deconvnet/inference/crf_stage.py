"""The last stage of per-image inference, shared by evaluation and ``deconvnet predict``:
each image's label maps, completed with the dense CRF of DeconvNet and EDeconvNet (the
``+CRF`` rows of Table 1), handed back finished and in the order the images came in.

The CRF runs on a pool of worker processes (:class:`~deconvnet.inference.crf.CRFPool`)
while the caller computes the next images; at most the pool's in-flight jobs are kept.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from deconvnet.inference.crf import CRFParams, CRFPool

CRF_INPUTS = ("DeconvNet", "EDeconvNet")  # the maps Table 1 refines with the CRF


@dataclass
class _Waiting:
    key: Any
    labels: dict[str, np.ndarray]
    remaining: int = 0
    number: int = field(default=0)


class CRFStage:
    """``add(key, rgb, labels, probabilities)`` per image; finished images come back from
    ``add`` and :meth:`finish` as ``(key, labels)`` in the order they were added, ``labels``
    holding the given methods and their ``+CRF`` rows. Without CRF parameters, images are
    finished as soon as they are added. Use as a context manager (stops the workers)."""

    def __init__(self, params: CRFParams | None, workers: int = 0) -> None:
        self.pool = CRFPool(params, workers) if params is not None else None
        self._queue: deque[_Waiting] = deque()
        self._by_number: dict[int, _Waiting] = {}
        self._count = 0

    @property
    def enabled(self) -> bool:
        return self.pool is not None

    def crf_methods(self, methods: list[str]) -> list[str]:
        """The ``+CRF`` rows these base methods get."""
        return [f"{m}+CRF" for m in methods if m in CRF_INPUTS] if self.enabled else []

    def add(self, key: Hashable, rgb: np.ndarray | None, labels: Mapping[str, np.ndarray],
            probabilities: Mapping[str, np.ndarray]) -> list[tuple[Any, dict[str, np.ndarray]]]:
        """Queue one image: ``labels`` (method -> uint8 H x W) and the ``probabilities``
        (method -> float C x H x W) of the methods to refine (others are ignored); ``rgb``
        uint8 H x W x 3 is needed when the CRF is on. Returns the images now finished."""
        jobs = [m for m in probabilities if m in CRF_INPUTS] if self.enabled else []
        entry = _Waiting(key, dict(labels), len(jobs), self._count)
        self._count += 1
        self._queue.append(entry)
        if jobs:
            self._by_number[entry.number] = entry
            for method in jobs:
                self.pool.submit((entry.number, f"{method}+CRF"), rgb, np.asarray(probabilities[method]))
        return self._collect(self.pool.ready() if self.enabled else [])

    def finish(self) -> list[tuple[Any, dict[str, np.ndarray]]]:
        """Wait for every CRF job; the remaining images, in order."""
        return self._collect(self.pool.drain() if self.enabled else [])

    def _collect(self, results: list) -> list[tuple[Any, dict[str, np.ndarray]]]:
        for (number, method), crf_labels in results:
            entry = self._by_number[number]
            entry.labels[method] = crf_labels
            entry.remaining -= 1
            if entry.remaining == 0:
                del self._by_number[number]
        done = []
        while self._queue and self._queue[0].remaining == 0:
            entry = self._queue.popleft()
            done.append((entry.key, entry.labels))
        return done

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    def __enter__(self) -> CRFStage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
