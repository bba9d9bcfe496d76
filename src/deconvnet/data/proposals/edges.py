"""An edge map and its orientation computed in-process, for EdgeBoxes without a model file.

EdgeBoxes (Zitnick & Dollár, 2014) scores boxes by the edge groups they enclose. Its
reference implementation takes the edges of the Structured Edge detector, whose trained
model (``model.yml.gz``) cannot be installed from a package registry. Without it we use
the fallback written into Dollár's own ``edgeBoxes.m``: the gradient magnitude of the
triangle-smoothed image, normalised to [0, 1]. Orientation and non-maximum suppression
follow ``edgeOrient`` and ``edgesNms`` of the same toolbox, so the maps have the layout
and conventions ``cv2.ximgproc.EdgeBoxes.getBoundingBoxes`` expects (orientation in
[0, pi), the direction across the edge: 0 for a vertical edge).
"""

from __future__ import annotations

import cv2
import numpy as np


def conv_tri(image: np.ndarray, radius: int) -> np.ndarray:
    """Dollár's ``convTri``: separable triangle filter [1 .. r+1 .. 1] / (r+1)^2, reflected border."""
    if radius <= 0:
        return image
    ramp = np.arange(1, radius + 2, dtype=np.float32)
    kernel = np.concatenate([ramp, ramp[-2::-1]]) / float((radius + 1) ** 2)
    return cv2.sepFilter2D(image, cv2.CV_32F, kernel, kernel, borderType=cv2.BORDER_REFLECT)


def _gradient(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Central differences (Dollár's ``gradient2``): d/dx and d/dy."""
    kernel = np.array([[-0.5, 0.0, 0.5]], dtype=np.float32)
    gx = cv2.filter2D(image, cv2.CV_32F, kernel, borderType=cv2.BORDER_REPLICATE)
    gy = cv2.filter2D(image, cv2.CV_32F, kernel.T, borderType=cv2.BORDER_REPLICATE)
    return gx, gy


def gradient_edges(rgb: np.ndarray, smooth_radius: int = 4) -> np.ndarray:
    """H x W float32 edge strength in [0, 1]: max over channels of the gradient magnitude."""
    image = conv_tri(rgb.astype(np.float32) / 255.0, smooth_radius)
    gx, gy = _gradient(image)
    magnitude = np.sqrt(gx * gx + gy * gy)
    if magnitude.ndim == 3:
        magnitude = magnitude.max(axis=2)
    peak = float(magnitude.max())
    return (magnitude / peak).astype(np.float32) if peak > 0 else magnitude.astype(np.float32)


def edge_orientation(edges: np.ndarray, radius: int = 4) -> np.ndarray:
    """Dollár's ``edgeOrient``: orientation in [0, pi) from second derivatives of the edge map.

    One change: where the mixed derivative is exactly 0 (axis-aligned edges, frequent in
    synthetic images) its sign is taken as -1 instead of 0, which would put every
    horizontal edge at orientation 0 instead of pi/2."""
    ox, oy = _gradient(conv_tri(edges, radius))
    oxx, _ = _gradient(ox)
    oxy, oyy = _gradient(oy)
    sign = np.where(oxy > 0, -1.0, 1.0).astype(np.float32)
    return np.mod(np.arctan(oyy * sign / (oxx + 1e-5)), np.pi).astype(np.float32)


def edge_nms(edges: np.ndarray, orientation: np.ndarray, radius: int = 2, multiplier: float = 1.0) -> np.ndarray:
    """Dollár's ``edgesNms``: keep a pixel only if it beats the edge map sampled at distances
    1..radius on both sides along its orientation (bilinear samples)."""
    height, width = edges.shape
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    cos_o, sin_o = np.cos(orientation), np.sin(orientation)
    keep = edges > 0
    scaled = edges * multiplier
    for d in [d for r in range(1, radius + 1) for d in (r, -r)]:
        neighbour = cv2.remap(edges, xs + d * cos_o, ys + d * sin_o, cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
        keep &= scaled >= neighbour
    return np.where(keep, edges, 0.0).astype(np.float32)


def edge_map(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(thinned edge map, orientation), both H x W float32, from an RGB uint8 image."""
    edges = gradient_edges(rgb)
    orientation = edge_orientation(edges)
    return edge_nms(edges, orientation), orientation
