"""Predictions in the layout of the PASCAL VOC evaluation server, and the archive to upload.

The server expects a ``.tar.gz`` holding ``results/VOC2012/Segmentation/comp6_test_cls/<id>.png``:
one palette PNG per test image whose pixel indices are the class labels (0..20).
``comp6`` is the "trained with external data" competition (SBD annotations count as
external), the one the paper's Table 1 was submitted to. Each method gets its own folder:

    <root>/<method slug>/results/VOC2012/Segmentation/comp6_test_cls/<id>.png
    <archive_dir>/<method slug>.tar.gz     (archive_dir defaults to root)
"""

from __future__ import annotations

import re
import tarfile
from pathlib import Path

import numpy as np

from deconvnet.data.imageio import write_index_png
from deconvnet.runtime.atomic import save_atomic

COMPETITION = "comp6"


def server_subdir(competition: str = COMPETITION) -> Path:
    """``results/VOC2012/Segmentation/<competition>_test_cls``: the path inside the archive."""
    return Path("results") / "VOC2012" / "Segmentation" / f"{competition}_test_cls"


def method_slug(method: str) -> str:
    """A folder name for a method: ``EDeconvNet+CRF`` -> ``edeconvnet_crf``, ``FCN-8s`` -> ``fcn8s``."""
    slug = method.lower().replace("+", "_").replace("-", "")
    return re.sub(r"[^a-z0-9_]+", "_", slug).strip("_")


def prediction_folder(root: str | Path, method: str, competition: str = COMPETITION) -> Path:
    return Path(root) / method_slug(method) / server_subdir(competition)


def write_prediction(
    root: str | Path, method: str, image_id: str, labels: np.ndarray, competition: str = COMPETITION
) -> Path:
    """Write one method's labels for one image as a VOC palette PNG in the server's layout."""
    folder = prediction_folder(root, method, competition)
    folder.mkdir(parents=True, exist_ok=True)
    return write_index_png(folder / f"{image_id}.png", np.asarray(labels, dtype=np.uint8))


def make_archive(
    root: str | Path, method: str, competition: str = COMPETITION, archive_dir: str | Path | None = None
) -> Path:
    """Pack ``<root>/<slug>/results`` into ``<archive_dir or root>/<slug>.tar.gz`` (atomically)."""
    method_root = Path(root) / method_slug(method)
    folder = method_root / server_subdir(competition)
    pngs = sorted(folder.glob("*.png"))
    if not pngs:
        raise FileNotFoundError(f"no prediction PNGs in {folder}: nothing to archive")
    archive = Path(archive_dir if archive_dir is not None else root) / f"{method_slug(method)}.tar.gz"
    archive.parent.mkdir(parents=True, exist_ok=True)
    def write(handle) -> None:
        with tarfile.open(fileobj=handle, mode="w:gz") as tar:
            for png in pngs:
                tar.add(png, arcname=str(server_subdir(competition) / png.name))

    return save_atomic(archive, write)
