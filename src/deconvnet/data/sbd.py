"""Semantic Boundaries Dataset (SBD, Hariharan et al. 2011): the extra VOC annotations.

The archive ``benchmark.tgz`` unpacks to ``benchmark_RELEASE/dataset`` with

    cls/<id>.mat    GTcls.Segmentation: H x W class ids (0 background, 1..20)
    inst/<id>.mat   GTinst.Segmentation: H x W instance ids (0 background, 1..N)
                    GTinst.Categories: the class id of instance k at position k-1
    img/<id>.jpg    the images (the same files as VOC's JPEGImages)
    train.txt, val.txt

SBD has no void label. Together with VOC it makes the ``train_aug`` and ``trainval_aug`` splits
(see :mod:`deconvnet.data.voc`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from deconvnet.errors import DataError

SBD_SUBDIR = Path("benchmark_RELEASE") / "dataset"
SBD_SPLITS = ("train", "val")


def sbd_folder(root: str | Path) -> Path:
    """Where SBD lives inside a data root."""
    return Path(root) / SBD_SUBDIR


def split_ids(root: str | Path, split: str) -> list[str]:
    """Image ids of SBD's train or val list."""
    if split not in SBD_SPLITS:
        raise DataError(f"unknown SBD split '{split}'; SBD has {', '.join(SBD_SPLITS)}")
    folder = sbd_folder(root)
    if not folder.is_dir():
        raise DataError(
            f"SBD not found: expected the folder {folder}. Get it with "
            f"`deconvnet download sbd --root {root}` (or `make data`)."
        )
    path = folder / f"{split}.txt"
    if not path.is_file():
        raise DataError(f"SBD split list missing: {path}. Re-extract benchmark.tgz into {root}.")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def class_mask_path(root: str | Path, image_id: str) -> Path:
    return sbd_folder(root) / "cls" / f"{image_id}.mat"


def instance_mask_path(root: str | Path, image_id: str) -> Path:
    return sbd_folder(root) / "inst" / f"{image_id}.mat"


def image_path(root: str | Path, image_id: str) -> Path:
    return sbd_folder(root) / "img" / f"{image_id}.jpg"


def _load_struct(path: Path, name: str):
    try:
        mat = scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=False)
    except FileNotFoundError:
        raise DataError(f"missing SBD annotation: {path}") from None
    except Exception as err:  # scipy raises ValueError/TypeError/MatReadError on bad files
        raise DataError(f"corrupt SBD annotation {path}: {err}. Replace it.") from None
    if name not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise DataError(f"SBD annotation {path} has no '{name}' struct (found {found})")
    return mat[name]


def _field(struct, name: str, path: Path) -> np.ndarray:
    if not hasattr(struct, name):
        raise DataError(f"SBD annotation {path} lacks the field '{name}'")
    return np.asarray(getattr(struct, name))


def read_class_mask(path: str | Path) -> np.ndarray:
    """GTcls.Segmentation as an H x W uint8 array of class ids."""
    path = Path(path)
    seg = _field(_load_struct(path, "GTcls"), "Segmentation", path)
    if seg.ndim != 2:
        raise DataError(f"SBD annotation {path}: GTcls.Segmentation has shape {seg.shape}, expected H x W")
    return seg.astype(np.uint8)


def read_instance_mask(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(H x W uint16 instance ids, int64 class id per instance, instance k at index k-1)."""
    path = Path(path)
    struct = _load_struct(path, "GTinst")
    seg = _field(struct, "Segmentation", path)
    categories = np.atleast_1d(_field(struct, "Categories", path)).astype(np.int64).reshape(-1)
    if seg.ndim != 2:
        raise DataError(f"SBD annotation {path}: GTinst.Segmentation has shape {seg.shape}, expected H x W")
    if seg.size and int(seg.max()) > len(categories):
        raise DataError(
            f"SBD annotation {path}: instance id {int(seg.max())} but only {len(categories)} "
            "entries in GTinst.Categories"
        )
    return seg.astype(np.uint16), categories

