"""The edit pipeline (inflate → tune → invert → sample) runs the ei2 core on the toy model, reproducibly."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from benchmarks.toyworld.edit import EditSettings, edit_clip
from benchmarks.toyworld.model import ToyConfig, ToyT2I
from benchmarks.toyworld.video_io import read_clip, write_clip
from benchmarks.toyworld.world import Scene, clip_scenes, render_clip
from ei2.inflation import InflateOptions

TINY = ToyConfig(channels=(8, 16), heads=2, context_dim=16, embedding_dim=16)
CLIP = render_clip(clip_scenes(Scene("red", "circle", "grey", (9.0, 9.0), 6.0), (22.0, 20.0), frames=3))
FAST = EditSettings(tune_steps=2, ddim_steps=3, guidance=2.0, seed=1)


def tiny_model():
    torch.manual_seed(0)
    model = ToyT2I(TINY)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval().requires_grad_(False)


@pytest.mark.parametrize("attention, temporal", [("ffam", "stam"), ("sparse_causal", "vanilla"), ("per_frame", "none")])
def test_edit_runs_and_repeats_exactly(attention, temporal):
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    args = (model, CLIP, "a red circle on a grey background", "a blue circle on a grey background",
            InflateOptions(attention_type=attention, temporal_type=temporal))
    first = edit_clip(*args, FAST, reconstruct=True)
    second = edit_clip(*args, FAST, reconstruct=True)
    assert first.edited.shape == CLIP.shape and first.edited.dtype == np.uint8
    assert first.reconstruction.shape == CLIP.shape
    assert np.array_equal(first.edited, second.edited)
    assert len(first.losses) == 2  # temporal_and_queries: the queries are tuned even without temporal modules
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_temporal_only_tuning_without_temporal_modules_is_refused_as_the_pack_refuses_it():
    with pytest.raises(ValueError, match="Nothing to tune: train='temporal'"):
        edit_clip(tiny_model(), CLIP, "a red circle on a grey background", "a red circle on a grey background",
                  InflateOptions(attention_type="per_frame", temporal_type="none"),
                  EditSettings(tune_steps=2, ddim_steps=2, train="temporal"))


def test_clip_files_round_trip(tmp_path):
    write_clip(tmp_path / "clip.avi", CLIP)
    assert np.array_equal(read_clip(tmp_path / "clip.avi"), CLIP)
    write_clip(tmp_path / "clip.mp4", CLIP)
    assert np.abs(read_clip(tmp_path / "clip.mp4").astype(int) - CLIP).max() < 40


def test_a_checkpoint_of_a_longer_run_is_the_shorter_run():
    """The budget curve samples checkpoints of one run: each must be the model a run of that length gives."""
    from benchmarks.toyworld.edit import tune

    options = InflateOptions(attention_type="ffam", temporal_type="stam")
    _, losses, checkpoints = tune(tiny_model(), CLIP, "a red circle on a grey background", options,
                                  replace(FAST, tune_steps=4, learning_rate=1e-2), checkpoints=(0, 2, 4))
    short, short_losses, _ = tune(tiny_model(), CLIP, "a red circle on a grey background", options,
                                  replace(FAST, tune_steps=2, learning_rate=1e-2))
    assert short_losses == losses[:2]
    for key, value in short.state_dict().items():
        assert torch.equal(checkpoints[2].state_dict()[key], value), key
    untuned = tune(tiny_model(), CLIP, "", options, replace(FAST, tune_steps=0))[0]
    assert all(torch.equal(checkpoints[0].state_dict()[k], v) for k, v in untuned.state_dict().items())
    assert any(not torch.equal(checkpoints[4].state_dict()[k], v) for k, v in short.state_dict().items())
