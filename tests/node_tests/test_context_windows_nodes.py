"""EI2DDIMInvert and EI2Sample on clips longer than context_frames: windows, blending, memory planning, cancel."""
from __future__ import annotations

import pytest
import torch

from harness.checkpoint import random_conditioning, small_sd15_model
from harness.graphs import INFLATE_DEFAULTS
from harness.numerics import batching_tolerance

FRAMES = 12


def clip(frames=FRAMES, seed=1):
    base = torch.randn(1, 4, 4, frames + 4, generator=torch.Generator().manual_seed(seed))
    return {"samples": torch.cat([base[..., i:i + 4] for i in range(frames)])}  # a pattern drifting sideways


@pytest.fixture(scope="module")
def video_model(pack):
    with torch.inference_mode():
        inflated = pack.NODE_CLASS_MAPPINGS["EI2InflateUNet"]().inflate(small_sd15_model(), **INFLATE_DEFAULTS)[0]
        return pack.NODE_CLASS_MAPPINGS["EI2OneShotTune"]().tune(  # grows the temporal maps: frames interact
            inflated, clip(), random_conditioning(5), 3, 1e-3, "temporal_and_queries", 0, False, 4)[0]


def invert(pack, model, latent, steps=4, **context):
    with torch.inference_mode():
        return pack.NODE_CLASS_MAPPINGS["EI2DDIMInvert"]().invert(model, latent, random_conditioning(5), steps, **context)[0]


def sample(pack, model, inverted, cfg=3.0, **context):
    with torch.inference_mode():
        return pack.NODE_CLASS_MAPPINGS["EI2Sample"]().sample(
            model, random_conditioning(5), random_conditioning(6), inverted, 4, cfg, 0.0, 0, **context)[0]["samples"]


