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
