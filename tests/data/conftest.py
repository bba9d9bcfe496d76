"""Fixtures of the data tests."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import pytest

# The smallest forest OpenCV's Structured Edge detector loads: one tree, one leaf, no edges.
# Its options are those of the real BSDS model; tests use it where the real model
# (opencv_extra's model.yml.gz, about 20 MB) cannot be fetched.
TINY_EDGE_MODEL = """%YAML:1.0
---
options:
   stride: 2
   shrinkNumber: 2
   patchSize: 32
   patchInnerSize: 16
   numberOfGradientOrientations: 4
   gradientSmoothingRadius: 0
   regFeatureSmoothingRadius: 2
   ssFeatureSmoothingRadius: 8
   gradientNormalizationRadius: 4
   selfsimilarityGridSize: 5
   numberOfTrees: 1
   numberOfTreesToEvaluate: 1
childs:
   - [ 0 ]
featureIds:
   - [ 0 ]
thresholds:
   - [ 0. ]
edgeBoundaries:
   - [ 0, 0 ]
edgeBins:
   - [ 0 ]
"""


@pytest.fixture
def write_edge_model() -> Callable[[Path], Path]:
    """Writes a loadable (tiny) Structured Edge model.yml.gz at the given path."""
    def write(path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(path, "wt") as f:
            f.write(TINY_EDGE_MODEL)
        return path

    return write
