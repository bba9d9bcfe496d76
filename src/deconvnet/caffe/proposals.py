"""The release's cached EdgeBoxes (edgebox_cached.tar.gz) -> the ``data.proposals.method=file`` format.

The official inference (``generate_EDeconvNet_CRF_results.m``) reads one ``<id>.mat`` per
image with a variable ``boxes_padded``: N x 4 rows ``[x1 y1 x2 y2]``, 1-based and inclusive,
in the coordinates of the image zero-padded by its width above and below and by its height
left and right (``padarray(I, [W, H])``: rows padded by W, columns by H), best first. These
are already "extended" windows (the proposal with the 1.2x square context of training): the
script crops each box as it is, skips boxes with min(w, h) < 112 and stops after 50.

:func:`convert_edgebox_cache` turns a folder of them into one ``.npz`` (image id -> float32
K x 4 ``[x1, y1, x2, y2]``, 0-based, x2/y2 exclusive, original image frame, file order kept as
the ranking): ``x1 = bx1 - 1 - H``, ``x2 = bx2 - H``, ``y1 = by1 - 1 - W``, ``y2 = by2 - W``.
Use it with ``data.proposals.method=file``, ``data.proposals.file=<npz>`` and
``data.proposals.extended=true`` (windows are neither clipped nor enlarged again) and
``data.square_windows=false`` (they are cut as they are, as the official script does).
MATLAB v5/v7 files are read with scipy, v7.3 (HDF5) files with h5py.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from deconvnet.errors import DataError

log = logging.getLogger(__name__)

VARIABLE = "boxes_padded"


def _read_v73(path: Path) -> dict[str, np.ndarray]:
    try:
        import h5py
    except ImportError as err:  # pragma: no cover - h5py is a dependency
        raise DataError(f"{path} is a MATLAB v7.3 file: install h5py to read it") from err
    try:
        with h5py.File(path, "r") as f:
            # MATLAB stores column-major: an N x 4 matrix is a 4 x N dataset
            return {name: np.asarray(f[name]).T for name in f.keys() if isinstance(f[name], h5py.Dataset)}
    except OSError as err:
        raise DataError(f"{path}: not a readable .mat file ({err})") from None


def read_mat_boxes(path: str | Path, variable: str = VARIABLE) -> np.ndarray:
    """The N x 4 float64 ``variable`` of a MATLAB file (v5/v7 or v7.3); DataError otherwise."""
    import scipy.io

    path = Path(path)
    try:
        content = scipy.io.loadmat(path)
    except NotImplementedError:  # scipy: "Please use HDF reader for matlab v7.3 files"
        content = _read_v73(path)
    except (ValueError, TypeError, OSError, EOFError) as err:
        raise DataError(f"{path}: not a readable .mat file ({type(err).__name__}: {err})") from None
    if variable not in content:
        found = ", ".join(k for k in content if not k.startswith("__")) or "none"
        raise DataError(f"{path}: no variable '{variable}' (variables: {found}); is it a file of "
                        "the release's edgebox_cached folder?")
    boxes = np.asarray(content[variable], dtype=np.float64)
    if boxes.size == 0:
        return np.zeros((0, 4), np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise DataError(f"{path}: '{variable}' has shape {boxes.shape}, expected N x 4 [x1 y1 x2 y2]")
    return boxes


def unpad_boxes(boxes_padded: np.ndarray, height: int, width: int) -> np.ndarray:
    """Official padded, 1-based inclusive boxes -> our 0-based, exclusive image-frame boxes."""
    b = np.asarray(boxes_padded, dtype=np.float64).reshape(-1, 4)
    out = np.stack([b[:, 0] - 1 - height, b[:, 1] - 1 - width, b[:, 2] - height, b[:, 3] - width], axis=1)
    return out.astype(np.float32)


def convert_edgebox_cache(folder: str | Path, reader, out: str | Path) -> Path:
    """Every image of ``reader`` (a VOCSegmentationIndex: ids and sizes) from ``folder/<id>.mat``
    into ``out`` (.npz), written atomically. A missing file is an error naming it."""
    folder, out = Path(folder), Path(out)
    if not folder.is_dir():
        raise DataError(f"edgebox cache folder not found: {folder} (deconvnet download "
                        "official-edgebox-cache puts it under <root>/edgebox_cached/VOC2012_TEST)")
    missing = [image_id for image_id in reader.ids if not (folder / f"{image_id}.mat").is_file()]
    if missing:
        raise DataError(f"{folder} has no .mat file for {len(missing)} of the {len(reader.ids)} images "
                        f"of split '{reader.split}' (first: {missing[0]}.mat); is it the cache of this split?")
    table = {}
    for i, image_id in enumerate(tqdm(reader.ids, desc=f"edgebox cache {reader.split}", unit="img",
                                      disable=len(reader.ids) < 200)):
        height, width = reader.sizes[i]
        table[image_id] = unpad_boxes(read_mat_boxes(folder / f"{image_id}.mat"), height, width)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp.npz")
    try:
        np.savez(tmp, **table)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    counts = np.array([len(v) for v in table.values()])
    log.info("wrote %s: %d images, %.1f boxes per image", out, len(table), counts.mean() if len(counts) else 0)
    return out
