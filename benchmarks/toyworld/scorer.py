"""Read a toy-world image back into its attributes, analytically (no learned classifier).

Samples of a diffusion model are not exact renders: pixels carry residual noise and edges blur.
So: a 3×3 median filter first; the background is the palette background nearest the median of
the border pixels; the foreground is the largest connected blob of pixels far from that
background; its colour is the palette colour nearest its median pixel; its shape is the world's
shape whose render of the same area, with the same centroid, overlaps the blob best (IoU): a
nearest-template rule with no tuned threshold, so a square with rounded corners is still nearer
a square than a circle.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .world import BACKGROUNDS, COLOURS, SHAPES, shape_mask

# A pixel belongs to the foreground when it is this far (RGB Euclidean) from the background.
# Every foreground colour is > 120 from every background (green–grey is the closest), noise of a few tens is not.
FOREGROUND_DISTANCE = 75.0
MIN_AREA = 12  # pixels; a smaller blob is noise, not a shape
# Area of each shape in units of size² (size = half the bounding box side), and how far its
# centroid lies below its box centre, in units of size (the triangle's is 1/3 of the way down).
AREA_PER_SIZE2 = {"circle": np.pi, "square": 4.0, "triangle": 2.0}
CENTROID_BELOW_CENTER = {"circle": 0.0, "square": 0.0, "triangle": 1 / 3}


@dataclass
class Reading:
    colour: str | None  # None when no shape was found
    shape: str | None
    background: str
    centroid: tuple[float, float] | None  # (x, y) in pixel units, pixel centres at +0.5
    mask: np.ndarray  # bool (H, W)
    fill_ratio: float
    colour_distance: float  # RGB distance of the blob's median colour to the chosen palette colour

    @property
    def area(self) -> int:
        return int(self.mask.sum())


def _nearest(palette: dict, rgb: np.ndarray) -> tuple[str, float]:
    names = list(palette)
    distances = np.linalg.norm(np.array([palette[n] for n in names], np.float32) - rgb, axis=1)
    best = int(distances.argmin())
    return names[best], float(distances[best])


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of a boolean mask (empty stays empty)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=4)
    if count <= 1:
        return np.zeros_like(mask, bool)
    biggest = 1 + int(stats[1:, cv2.CC_STAT_AREA].argmax())
    return labels == biggest


def classify_shape(mask: np.ndarray) -> tuple[str, float]:
    """``(shape, fill ratio of the bounding box)`` of a non-empty mask: the best-overlapping template."""
    ys, xs = np.nonzero(mask)
    box = (xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1)
    fill = float(mask.sum() / box)
    cx, cy = xs.mean() + 0.5, ys.mean() + 0.5
    height, width = mask.shape
    overlaps = {}
    for shape in SHAPES:
        size = float(np.sqrt(mask.sum() / AREA_PER_SIZE2[shape]))
        center = (cx, cy - CENTROID_BELOW_CENTER[shape] * size)
        template = shape_mask(shape, center, size, max(height, width))[:height, :width]
        overlaps[shape] = mask_iou(mask, template)
    return max(overlaps, key=overlaps.get), fill


def read_image(image: np.ndarray) -> Reading:
    """Attributes of one ``(H, W, 3)`` uint8 RGB image."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.dtype} {image.shape}")
    smooth = cv2.medianBlur(np.ascontiguousarray(image), 3).astype(np.float32)
    border = np.concatenate([smooth[0], smooth[-1], smooth[1:-1, 0], smooth[1:-1, -1]])
    background, _ = _nearest(BACKGROUNDS, np.median(border, axis=0))
    far = np.linalg.norm(smooth - np.array(BACKGROUNDS[background], np.float32), axis=-1) > FOREGROUND_DISTANCE
    mask = largest_component(far)
    if mask.sum() < MIN_AREA:
        return Reading(None, None, background, None, np.zeros_like(mask), 0.0, float("inf"))
    colour, distance = _nearest(COLOURS, np.median(smooth[mask], axis=0))
    shape, fill = classify_shape(mask)
    ys, xs = np.nonzero(mask)
    return Reading(colour, shape, background, (float(xs.mean() + 0.5), float(ys.mean() + 0.5)), mask, fill, distance)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0
