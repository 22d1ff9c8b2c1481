"""The toy world: one textured shape on a textured background, its caption, and clips of it moving.

Everything is procedural: a ``Scene`` names a shape, its colour, the background colour, its centre
and size in pixels, and the seed of its texture; ``render`` draws it. Around each palette colour
below it adds what real frames have and flat colours lack (see README.md, "Texture"): a smooth
lighting field and a fine per-pixel texture on the background, shading and a fine texture on the
shape (which moves with it), and anti-aliased edges. The texture comes from ``texture_seed`` alone,
so the background of a clip (``clip_scenes`` keeps the seed) is static, like a real background.
Its amplitudes stay well inside what the scorer (``scorer.py``) tolerates, so it reads every scene
back; ``render(scene, textured=False)`` draws the old flat world (two palette colours, hard edges).
The palette (RGB, 0–255) is documented in README.md; tests check the two agree.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
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

# Texture amplitudes, RGB units (0–255). Backgrounds are ≥ 187 apart and a foreground pixel must be
# > 75 from its background (scorer.py): light (≤ ~±25) and texture (σ 24 per channel before the
# scorer's 3×3 median filter, ≈ 10 after it) leave every pixel on its side of both lines.
# Why so strong: DDIM inversion (25 steps) turns a per-pixel detail of std s into inverted noise of
# std ≈ 0.5 at s = 8, 0.85 at s = 24, 0.91 at s = 32 (README.md, "Texture and DDIM inversion").
LIGHT_STD = 6.0  # the smooth lighting field (shared by background and shape): std over the image
BACKGROUND_TEXTURE_STD = 24.0  # fine per-pixel texture of the background, each channel independent
SHAPE_TEXTURE_STD = 20.0  # fine per-pixel texture of the shape, in the shape's own coordinates
SHADING = 12.0  # the shape's shading: ± half this from its lit side to its dark side
SUPERSAMPLE = 4  # anti-aliasing: coverage from SUPERSAMPLE² samples per pixel


@dataclass(frozen=True)
class Scene:
    colour: str
    shape: str
    background: str
    center: tuple[float, float]  # (x, y) in pixels, origin at the top-left corner of the image
    size: float = 7.0
    texture_seed: int = 0  # the lighting, textures and light direction; fixed over a clip's frames

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


def _inside(shape: str, xs: np.ndarray, ys: np.ndarray, center: tuple[float, float], size: float) -> np.ndarray:
    dx, dy = xs - center[0], ys - center[1]
    if shape == "circle":
        return dx**2 + dy**2 <= size**2
    if shape == "square":
        return (np.abs(dx) <= size) & (np.abs(dy) <= size)
    # Upright isosceles triangle in the square's bounding box: apex at the top, base at the bottom.
    inside_height = np.abs(dy) <= size
    half_width = size * (dy + size) / (2 * size)
    return inside_height & (np.abs(dx) <= half_width)


def shape_mask(shape: str, center: tuple[float, float], size: float, image_size: int = IMAGE_SIZE) -> np.ndarray:
    """Boolean ``(H, W)`` mask of the shape, tested at pixel centres (no anti-aliasing)."""
    ys, xs = np.mgrid[0:image_size, 0:image_size] + 0.5
    return _inside(shape, xs, ys, center, size)


def shape_coverage(shape: str, center: tuple[float, float], size: float, image_size: int = IMAGE_SIZE,
                   samples: int = SUPERSAMPLE) -> np.ndarray:
    """Float ``(H, W)`` fraction of each pixel the shape covers (``samples²`` points per pixel)."""
    ys, xs = (np.mgrid[0:image_size * samples, 0:image_size * samples] + 0.5) / samples
    inside = _inside(shape, xs, ys, center, size).astype(np.float32)
    return inside.reshape(image_size, samples, image_size, samples).mean(axis=(1, 3))


def _smooth_field(rng: np.random.Generator, image_size: int, grid: int = 3) -> np.ndarray:
    """A unit-std ``(H, W)`` field varying over a third of the image: a ``grid²`` lattice, bicubic."""
    field = cv2.resize(rng.standard_normal((grid, grid)).astype(np.float32), (image_size, image_size),
                       interpolation=cv2.INTER_CUBIC)
    field -= field.mean()
    return field / max(float(field.std()), 1e-6)


def _texture(rng: np.random.Generator, image_size: int) -> np.ndarray:
    """Unit-std ``(H, W, 3)`` per-pixel texture, each channel its own: every pixel value carries detail."""
    return rng.standard_normal((image_size, image_size, 3)).astype(np.float32)


@dataclass(frozen=True)
class Texture:
    """What ``texture_seed`` draws: lighting, both textures and the light's direction."""
    light: np.ndarray  # (H, W) RGB units, added to every channel of background and shape
    background: np.ndarray  # (H, W, 3) RGB units
    shape: np.ndarray  # (H, W, 3) RGB units, indexed in the shape's coordinates (it moves with the shape)
    light_direction: tuple[float, float]  # unit (x, y) towards the light


