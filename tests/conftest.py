"""Fixtures shared by the whole suite."""

from __future__ import annotations

from pathlib import Path

import pytest

SYNTHETIC_IMAGES = 24
SYNTHETIC_SIZE = 128


@pytest.fixture(scope="session")
def synthetic_voc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root folder of a small synthetic VOC tree (``<root>/VOCdevkit/VOC2012``).

    24 images, longer side 128 px, seed 0; train/val/trainval lists (17/7/24 images).
    Shared by the whole session: treat it as read-only (copy it to break or extend it).
    """
    from deconvnet.data.synthetic import generate

    root = tmp_path_factory.mktemp("synthetic_voc")
    generate(root, num_images=SYNTHETIC_IMAGES, seed=0, size=SYNTHETIC_SIZE)
    return root
