"""The toy world: one flat shape on a flat background, its caption, and clips of it moving.

Everything is exact and procedural: a ``Scene`` names a shape, its colour, the background colour,
its centre and size in pixels; ``render`` draws it without anti-aliasing, so every pixel holds one
of the palette colours below and the scorer (``scorer.py``) can read the scene back.
The palette (RGB, 0–255) is documented in README.md; tests check the two agree.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

# Foreground colours are saturated, backgrounds are neutral: no foreground is near any background.
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 40),
}
BACKGROUNDS = {
    "black": (20, 20, 20),
    "grey": (128, 128, 128),
    "white": (240, 240, 240),
}
SHAPES = ("circle", "square", "triangle")
IMAGE_SIZE = 32
SIZE_RANGE = (6.0, 9.0)  # the shape's "radius": half the side of its bounding box, in pixels


@dataclass(frozen=True)
class Scene:
    colour: str
    shape: str
    background: str
    center: tuple[float, float]  # (x, y) in pixels, origin at the top-left corner of the image
    size: float = 7.0

    def __post_init__(self):
        if self.colour not in COLOURS:
            raise ValueError(f"unknown colour {self.colour!r}; choose one of {tuple(COLOURS)}")
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; choose one of {SHAPES}")
        if self.background not in BACKGROUNDS:
            raise ValueError(f"unknown background {self.background!r}; choose one of {tuple(BACKGROUNDS)}")


def caption(scene: Scene) -> str:
    return f"a {scene.colour} {scene.shape} on a {scene.background} background"


def parse_caption(text: str) -> tuple[str, str, str]:
    """``(colour, shape, background)`` of a caption written as ``caption`` writes it."""
    words = text.split()
    if len(words) != 7 or words[0] != "a" or words[3:5] != ["on", "a"] or words[6] != "background":
        raise ValueError(f"{text!r} is not a caption of the form 'a <colour> <shape> on a <background> background'")
    colour, shape, background = words[1], words[2], words[5]
    Scene(colour, shape, background, (0.0, 0.0))  # validates the words
    return colour, shape, background


def shape_mask(shape: str, center: tuple[float, float], size: float, image_size: int = IMAGE_SIZE) -> np.ndarray:
    """Boolean ``(H, W)`` mask of the shape, tested at pixel centres (no anti-aliasing)."""
    ys, xs = np.mgrid[0:image_size, 0:image_size] + 0.5
    dx, dy = xs - center[0], ys - center[1]
    if shape == "circle":
        return dx**2 + dy**2 <= size**2
    if shape == "square":
        return (np.abs(dx) <= size) & (np.abs(dy) <= size)
    # Upright isosceles triangle in the square's bounding box: apex at the top, base at the bottom.
    inside_height = np.abs(dy) <= size
    half_width = size * (dy + size) / (2 * size)
    return inside_height & (np.abs(dx) <= half_width)


def render(scene: Scene, image_size: int = IMAGE_SIZE) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB image of ``scene``."""
    image = np.empty((image_size, image_size, 3), np.uint8)
    image[:] = BACKGROUNDS[scene.background]
    image[shape_mask(scene.shape, scene.center, scene.size, image_size)] = COLOURS[scene.colour]
    return image


def random_scene(rng: np.random.Generator, image_size: int = IMAGE_SIZE) -> Scene:
    """A uniformly drawn scene whose shape lies wholly inside the image."""
    size = float(rng.uniform(*SIZE_RANGE))
    margin = size + 1
    center = tuple(float(c) for c in rng.uniform(margin, image_size - margin, size=2))
    return Scene(str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES)), str(rng.choice(list(BACKGROUNDS))),
                 center, size)


def clip_scenes(scene: Scene, end: tuple[float, float], frames: int, path: str = "line") -> list[Scene]:
    """The scene's shape moving from ``scene.center`` to ``end`` over ``frames`` frames.

    ``path="line"``: constant speed along the straight line; ``"arc"``: along a half circle whose
    diameter is that line (the motion then changes direction, which sparse-causal attention must follow).
    """
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    (x0, y0), (x1, y1) = scene.center, end
    scenes = []
    for i in range(frames):
        t = i / max(frames - 1, 1)
        if path == "line":
            center = (x0 + t * (x1 - x0), y0 + t * (y1 - y0))
        elif path == "arc":
            mid_x, mid_y, radius = (x0 + x1) / 2, (y0 + y1) / 2, math.hypot(x1 - x0, y1 - y0) / 2
            start_angle = math.atan2(y0 - mid_y, x0 - mid_x)
            center = (mid_x + radius * math.cos(start_angle + math.pi * t),
                      mid_y + radius * math.sin(start_angle + math.pi * t))
        else:
            raise ValueError(f"unknown path {path!r}; choose 'line' or 'arc'")
        scenes.append(replace(scene, center=center))
    return scenes


def render_clip(scenes: list[Scene], image_size: int = IMAGE_SIZE) -> np.ndarray:
    """``(F, H, W, 3)`` uint8 frames."""
    return np.stack([render(s, image_size) for s in scenes])


def to_tensor_range(images: np.ndarray) -> np.ndarray:
    """uint8 ``(..., H, W, 3)`` → float32 ``(..., 3, H, W)`` in [-1, 1], the model's pixel space."""
    return np.moveaxis(images.astype(np.float32) / 127.5 - 1.0, -1, -3)


def from_tensor_range(pixels: np.ndarray) -> np.ndarray:
    """Inverse of ``to_tensor_range`` (clipped): float ``(..., 3, H, W)`` → uint8 ``(..., H, W, 3)``."""
    return np.moveaxis(np.clip((pixels + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8), -3, -1)
