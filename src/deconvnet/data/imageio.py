"""Checked image and label-mask I/O: every failure is a DataError that names the file.

VOC label masks are palette PNGs: the pixel *indices* are the labels (0..20 classes or
instance ids, 255 void) and the palette only colours them for display. We always read
the indices, never the colours.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from deconvnet.data.classes import VOC_PALETTE
from deconvnet.errors import DataError
from deconvnet.runtime.atomic import save_atomic

# Pillow's errors for truncated or malformed files are spread over several types.
_DECODE_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    if str(path).endswith(".png"):  # fast path: the IHDR chunk right after the signature
        try:
            with open(path, "rb") as f:
                head = f.read(24)
        except FileNotFoundError:
            raise DataError(f"missing file: {path}") from None
        if head[:8] == _PNG_SIGNATURE and head[12:16] == b"IHDR":
            width, height = struct.unpack(">II", head[16:24])
            return width, height
    try:
        with Image.open(path) as img:
            return img.size
    except FileNotFoundError:
        raise DataError(f"missing file: {path}") from None
    except _DECODE_ERRORS as err:
        raise DataError(f"cannot read image header of {path}: {err}. Replace the file.") from None


def read_rgb(path: str | Path) -> np.ndarray:
    """Decode an image file into an H x W x 3 uint8 RGB array."""
    try:
        with Image.open(path) as img:
            return np.array(img if img.mode == "RGB" else img.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"missing image file: {path}") from None
    except _DECODE_ERRORS as err:
        raise DataError(f"corrupt image file {path}: {err}. Replace it (re-download or re-generate).") from None


# What a PIL image mode is, in words, for the message about a mask of the wrong kind.
_MODE_WORDS = {
    "RGB": "an RGB colour image", "RGBA": "an RGBA colour image", "CMYK": "a CMYK colour image",
    "LA": "a greyscale image with alpha", "PA": "a palette image with alpha",
    "1": "a 1-bit black-and-white image", "I": "a 32-bit integer image",
    "I;16": "a 16-bit greyscale image", "F": "a floating-point image",
}


def read_index_png(path: str | Path) -> np.ndarray:
    """The H x W uint8 index array of a palette ('P') or grey ('L') label PNG."""
    try:
        with Image.open(path) as img:
            mode = img.mode
            if mode in ("P", "L"):
                return np.array(img, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"missing label mask: {path}") from None
    except _DECODE_ERRORS as err:
        raise DataError(f"corrupt label mask {path}: {err}. Replace it.") from None
    what = _MODE_WORDS.get(mode, f"an image of mode {mode}")
    raise DataError(
        f"label mask {path} is {what}; expected a palette or greyscale PNG whose pixel values are "
        "the labels (classes 0..20 and 255 for void), not their colours. Save the label indices "
        "with a palette (deconvnet.data.imageio.write_index_png)."
    )


def write_index_png(path: str | Path, labels: np.ndarray, palette: list[int] | None = None) -> Path:
    """Write an H x W uint8 array as a palette PNG (VOC colours by default), atomically."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.dtype != np.uint8:
        raise ValueError(f"labels must be an H x W uint8 array, got {labels.dtype} {labels.shape}")
    img = Image.fromarray(labels)  # mode L; putpalette turns it into mode P
    img.putpalette(VOC_PALETTE if palette is None else palette)
    return _save_atomic(img, Path(path), format="PNG")


def write_jpeg(path: str | Path, rgb: np.ndarray, quality: int = 90, subsampling: int = 2) -> Path:
    """Write an H x W x 3 uint8 RGB array as a JPEG, atomically.

    subsampling: PIL's chroma subsampling (0 = 4:4:4 keeps colours sharp on small images,
    2 = 4:2:0 as most cameras and VOC's files).
    """
    return _save_atomic(Image.fromarray(np.asarray(rgb, dtype=np.uint8)), Path(path),
                        format="JPEG", quality=quality, subsampling=subsampling)


def _save_atomic(img: Image.Image, path: Path, **save_args) -> Path:
    return save_atomic(path, lambda handle: img.save(handle, **save_args))
