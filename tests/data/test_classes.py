"""Class names, void label and the VOC colour map."""

import numpy as np

from deconvnet.data.classes import (
    IGNORE_INDEX,
    NUM_CLASSES,
    VOC_CLASSES,
    VOC_PALETTE,
    palette_array,
)


def test_class_names_follow_voc_order():
    assert NUM_CLASSES == 21 == len(VOC_CLASSES)
    assert VOC_CLASSES[0] == "background"
    assert VOC_CLASSES[1] == "aeroplane"
    assert VOC_CLASSES[15] == "person"
    assert VOC_CLASSES[20] == "tvmonitor"
    assert len(set(VOC_CLASSES)) == 21
    assert IGNORE_INDEX == 255


def test_palette_is_the_devkit_colour_map():
    assert len(VOC_PALETTE) == 768 and all(0 <= c <= 255 for c in VOC_PALETTE)
    colours = palette_array()
    assert colours.shape == (256, 3) and colours.dtype == np.uint8
    # values from the VOC devkit (VOClabelcolormap.m)
    assert colours[0].tolist() == [0, 0, 0]
    assert colours[1].tolist() == [128, 0, 0]  # aeroplane
    assert colours[15].tolist() == [192, 128, 128]  # person
    assert colours[20].tolist() == [0, 64, 128]  # tvmonitor
    assert colours[255].tolist() == [224, 224, 192]  # void
    assert len({tuple(c) for c in colours[:NUM_CLASSES].tolist()}) == NUM_CLASSES
    assert palette_array(21).shape == (21, 3)
