"""Fully connected CRF post-processing (Kraehenbuehl & Koltun) and a pool of CRF workers.

The official DeconvNet script refines the ensemble's probability map with a dense CRF:
unary ``-log(p)``, Potts pairwise terms, mean-field iterations on the uint8 RGB image, a
Gaussian (smoothness) kernel, a bilateral (appearance) kernel, no kernel normalisation
(pydensecrf's ``NO_NORMALIZATION``). Its numbers are the defaults of the config schema
(:class:`deconvnet.config.CRFConfig`), the ``official`` preset here; DeepLab-CRF's VOC values
are the ``deeplab`` preset. ``cfg.crf.preset=custom`` uses the numbers of ``cfg.crf`` as given.

The CRF runs on the CPU and takes about a second per VOC image, so :class:`CRFPool` runs
it in worker processes while the device computes the next images: jobs are submitted
asynchronously, at most ``max_pending`` are in flight (memory stays bounded), and results
come back in submission order.

This module imports numpy, pydensecrf and the config schema only (no torch), so worker
processes start fast.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Hashable, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from deconvnet.runtime.children import die_with_parent

# probabilities are clipped here before -log: a zero probability would give an infinite unary
MIN_PROBABILITY = 1e-8


@dataclass(frozen=True)
class CRFParams:
    """Dense CRF parameters (Potts weights, kernel widths in pixels / intensity levels)."""

    iterations: int
    gaussian_sxy: float
    gaussian_weight: float
    bilateral_sxy: float
    bilateral_srgb: float
    bilateral_weight: float


def _official() -> CRFParams:
    """The DeconvNet release's CRF (PAPER.md): the schema's defaults."""
    from deconvnet.config import CRFConfig

    defaults = CRFConfig()
    return CRFParams(**{f.name: getattr(defaults, f.name) for f in fields(CRFParams)})


PRESETS: dict[str, CRFParams] = {"official": _official()}
# DeepLab-CRF's VOC values: a wider, stronger bilateral kernel, the same Gaussian one
PRESETS["deeplab"] = replace(PRESETS["official"], bilateral_sxy=121.0, bilateral_srgb=5.0,
                             bilateral_weight=4.0)


def crf_params(crf_cfg: Mapping[str, Any] | Any) -> CRFParams:
    """The parameters ``cfg.crf`` asks for: a preset, or ``preset=custom`` and its numbers.

    A number changed while a named preset is selected would be silently ignored, so it is
    an error instead (a sweep over ``crf.bilateral_sxy`` needs ``crf.preset=custom``). The
    preset's name itself is checked by the schema (load_config).
    """
    from deconvnet.config import ConfigError

    preset = str(crf_cfg.get("preset", "official"))
    given = {f.name: crf_cfg.get(f.name, getattr(PRESETS["official"], f.name)) for f in fields(CRFParams)}
    custom = CRFParams(**{k: type(getattr(PRESETS["official"], k))(v) for k, v in given.items()})
    if preset == "custom":
        return custom
    # the schema's defaults are the official values: anything else was set by the user
    changed = {k: v for k, v in asdict(custom).items() if v != getattr(PRESETS["official"], k)}
    if changed:
        keys = ", ".join(f"crf.{k}={v}" for k, v in changed.items())
        raise ConfigError(
            f"{keys} would be ignored because crf.preset={preset} fixes the CRF parameters; "
            "add crf.preset=custom to use your own values"
        )
    return PRESETS[preset]


def dense_crf(image: np.ndarray, prob: np.ndarray, params: CRFParams = PRESETS["official"]) -> np.ndarray:
    """Labels (H x W uint8) of the dense CRF on ``image`` (H x W x 3 uint8 RGB) with the
    class probabilities ``prob`` (C x H x W, float) as unary terms."""
    import pydensecrf.densecrf as dcrf

    num_classes, height, width = prob.shape
    if image.shape != (height, width, 3):
        raise ValueError(f"image {image.shape} does not match probabilities {prob.shape}")
    unary = -np.log(np.clip(prob.astype(np.float32), MIN_PROBABILITY, None))
    crf = dcrf.DenseCRF2D(width, height, num_classes)
    crf.setUnaryEnergy(np.ascontiguousarray(unary.reshape(num_classes, -1)))
    crf.addPairwiseGaussian(
        sxy=params.gaussian_sxy, compat=params.gaussian_weight,
        kernel=dcrf.DIAG_KERNEL, normalization=dcrf.NO_NORMALIZATION,
    )
    crf.addPairwiseBilateral(
        sxy=params.bilateral_sxy, srgb=params.bilateral_srgb,
        rgbim=np.ascontiguousarray(image, dtype=np.uint8), compat=params.bilateral_weight,
        kernel=dcrf.DIAG_KERNEL, normalization=dcrf.NO_NORMALIZATION,
    )
    q = np.asarray(crf.inference(params.iterations), dtype=np.float32)
    return q.reshape(num_classes, height, width).argmax(0).astype(np.uint8)


def default_workers(processes_per_node: int = 1) -> int:
    """All the cores this process may use, shared among the evaluation processes of a node."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, processes_per_node))


class CRFPool:
    """Dense CRF jobs on ``workers`` processes; results in submission order.

    ``submit`` returns at once unless ``max_pending`` jobs are already in flight, in which
    case it waits for the oldest one. ``ready()`` hands back the finished results (oldest
    first, stopping at the first unfinished job); ``drain()`` waits for all of them.
    """

    def __init__(self, params: CRFParams, workers: int = 0, max_pending: int | None = None) -> None:
        self.params = params
        self.workers = workers if workers > 0 else default_workers()
        self.max_pending = max_pending or 2 * self.workers
        # spawn: the parent may hold CUDA contexts and threads that must not be forked;
        # die_with_parent: no orphaned CRF worker after a kill -9 of the evaluation
        self._executor = ProcessPoolExecutor(
            max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=die_with_parent, initargs=(os.getpid(),),
        )
        self._pending: deque[tuple[Hashable, Future]] = deque()
        self._finished: deque[tuple[Hashable, np.ndarray]] = deque()

    def submit(self, key: Hashable, image: np.ndarray, prob: np.ndarray) -> None:
        """Queue the CRF of one image; ``key`` comes back with its labels."""
        while len(self._pending) >= self.max_pending:
            self._finish_oldest()
        future = self._executor.submit(dense_crf, image, prob, self.params)
        self._pending.append((key, future))

    def _finish_oldest(self) -> None:
        key, future = self._pending.popleft()
        self._finished.append((key, future.result()))

    def ready(self) -> list[tuple[Hashable, np.ndarray]]:
        """Results finished so far, in submission order (never waits)."""
        while self._pending and self._pending[0][1].done():
            self._finish_oldest()
        out = list(self._finished)
        self._finished.clear()
        return out

    def drain(self) -> list[tuple[Hashable, np.ndarray]]:
        """Every remaining result, in submission order (waits for them)."""
        while self._pending:
            self._finish_oldest()
        return self.ready()

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def close(self) -> None:
        for _, future in self._pending:
            future.cancel()
        self._pending.clear()
        self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> CRFPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
