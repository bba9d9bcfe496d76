"""PASCAL VOC class names, the void label and the standard VOC colour map, in one place."""

from __future__ import annotations

import numpy as np

VOC_CLASSES: tuple[str, ...] = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
NUM_CLASSES = len(VOC_CLASSES)  # 21: background + 20 object classes
IGNORE_INDEX = 255  # "void": object borders and hard regions, excluded from loss and scores


def class_names(num_classes: int = NUM_CLASSES) -> list[str]:
    """The VOC class names for 21 classes, ``class<i>`` for any other number of classes."""
    if num_classes == NUM_CLASSES:
        return list(VOC_CLASSES)
    return [f"class{i}" for i in range(num_classes)]


def _voc_colormap(entries: int = 256) -> list[int]:
    """The VOC devkit's colour map (VOClabelcolormap.m): bits of the index spread over R, G, B."""
    flat = []
    for index in range(entries):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        flat.extend((r, g, b))
    return flat


# 256 entries flattened to 768 ints, ready for PIL's Image.putpalette. Index 255 is (224, 224, 192).
VOC_PALETTE: list[int] = _voc_colormap()


def palette_array(entries: int = 256) -> np.ndarray:
    """The VOC colour map as an entries x 3 uint8 array (row i is the colour of label i)."""
    return np.asarray(VOC_PALETTE[: 3 * entries], dtype=np.uint8).reshape(entries, 3)
