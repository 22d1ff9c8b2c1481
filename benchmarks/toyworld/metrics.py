"""Edit-quality metrics of a toy clip, from the scorer's readings of the source and the edited frames.

- edit accuracy: the fraction of frames where each target attribute (colour, shape, background)
  is read, and where all three are;
- structure kept: centroid-trajectory error (pixels, edited vs source centroid per frame), mask IoU
  against the source's mask and the area ratio (the edited shape's area over the source's; both
  meaningful when the shape is not the edit);
- temporal consistency: attribute flips (frames whose reading differs from the previous frame's)
  and centroid jitter (mean ‖c[t−1] − 2c[t] + c[t+1]‖, the trajectory's acceleration, minus the
  source's own: a shape moving smoothly scores 0);
- reconstruction: PSNR of the source sampled back from its inversion with the source prompt.
Frames where no shape is found count as misses; their centroids are left out of the distances.
"""
from __future__ import annotations

import math

import numpy as np

from .scorer import Reading, mask_iou, read_image
from .world import parse_caption

ATTRIBUTES = ("colour", "shape", "background")


def read_clip(frames: np.ndarray) -> list[Reading]:
    return [read_image(frame) for frame in frames]


def _centroids(readings: list[Reading]) -> np.ndarray:
    return np.array([r.centroid if r.centroid is not None else (np.nan, np.nan) for r in readings])


def jitter(centroids: np.ndarray) -> float:
    """Mean norm of the centroid trajectory's second difference (NaN frames skipped)."""
    if len(centroids) < 3:
        return 0.0
    second = centroids[:-2] - 2 * centroids[1:-1] + centroids[2:]
    norms = np.linalg.norm(second, axis=1)
    norms = norms[~np.isnan(norms)]
    return float(norms.mean()) if len(norms) else math.nan


def flips(readings: list[Reading]) -> int:
    keys = [tuple(getattr(r, a) for a in ATTRIBUTES) for r in readings]
    return sum(a != b for a, b in zip(keys, keys[1:]))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _nanmean(values) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(values)) if not np.isnan(values).all() else math.nan


def clip_metrics(source: np.ndarray, edited: np.ndarray, prompt: str,
                 reconstruction: np.ndarray | None = None) -> dict:
    """Per-clip metrics (see module doc) and ``per_frame`` rows, for ``edited`` against ``source``."""
    target = dict(zip(ATTRIBUTES, parse_caption(prompt)))
    source_readings, edited_readings = read_clip(source), read_clip(edited)
    per_frame = []
    for index, (s, e) in enumerate(zip(source_readings, edited_readings)):
        hits = {a: getattr(e, a) == target[a] for a in ATTRIBUTES}
        distance = (math.dist(s.centroid, e.centroid) if s.centroid is not None and e.centroid is not None
                    else math.nan)
        per_frame.append({"frame": index, **{f"{a}_ok": hits[a] for a in ATTRIBUTES},
                          "all_ok": all(hits.values()), "centroid_error": distance, "mask_iou": mask_iou(s.mask, e.mask),
                          "area_ratio": e.area / s.area if s.area else math.nan,
                          **{a: getattr(e, a) for a in ATTRIBUTES}})
    errors = [row["centroid_error"] for row in per_frame]
    metrics = {f"{a}_acc": float(np.mean([row[f"{a}_ok"] for row in per_frame])) for a in ATTRIBUTES}
    metrics.update(
        edit_acc=float(np.mean([row["all_ok"] for row in per_frame])),
        centroid_error=_nanmean(errors),
        mask_iou=float(np.mean([row["mask_iou"] for row in per_frame])),
        area_ratio=_nanmean([row["area_ratio"] for row in per_frame]),
        flips=flips(edited_readings),
        jitter=jitter(_centroids(edited_readings)) - jitter(_centroids(source_readings)),
        found=float(np.mean([r.colour is not None for r in edited_readings])),
    )
    if reconstruction is not None:
        metrics["recon_psnr"] = psnr(source, reconstruction)
        metrics["recon_acc"] = float(np.mean([
            all(getattr(r, a) == getattr(s, a) for a in ATTRIBUTES)
            for r, s in zip(read_clip(reconstruction), source_readings)]))
    metrics["per_frame"] = per_frame
    return metrics
