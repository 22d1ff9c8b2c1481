"""Edit metrics on clips whose answers are known by construction."""
from dataclasses import replace

import numpy as np
import pytest

from benchmarks.toyworld.metrics import clip_metrics, jitter
from benchmarks.toyworld.world import Scene, clip_scenes, render, render_clip

SOURCE_PROMPT = "a red circle on a grey background"
SCENES = clip_scenes(Scene("red", "circle", "grey", (8.0, 9.0), 6.0), (24.0, 22.0), frames=6)


def flat(scenes):
    """The world without texture: exact answers (every pixel one of two palette colours)."""
    return np.stack([render(s, textured=False) for s in scenes])


SOURCE = flat(SCENES)


def test_the_source_against_itself_is_a_perfect_reconstruction():
    m = clip_metrics(SOURCE, SOURCE, SOURCE_PROMPT, reconstruction=SOURCE)
    assert m["edit_acc"] == 1.0 and m["centroid_error"] == 0.0 and m["mask_iou"] == 1.0
    assert m["flips"] == 0 and m["jitter"] == pytest.approx(0.0, abs=1e-9)
    assert m["recon_psnr"] == float("inf") and m["recon_acc"] == 1.0


def test_a_perfect_colour_edit():
    edited = flat([replace(s, colour="blue") for s in SCENES])
    m = clip_metrics(SOURCE, edited, "a blue circle on a grey background")
    assert m["edit_acc"] == 1.0 and m["centroid_error"] == pytest.approx(0.0) and m["mask_iou"] == 1.0
    assert m["area_ratio"] == 1.0
    assert clip_metrics(SOURCE, SOURCE, "a blue circle on a grey background")["colour_acc"] == 0.0


def test_a_perfect_colour_edit_of_the_textured_world_is_read_within_a_fraction_of_a_pixel():
    textured = render_clip(SCENES)
    m = clip_metrics(textured, render_clip([replace(s, colour="blue") for s in SCENES]), "a blue circle on a grey background")
    assert m["edit_acc"] == 1.0 and m["centroid_error"] < 0.5 and m["mask_iou"] > 0.85
    assert m["area_ratio"] == pytest.approx(1.0, abs=0.15)


def test_a_bigger_shape_has_an_area_ratio_above_one():
    bigger = flat([replace(s, size=s.size * 1.5) for s in SCENES])
    assert clip_metrics(SOURCE, bigger, SOURCE_PROMPT)["area_ratio"] == pytest.approx(2.25, rel=0.1)


def test_one_wrong_frame_is_two_flips_and_a_missed_frame():
    scenes = [replace(s, colour="blue") for s in SCENES]
    scenes[3] = replace(scenes[3], colour="green")
    m = clip_metrics(SOURCE, flat(scenes), "a blue circle on a grey background")
    assert m["flips"] == 2 and m["colour_acc"] == pytest.approx(5 / 6) and m["shape_acc"] == 1.0


def test_a_shape_that_stops_following_the_path():
    scenes = [replace(s, center=SCENES[0].center) for s in SCENES]  # frozen at the first position
    m = clip_metrics(SOURCE, flat(scenes), SOURCE_PROMPT)
    assert m["edit_acc"] == 1.0 and m["centroid_error"] > 5 and m["mask_iou"] < 0.5


def test_jitter_measures_shaking_not_moving():
    line = np.stack([np.linspace(0, 10, 6), np.linspace(0, 5, 6)], axis=1)
    shaken = line.copy()
    shaken[2] += (1.0, 0.0)
    assert jitter(line) == pytest.approx(0.0)
    assert jitter(shaken) == pytest.approx((1 + 2 + 1) / 4)


def test_a_lost_shape_is_a_miss_not_a_distance():
    frames = SOURCE.copy()
    frames[2][:] = (128, 128, 128)
    m = clip_metrics(SOURCE, frames, SOURCE_PROMPT)
    assert m["found"] == pytest.approx(5 / 6) and m["colour_acc"] == pytest.approx(5 / 6)
    assert m["centroid_error"] == pytest.approx(0.0)
