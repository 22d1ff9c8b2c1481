"""The benchmark's source clips: a fixed, seeded family of motions, shapes, colours, backgrounds and sizes.

Each clip moves one scene's shape along one of ``MOTIONS``, always wholly inside the image:
- ``diagonal``: from near one corner to the opposite one (12–22 px, by the shape's size);
- ``line``: horizontal or vertical, 8–14 px;
- ``arc``: a half circle whose diameter joins start and end (the motion turns, 8–14 px apart);
- ``zigzag``: a line of up to 12 px with a perpendicular swing of ±1.5–2.5 px every frame;
- ``drift``: a slow drift of 2–4 px in all;
- ``edge``: starts touching an image edge (one pixel of margin) and slides along it or away from it.
Shapes, colours, backgrounds, motions and sizes (``SIZE_RANGE``'s ends and middle) are each spread
evenly over the clips and paired at random, so every one appears; every clip has its own texture and
one edit of each kind (colour, shape, background) to a value drawn from the others.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from .world import BACKGROUNDS, COLOURS, IMAGE_SIZE, SHAPES, SIZE_RANGE, Scene, caption, render_clip

MOTIONS = ("diagonal", "line", "arc", "zigzag", "drift", "edge")
SIZES = (SIZE_RANGE[0], sum(SIZE_RANGE) / 2, SIZE_RANGE[1])


@dataclass(frozen=True)
class SourceClip:
    name: str
    scene: Scene  # at the first frame
    motion: str
    end: tuple[float, float]
    swing: float = 0.0  # zigzag: the perpendicular offset, alternating sign every frame
    edits: dict = None  # edited scene attribute (the edit kind) -> its new value, e.g. {"colour": "blue"}

    def centers(self, count: int) -> list[tuple[float, float]]:
        (x0, y0), (x1, y1) = self.scene.center, self.end
        length = math.hypot(x1 - x0, y1 - y0) or 1.0
        normal = (-(y1 - y0) / length, (x1 - x0) / length)
        centers = []
        for i in range(count):
            t = i / max(count - 1, 1)
            if self.motion == "arc":
                mid_x, mid_y, radius = (x0 + x1) / 2, (y0 + y1) / 2, length / 2
                angle = math.atan2(y0 - mid_y, x0 - mid_x) + math.pi * t
                centers.append((mid_x + radius * math.cos(angle), mid_y + radius * math.sin(angle)))
                continue
            offset = self.swing * (-1) ** i if self.motion == "zigzag" and 0 < i < count - 1 else 0.0
            centers.append((x0 + t * (x1 - x0) + offset * normal[0], y0 + t * (y1 - y0) + offset * normal[1]))
        return centers

    def frames(self, count: int) -> np.ndarray:
        """``(count, H, W, 3)`` uint8 frames of the clip."""
        return render_clip([replace(self.scene, center=c) for c in self.centers(count)])

    def prompt(self, **changes) -> str:
        return caption(replace(self.scene, **changes))


def _spread(values, count: int, rng: np.random.Generator) -> list:
    """``count`` values, each of ``values`` equally often (±1), in random order."""
    repeated = [values[i % len(values)] for i in range(count)]
    return [repeated[i] for i in rng.permutation(count)]


def _path(motion: str, size: float, rng: np.random.Generator):
    """``(start, end, swing)`` of a motion for a shape of half-size ``size``; every frame stays inside the image."""
    low, high = size + 1, IMAGE_SIZE - size - 1
    room = high - low

    def point():
        return tuple(float(v) for v in rng.uniform(low, high, 2))

    def towards(start, distance, angle):
        end = (start[0] + distance * math.cos(angle), start[1] + distance * math.sin(angle))
        return tuple(float(np.clip(v, low, high)) for v in end)

    if motion == "diagonal":
        corner = rng.integers(0, 2, 2)  # per axis: start at the low (0) or the high (1) end
        start = tuple(float(high - rng.uniform(0, 1) if c else low + rng.uniform(0, 1)) for c in corner)
        return start, tuple(float(low if c else high) for c in corner), 0.0
    if motion == "line":
        start, horizontal = point(), rng.integers(0, 2)
        distance = float(rng.uniform(8, 14))
        return start, towards(start, distance, (0.0 if horizontal else math.pi / 2) + math.pi * rng.integers(0, 2)), 0.0
    if motion == "arc":
        # The half circle bulges by its radius: keep its centre that far from every edge.
        radius = float(rng.uniform(4, min(7, room / 2)))
        mid = tuple(float(v) for v in rng.uniform(low + radius, high - radius, 2))
        angle = float(rng.uniform(0, 2 * math.pi))
        offset = (radius * math.cos(angle), radius * math.sin(angle))
        return (mid[0] - offset[0], mid[1] - offset[1]), (mid[0] + offset[0], mid[1] + offset[1]), 0.0
    if motion == "zigzag":
        swing = float(rng.uniform(1.5, 2.5))
        inner_low, inner_high = low + swing, high - swing
        start = tuple(float(v) for v in rng.uniform(inner_low, inner_high, 2))
        end = towards(start, float(rng.uniform(6, 12)), float(rng.uniform(0, 2 * math.pi)))
        return start, tuple(float(np.clip(v, inner_low, inner_high)) for v in end), swing
    if motion == "drift":
        start = point()
        return start, towards(start, float(rng.uniform(2, 4)), float(rng.uniform(0, 2 * math.pi))), 0.0
    if motion == "edge":
        axis, side = int(rng.integers(0, 2)), int(rng.integers(0, 2))  # coordinate `axis` touches its low/high edge
        start = list(point())
        start[axis] = high if side else low
        step = [0.0, 0.0]
        if rng.integers(0, 2):  # slide along the edge
            step[1 - axis] = float(rng.choice([-1.0, 1.0]))
        else:  # move away from it
            step[axis] = -1.0 if side else 1.0
        distance = float(rng.uniform(5, 10))
        return tuple(start), tuple(float(np.clip(s + distance * d, low, high)) for s, d in zip(start, step)), 0.0
    raise ValueError(f"unknown motion {motion!r}; choose one of {', '.join(MOTIONS)}")


def source_clips(count: int = 48, seed: int = 0) -> tuple[SourceClip, ...]:
    """``count`` clips of the family above, the same for the same ``(count, seed)``."""
    rng = np.random.default_rng([0xC119, seed])
    columns = {"motion": _spread(MOTIONS, count, rng), "shape": _spread(SHAPES, count, rng),
               "colour": _spread(tuple(COLOURS), count, rng), "background": _spread(tuple(BACKGROUNDS), count, rng),
               "size": _spread(SIZES, count, rng)}
    clips = []
    for i in range(count):
        motion, shape, colour, background, size = (columns[k][i] for k in ("motion", "shape", "colour", "background", "size"))
        start, end, swing = _path(motion, size, rng)
        edits = {"colour": _other(COLOURS, colour, rng), "shape": _other(SHAPES, shape, rng),
                 "background": _other(BACKGROUNDS, background, rng)}
        scene = Scene(colour, shape, background, start, size, texture_seed=1000 + i)
        clips.append(SourceClip(f"{i:02d} {colour} {shape} on {background}, {motion}", scene, motion, end, swing, edits))
    return tuple(clips)


def _other(values, current: str, rng: np.random.Generator) -> str:
    return str(rng.choice([v for v in values if v != current]))


SOURCE_CLIPS = source_clips()
