"""The analytic scorer reads scenes back: exactly on renders, and robustly under pixel noise."""
import itertools

import numpy as np
import pytest

from benchmarks.toyworld.scorer import FOREGROUND_DISTANCE, mask_iou, read_image
from benchmarks.toyworld.world import BACKGROUNDS, COLOURS, Scene, random_scene, render, shape_mask


def noisy(image, std, rng):
    return np.clip(image + rng.normal(0, std, image.shape), 0, 255).astype(np.uint8)


def test_every_foreground_colour_is_far_from_every_background():
    for fg, bg in itertools.product(COLOURS.values(), BACKGROUNDS.values()):
        assert np.linalg.norm(np.subtract(fg, bg)) > 1.6 * FOREGROUND_DISTANCE


def test_reads_every_attribute_of_clean_flat_renders():
    rng = np.random.default_rng(0)
    for _ in range(300):
        scene = random_scene(rng)
        reading = read_image(render(scene, textured=False))
        assert (reading.colour, reading.shape, reading.background) == (scene.colour, scene.shape, scene.background)
        truth = shape_mask(scene.shape, scene.center, scene.size)
        assert mask_iou(reading.mask, truth) > 0.85  # the median filter trims corners only


def test_reads_every_attribute_of_clean_textured_renders():
    rng = np.random.default_rng(0)
    ious, errors = [], []
    for _ in range(1000):
        scene = random_scene(rng)
        reading = read_image(render(scene))
        assert (reading.colour, reading.shape, reading.background) == (scene.colour, scene.shape, scene.background)
        ious.append(mask_iou(reading.mask, shape_mask(scene.shape, scene.center, scene.size)))
        ys, xs = np.nonzero(shape_mask(scene.shape, scene.center, scene.size))
        errors.append(np.hypot(reading.centroid[0] - xs.mean() - 0.5, reading.centroid[1] - ys.mean() - 0.5))
    # Soft edges: whether a partly covered edge row counts depends on the colours' contrast, so a
    # small square may gain or lose one row (IoU ≈ 0.8); typically the mask is the pixel-centre mask.
    assert min(ious) > 0.75 and np.mean(ious) > 0.93
    assert np.percentile(errors, 95) < 0.6


def test_centroid_is_the_centre_of_a_symmetric_shape():
    for shape in ("circle", "square"):
        reading = read_image(render(Scene("green", shape, "white", (12.3, 19.6), 7.0)))
        assert reading.centroid == pytest.approx((12.3, 19.6), abs=0.6)


@pytest.mark.parametrize("textured", [False, True])
def test_tolerates_sample_noise(textured):
    rng = np.random.default_rng(1)
    scenes = [random_scene(rng) for _ in range(200)]
    readings = [read_image(noisy(render(s, textured=textured), 40, rng)) for s in scenes]
    assert all(r.colour == s.colour and r.background == s.background for r, s in zip(readings, scenes))
    assert np.mean([r.shape == s.shape for r, s in zip(readings, scenes)]) >= 0.98


def test_a_square_with_rounded_corners_is_still_a_square():
    scene = Scene("blue", "square", "white", (16.0, 16.0), 8.0)
    image = render(scene)
    rounded = shape_mask("square", scene.center, scene.size) & ~(
        shape_mask("square", scene.center, scene.size) & ~shape_mask("circle", scene.center, scene.size * 1.2))
    image[shape_mask("square", scene.center, scene.size) & ~rounded] = BACKGROUNDS["white"]
    assert read_image(image).shape == "square"
    assert read_image(render(Scene("blue", "circle", "white", (16.0, 16.0), 8.0))).shape == "circle"


def test_ignores_specks_away_from_the_shape():
    image = render(Scene("red", "square", "grey", (10.0, 10.0), 6.0))
    image[25:27, 25:27] = COLOURS["blue"]  # a 2×2 speck: smaller than the shape
    reading = read_image(image)
    assert (reading.colour, reading.shape) == ("red", "square")


def test_an_empty_background_has_no_shape():
    image = render(Scene("red", "circle", "white", (16.0, 16.0)))
    image[:] = BACKGROUNDS["white"]
    reading = read_image(image)
    assert reading.colour is None and reading.shape is None and reading.centroid is None
    assert reading.background == "white" and reading.area == 0


def test_mask_iou():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2], b[1:3] = True, True
    assert mask_iou(a, b) == pytest.approx(4 / 12)
    assert mask_iou(a, a) == 1.0
    assert mask_iou(np.zeros_like(a), np.zeros_like(a)) == 1.0


def test_rejects_float_images():
    with pytest.raises(ValueError):
        read_image(np.zeros((32, 32, 3), np.float32))
