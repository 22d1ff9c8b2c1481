"""The toy world renders what its scene says, and the README documents the palette the code uses."""
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmarks.toyworld.world import (BACKGROUNDS, COLOURS, SHAPES, Scene, caption, clip_scenes, from_tensor_range,
                                       parse_caption, random_scene, render, render_clip, shape_coverage, shape_mask,
                                       to_tensor_range)

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


def test_flat_render_uses_only_the_two_palette_colours_of_its_scene():
    rng = np.random.default_rng(1)
    for _ in range(50):
        scene = random_scene(rng)
        image = render(scene, textured=False)
        colours = {tuple(c) for c in image.reshape(-1, 3)}
        assert colours == {COLOURS[scene.colour], BACKGROUNDS[scene.background]}
        # The shape lies wholly inside: no foreground pixel on the border.
        mask = np.all(image == COLOURS[scene.colour], axis=-1)
        assert not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


def test_textured_render_varies_around_the_palette_of_its_scene():
    rng = np.random.default_rng(2)
    soft = []
    for _ in range(50):
        scene = random_scene(rng)
        image = render(scene).astype(np.float32)
        inside = shape_coverage(scene.shape, scene.center, scene.size)
        background, shape = image[inside == 0], image[inside == 1]
        # Texture everywhere: many distinct values, a spread of several RGB units (not a flat colour)...
        assert len({tuple(c) for c in background}) > 0.5 * len(background)
        assert background.std(axis=0).mean() > 5 and shape.std(axis=0).mean() > 4
        # ...around the palette colours: the medians stay close, and no pixel strays far.
        assert np.linalg.norm(np.median(background, 0) - BACKGROUNDS[scene.background]) < 25
        assert np.linalg.norm(np.median(shape, 0) - COLOURS[scene.colour]) < 25
        # What the scorer relies on: after its 3×3 median filter every pixel away from the shape stays
        # within its foreground line (75) of the background colour.
        smooth = cv2.medianBlur(render(scene), 3).astype(np.float32)
        far = shape_coverage(scene.shape, scene.center, scene.size + 2) == 0
        assert np.linalg.norm(smooth[far] - BACKGROUNDS[scene.background], axis=-1).max() < 75
        soft.append(np.logical_and(inside > 0, inside < 1).any())
    # Soft edges: pixels partly covered blend the two colours (a square whose edges fall between the
    # supersampling points of a pixel row has none).
    assert np.mean(soft) > 0.9


def test_texture_comes_from_the_scene_seed():
    scene = Scene("red", "circle", "grey", (16.0, 16.0), 7.0)
    assert np.array_equal(render(scene), render(Scene("red", "circle", "grey", (16.0, 16.0), 7.0)))
    assert scene.texture_seed == 0
    assert not np.array_equal(render(scene), render(Scene("red", "circle", "grey", (16.0, 16.0), 7.0, 1)))
    seeds = {random_scene(np.random.default_rng(i)).texture_seed for i in range(20)}
    assert len(seeds) == 20


def test_a_clip_has_a_static_background_and_a_shape_whose_texture_moves_with_it():
    start = Scene("blue", "square", "white", (10.0, 10.0), 6.0, texture_seed=5)
    scenes = clip_scenes(start, (22.0, 20.0), frames=4)
    assert {s.texture_seed for s in scenes} == {5}
    frames = render_clip(scenes).astype(np.int16)
    covered = np.stack([shape_coverage(s.shape, s.center, s.size) > 0 for s in scenes])
    uncovered = ~covered.any(axis=0)
    assert uncovered.sum() > 300
    assert all(np.array_equal(frames[0][uncovered], f[uncovered]) for f in frames[1:])
    # An integer move carries the shape's own texture along (up to the lighting, which stays put).
    a, b = (render(replace_center(start, c)).astype(np.int16) for c in ((10.0, 10.0), (14.0, 13.0)))
    light_free = a[7:13, 7:13] - b[10:16, 11:17]
    assert np.abs(light_free - np.median(light_free, axis=(0, 1))).mean() < 4
    flat = render_clip(scenes, textured=False)
    assert all(np.array_equal(f, render(s, textured=False)) for f, s in zip(flat, scenes))


def replace_center(scene, center):
    from dataclasses import replace

    return replace(scene, center=center)


def test_coverage_is_the_mask_at_pixel_centres_in_the_limit():
    for shape in SHAPES:
        coverage = shape_coverage(shape, (15.3, 16.8), 7.5)
        mask = shape_mask(shape, (15.3, 16.8), 7.5)
        assert coverage.sum() == pytest.approx(mask.sum(), rel=0.08)
        assert np.all(coverage[mask] > 0) and np.all(coverage[~mask] < 1)


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
    image = render(Scene("blue", "square", "white", (16.0, 16.0)))
    pixels = to_tensor_range(image)
    assert pixels.shape == (3, 32, 32) and pixels.min() >= -1 and pixels.max() <= 1
    assert np.array_equal(from_tensor_range(pixels), image)
