"""The committed toy weights: they pass the image gate, and an EI² colour edit with them changes the colour.

Slow (tens of seconds on two cores); skipped when the weights file is absent.
"""
import pytest

from benchmarks.toyworld.edit import EditSettings, edit_clip
from benchmarks.toyworld.gate import evaluate_gate
from ei2.inflation import InflateOptions
from benchmarks.toyworld.metrics import clip_metrics
from benchmarks.toyworld.weights_io import DEFAULT_WEIGHTS, load_model
from benchmarks.toyworld.world import Scene, clip_scenes, render_clip

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not DEFAULT_WEIGHTS.exists(), reason="no trained toy weights; run the train command")]


def test_committed_weights_pass_the_gate():
    result = evaluate_gate(load_model(), per_caption=1, seed=7)
    assert result.passed, result.summary()


def test_an_ei2_colour_edit_changes_the_colour_and_keeps_the_path():
    clip = render_clip(clip_scenes(Scene("green", "square", "white", (9.0, 10.0), 6.5), (23.0, 21.0), frames=4))
    prompt = "a red square on a white background"
    result = edit_clip(load_model(), clip, "a green square on a white background", prompt, InflateOptions(attention_type="ffam", temporal_type="stam"),
                       EditSettings(tune_steps=20, ddim_steps=15))
    metrics = clip_metrics(clip, result.edited, prompt)
    assert metrics["colour_acc"] >= 0.75 and metrics["background_acc"] == 1.0
    assert metrics["centroid_error"] < 3.0


def test_the_committed_weights_are_what_the_readme_says():
    """A fine-tune of the flat-world model, whose step count is `train`'s default (so the README reproduces it)."""
    from benchmarks.toyworld.train import TrainSettings
    from benchmarks.toyworld.weights_io import read_metadata

    metadata = read_metadata(DEFAULT_WEIGHTS)
    assert metadata["init_steps"] == TrainSettings().steps and metadata["steps"] == 3413


def test_structure_reuse_keeps_the_layout_of_a_quick_colour_edit():
    """The quick edit (inflated, not tuned) of a small circle drifting on a diagonal, recoloured: without reuse the
    shape moves and grows; with the default reuse it stays where the source's was, and is still recoloured."""
    from benchmarks.toyworld.clips import SOURCE_CLIPS
    from benchmarks.toyworld.edit import tune_and_invert
    from ei2.structure_reuse import DEFAULT_STRUCTURE_REUSE

    clip = SOURCE_CLIPS[0]
    source = clip.frames(8)
    tuned = tune_and_invert(load_model(), source, clip.prompt(), InflateOptions(), EditSettings(tune_steps=0))
    prompt = clip.prompt(colour=clip.edits["colour"])
    plain, kept = (clip_metrics(source, tuned.sample(prompt, reuse), prompt) for reuse in (0.0, DEFAULT_STRUCTURE_REUSE))
    assert kept["colour_acc"] >= 0.75
    assert kept["mask_iou"] > plain["mask_iou"] + 0.2 and kept["centroid_error"] < plain["centroid_error"] / 2