def counting(model, calls):
    """A clone that records the frames per clip of every UNet call."""
    counted = model.clone()

    def wrapper(apply_model, args):
        calls.append(args["input"].shape[0] // len(args["cond_or_uncond"]))
        return apply_model(args["input"], args["timestep"], **args["c"])

    counted.set_model_unet_function_wrapper(wrapper)
    return counted


def test_inputs_are_optional_with_defaults_and_tooltips(pack):
    for name in ("EI2DDIMInvert", "EI2Sample"):
        optional = pack.NODE_CLASS_MAPPINGS[name].INPUT_TYPES()["optional"]
        assert optional["context_frames"][1]["default"] == 16 and optional["context_overlap"][1]["default"] == 4
        assert optional["context_anchor"][1]["default"] is False
        assert all(spec.get("tooltip") for _, spec in optional.values())


def test_a_long_clip_runs_window_by_window(pack, video_model):
    calls = []
    model = counting(video_model, calls)
    inverted = invert(pack, model, clip(), context_frames=4, context_overlap=1)
    # 12 frames in windows of 4 overlapping by 1: starts 0, 3, 6 and 8, for each of the 4 steps.
    assert calls == [4, 4, 4, 4] * 4 and inverted["samples"].shape[0] == FRAMES
    calls.clear()
    edited = sample(pack, model, inverted, context_frames=4, context_overlap=1, context_anchor=True)
    assert calls == [4, 5, 5, 5] * 4  # with the anchor, all windows but the first carry frame 0 too
    assert edited.shape == clip()["samples"].shape and torch.isfinite(edited).all()
    calls.clear()
    sample(pack, model, inverted, context_frames=FRAMES, context_overlap=1)
    assert calls == [FRAMES] * 4  # a clip no longer than the window is one window


def test_windows_blend_a_per_frame_model_to_its_unwindowed_result(pack):
    """Without frame interaction windows change nothing: the blending is exact (through conds and CFG)."""
    plain = small_sd15_model()
    whole = invert(pack, plain, clip(), context_frames=FRAMES, context_overlap=1)
    windowed = invert(pack, plain, clip(), context_frames=5, context_overlap=2)
    torch.testing.assert_close(windowed["samples"], whole["samples"], **batching_tolerance(whole["samples"]))
    # Batches of other sizes round differently (~1e-4), and CFG 3 amplifies that; a wrong blend would be off by ~1.
    torch.testing.assert_close(sample(pack, plain, windowed, context_frames=5, context_overlap=2),
                               sample(pack, plain, whole, context_frames=FRAMES, context_overlap=1), atol=1e-2, rtol=1e-3)


def test_frames_interact_within_windows_only(pack, video_model):
    whole = invert(pack, video_model, clip(), context_frames=FRAMES, context_overlap=1)["samples"]
    windowed = invert(pack, video_model, clip(), context_frames=4, context_overlap=1)["samples"]
    assert not torch.allclose(windowed, whole, atol=1e-4)  # the video model sees the windows, not the clip
    # After one step, frames 0-2 (in the first window alone) are that window's result as a clip of its own;
    # later steps couple them to the rest through frame 3, which the next window shares.
    one_step = invert(pack, video_model, clip(), steps=1, context_frames=4, context_overlap=1)["samples"]
    first = invert(pack, video_model, {"samples": clip()["samples"][:4]}, steps=1)["samples"]
    torch.testing.assert_close(one_step[:3], first[:3], **batching_tolerance(first[:3]))
    assert not torch.allclose(one_step[3], first[3], atol=1e-4)  # frame 3: blended with the second window


def test_comfyui_plans_memory_for_one_window(pack, video_model, monkeypatch):
    import comfy.sampler_helpers

    shapes, estimate = [], comfy.sampler_helpers.estimate_memory

    def recording(model, noise_shape, conds):
        shapes.append(list(noise_shape))
        return estimate(model, noise_shape, conds)

    monkeypatch.setattr(comfy.sampler_helpers, "estimate_memory", recording)
    long_clip = clip(40)
    inverted = invert(pack, video_model, long_clip, context_frames=8, context_overlap=2)
    sample(pack, video_model, inverted, context_frames=8, context_overlap=2, context_anchor=True)
    assert [shape[0] for shape in shapes] == [8, 9]  # one window (and its anchor), not 40 frames
    shapes.clear()
    sample(pack, video_model, invert(pack, video_model, clip(6)), context_frames=8, context_overlap=2)
    assert [shape[0] for shape in shapes] == [6, 6]
    assert "ei2_context_windows" not in str(video_model.wrappers)  # only a clone was wrapped


def test_cancel_stops_between_windows_and_the_next_run_works(pack, video_model):
    import comfy.model_management

    calls = []
    model = counting(video_model, calls)
    cancelling = model.clone()

    def cancel_in_window_2(apply_model, args):
        calls.append(args["input"].shape[0])
        if len(calls) == 2:  # the user presses cancel while the second window of the first step runs
            comfy.model_management.interrupt_current_processing(True)
        return apply_model(args["input"], args["timestep"], **args["c"])

    cancelling.set_model_unet_function_wrapper(cancel_in_window_2)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            invert(pack, cancelling, clip(), context_frames=4, context_overlap=1)
    finally:
        comfy.model_management.interrupt_current_processing(False)
    assert len(calls) == 2  # the third window never started, though the step had not ended
    assert torch.isfinite(invert(pack, video_model, clip(), context_frames=4, context_overlap=1)["samples"]).all()


@pytest.mark.parametrize("frames, overlap", [(4, 4), (4, 9), (16, 16)])
def test_overlap_not_smaller_than_the_window_is_refused_before_anything_runs(pack, video_model, frames, overlap):
    calls = []
    model = counting(video_model, calls)
    message = rf"context_overlap must be at least 0 and smaller than context_frames \({frames}\), got {overlap}"
    with pytest.raises(ValueError, match=message):
        invert(pack, model, clip(), context_frames=frames, context_overlap=overlap)
    inverted = invert(pack, video_model, clip())
    with pytest.raises(ValueError, match=message):
        sample(pack, model, inverted, context_frames=frames, context_overlap=overlap)
    assert calls == []
