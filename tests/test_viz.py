"""Overlays carry a legend of exactly the classes they show, in the VOC colours."""

from __future__ import annotations

import numpy as np

from deconvnet.viz import legend_entries, overlay_figure, overlay_panel

# VOC devkit colours (VOClabelcolormap.m), written out: background, aeroplane, cat, person, void
BLACK, AEROPLANE, CAT = (0, 0, 0), (128, 0, 0), (64, 0, 0)
PERSON, VOID = (192, 128, 128), (224, 224, 192)


def _scene():
    image = np.full((40, 60, 3), 90, np.uint8)
    truth = np.zeros((40, 60), np.uint8)
    truth[5:20, 5:25] = 1  # aeroplane
    truth[25:35, 30:50] = 15  # person
    truth[20, :] = 255  # void border
    guess = truth.copy()
    guess[20, :] = 0
    guess[25:35, 30:40] = 8  # half the person called cat
    return image, truth, guess


def test_legend_lists_exactly_the_classes_present_with_their_voc_colours():
    image, truth, guess = _scene()
    assert legend_entries(truth, guess) == [("background", BLACK), ("aeroplane", AEROPLANE),
                                           ("cat", CAT), ("person", PERSON), ("void", VOID)]
    assert legend_entries(guess) == [("background", BLACK), ("aeroplane", AEROPLANE),
                                     ("cat", CAT), ("person", PERSON)]
    fig = overlay_figure(image, None, {"DeconvNet": guess})
    (legend,) = fig.legends
    names = [t.get_text() for t in legend.get_texts()]
    assert names == ["background", "aeroplane", "cat", "person"]
    swatches = [tuple(round(c * 255) for c in patch.get_facecolor()[:3])
                for patch in legend.get_patches()]
    assert swatches == [BLACK, AEROPLANE, CAT, PERSON]


def test_the_rendered_legend_shows_the_swatches_below_the_panels():
    image, truth, guess = _scene()
    panel = overlay_panel(image, truth, {"DeconvNet": guess})
    below = panel[int(panel.shape[0] * 0.8):].reshape(-1, 3)  # the legend strip
    colours = {tuple(int(c) for c in p) for p in np.unique(below, axis=0)}
    # solid swatches, drawn without blending: void only in the ground truth, cat only predicted
    for colour in (AEROPLANE, CAT, PERSON, VOID):
        assert colour in colours, colour
    bus = (0, 128, 128)  # a class nobody predicted gets no swatch
    assert bus not in colours
