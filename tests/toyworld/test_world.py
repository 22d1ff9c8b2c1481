"""The toy world renders what its scene says, and the README documents the palette the code uses."""
import re
from pathlib import Path

import numpy as np
import pytest

from benchmarks.toyworld.world import (BACKGROUNDS, COLOURS, SHAPES, Scene, caption, clip_scenes, from_tensor_range,
                                       parse_caption, random_scene, render, shape_mask, to_tensor_range)

README = Path(__file__).resolve().parents[2] / "benchmarks" / "toyworld" / "README.md"


def test_readme_lists_every_palette_entry_with_its_exact_rgb():
    text = README.read_text()
    documented = {name: tuple(int(v) for v in rgb) for name, *rgb in
                  re.findall(r"^\|\s*`?(\w+)`?\s*\|\s*\w+\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|", text, re.M)}
    assert documented == {**COLOURS, **BACKGROUNDS}
    for shape in SHAPES:
        assert shape in text


def test_caption_round_trips_and_rejects_other_sentences():
    scene = Scene("yellow", "triangle", "grey", (10.0, 12.0))
    assert caption(scene) == "a yellow triangle on a grey background"
    assert parse_caption(caption(scene)) == ("yellow", "triangle", "grey")
    with pytest.raises(ValueError):
        parse_caption("a purple circle on a grey background")
    with pytest.raises(ValueError):
        parse_caption("a red circle")


def test_render_uses_only_the_two_palette_colours_of_its_scene():
    rng = np.random.default_rng(1)
    for _ in range(50):
        scene = random_scene(rng)
        image = render(scene)
        colours = {tuple(c) for c in image.reshape(-1, 3)}
        assert colours == {COLOURS[scene.colour], BACKGROUNDS[scene.background]}
        # The shape lies wholly inside: no foreground pixel on the border.
        mask = np.all(image == COLOURS[scene.colour], axis=-1)
        assert not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


@pytest.mark.parametrize("shape, expected_fill", [("square", 1.0), ("circle", np.pi / 4), ("triangle", 0.5)])
def test_shape_areas_match_geometry(shape, expected_fill):
    size = 12.0
    mask = shape_mask(shape, (32.0, 32.0), size, image_size=64)
    assert mask.sum() / (2 * size) ** 2 == pytest.approx(expected_fill, rel=0.08)


def test_triangle_points_up():
    mask = shape_mask("triangle", (16.0, 16.0), 8.0)
    rows = mask.sum(axis=1)
    filled = rows[rows > 0]
    assert filled[0] < filled[-1] and np.all(np.diff(filled) >= 0)


def test_clip_moves_at_constant_speed_from_start_to_end():
    start = Scene("red", "circle", "white", (8.0, 10.0))
    scenes = clip_scenes(start, (24.0, 20.0), frames=5)
    centers = np.array([s.center for s in scenes])
    assert centers[0] == pytest.approx((8.0, 10.0)) and centers[-1] == pytest.approx((24.0, 20.0))
    steps = np.linalg.norm(np.diff(centers, axis=0), axis=1)
    assert steps == pytest.approx(np.full(4, steps[0]))
    assert {(s.colour, s.shape, s.background, s.size) for s in scenes} == {("red", "circle", "white", 7.0)}


def test_arc_clip_keeps_its_distance_from_the_arc_centre():
    scenes = clip_scenes(Scene("red", "circle", "white", (8.0, 16.0)), (24.0, 16.0), frames=9, path="arc")
    radii = [np.hypot(s.center[0] - 16.0, s.center[1] - 16.0) for s in scenes]
    assert radii == pytest.approx([8.0] * 9)
    assert scenes[4].center[1] != pytest.approx(16.0)  # it leaves the straight line


def test_pixel_range_round_trips():
    image = render(Scene("blue", "square", "black", (16.0, 16.0)))
    pixels = to_tensor_range(image)
    assert pixels.shape == (3, 32, 32) and pixels.min() >= -1 and pixels.max() <= 1
    assert np.array_equal(from_tensor_range(pixels), image)