def scene_texture(seed: int, image_size: int = IMAGE_SIZE) -> Texture:
    """The texture of ``seed``: the same seed draws the same texture (a clip's frames share it)."""
    rng = np.random.default_rng([0x7E97, seed, image_size])
    light = LIGHT_STD * (0.5 * _smooth_field(rng, image_size, 2) + 0.87 * _smooth_field(rng, image_size, 3))
    background = BACKGROUND_TEXTURE_STD * _texture(rng, image_size)
    shape = SHAPE_TEXTURE_STD * _texture(rng, image_size)
    angle = float(rng.uniform(0, 2 * math.pi))
    return Texture(light, background, shape, (math.cos(angle), math.sin(angle)))


def render(scene: Scene, image_size: int = IMAGE_SIZE, textured: bool = True) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB image of ``scene``; ``textured=False``: flat palette colours, hard edges."""
    if not textured:
        image = np.empty((image_size, image_size, 3), np.uint8)
        image[:] = BACKGROUNDS[scene.background]
        image[shape_mask(scene.shape, scene.center, scene.size, image_size)] = COLOURS[scene.colour]
        return image
    texture = scene_texture(scene.texture_seed, image_size)
    background = np.float32(BACKGROUNDS[scene.background]) + texture.background
    # The shape's own texture and shading live in its coordinates: they move with it.
    ys, xs = np.mgrid[0:image_size, 0:image_size]
    cx, cy = scene.center
    rows = (ys - int(round(cy)) + image_size // 2) % image_size
    cols = (xs - int(round(cx)) + image_size // 2) % image_size
    lx, ly = texture.light_direction
    toward_light = ((xs + 0.5 - cx) * lx + (ys + 0.5 - cy) * ly) / scene.size
    shape = (np.float32(COLOURS[scene.colour]) + texture.shape[rows, cols]
             + (SHADING / 2 * np.clip(toward_light, -1, 1))[..., None])
    coverage = shape_coverage(scene.shape, scene.center, scene.size, image_size)[..., None]
    image = coverage * shape + (1 - coverage) * background + texture.light[..., None]
    # Reflect at 0 and 255 rather than clip: no pile of identical pixels on black or white.
    image = 255 - np.abs(255 - np.abs(image))
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def random_scene(rng: np.random.Generator, image_size: int = IMAGE_SIZE) -> Scene:
    """A uniformly drawn scene whose shape lies wholly inside the image, with its own texture seed."""
    size = float(rng.uniform(*SIZE_RANGE))
    margin = size + 1
    center = tuple(float(c) for c in rng.uniform(margin, image_size - margin, size=2))
    return Scene(str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES)), str(rng.choice(list(BACKGROUNDS))),
                 center, size, int(rng.integers(2**31)))


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


def render_clip(scenes: list[Scene], image_size: int = IMAGE_SIZE, textured: bool = True) -> np.ndarray:
    """``(F, H, W, 3)`` uint8 frames."""
    return np.stack([render(s, image_size, textured) for s in scenes])


def to_tensor_range(images: np.ndarray) -> np.ndarray:
    """uint8 ``(..., H, W, 3)`` → float32 ``(..., 3, H, W)`` in [-1, 1], the model's pixel space."""
    return np.moveaxis(images.astype(np.float32) / 127.5 - 1.0, -1, -3)


def from_tensor_range(pixels: np.ndarray) -> np.ndarray:
    """Inverse of ``to_tensor_range`` (clipped): float ``(..., 3, H, W)`` → uint8 ``(..., H, W, 3)``."""
    return np.moveaxis(np.clip((pixels + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8), -3, -1)
