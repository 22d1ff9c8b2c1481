"""EI2Sample's structure reuse in-process: what the source pass records really reaches the edit's passes, reuse off
is today's sampler bit for bit, context windows hand each window its source frames, and a LATENT that no longer
matches its inversion is refused."""
from __future__ import annotations

import pytest
import torch

from harness.checkpoint import random_conditioning, shifting_clip, small_sd15_model, tuned_video_model

FRAMES = 4


@pytest.fixture(scope="module")
def video_model(pack):
    return tuned_video_model(pack, source())


def source(frames=FRAMES):
    return shifting_clip(frames)


def invert(pack, model, latent=None, steps=6):
    with torch.inference_mode():
        return pack.NODE_CLASS_MAPPINGS["EI2DDIMInvert"]().invert(model, latent or source(), random_conditioning(5), steps)[0]


def sample(pack, model, latent, steps=6, cfg=7.5, **options):
    with torch.inference_mode():
        return pack.NODE_CLASS_MAPPINGS["EI2Sample"]().sample(
            model, random_conditioning(42), random_conditioning(6), latent, steps, cfg, 0.0, 0, **options)[0]["samples"]


def test_reuse_off_is_todays_sampler_bit_for_bit(pack, video_model):
    inverted = invert(pack, video_model)
    today = sample(pack, video_model, inverted)  # an old graph or API prompt: no structure_reuse input
    assert torch.equal(sample(pack, video_model, inverted, structure_reuse=0.0), today)
    # Fewer reused steps than one (0.05 of 6 rounds to 0) is off too; one reused step changes the edit.
    assert torch.equal(sample(pack, video_model, inverted, structure_reuse=0.05), today)
    assert not torch.allclose(sample(pack, video_model, inverted, structure_reuse=0.2), today, atol=1e-4)
    # Nothing stays patched in the shared UNet or the input MODEL once a reusing run is done.
    assert torch.equal(sample(pack, video_model, inverted), today)


@pytest.mark.parametrize("kind", ["video model (FFAM)", "plain model"])
def test_the_source_pass_reaches_every_edit_pass(pack, video_model, monkeypatch, kind):
    """On a reused step: one source pass (one clip, the inversion's prompt, the trajectory's latent at that σ), then
    the edit's passes compute the decoder's attention with the source's q and k and the chosen ResBlock with the
    source's residual; on the other steps no source pass and the edit's own. With FFAM's attention patch or
    ComfyUI's own attention."""
    model = video_model if kind.startswith("video") else small_sd15_model()
    inverted = invert(pack, model)
    trajectory, prompt = inverted["ei2_inversion"]["trajectory"], random_conditioning(5)[0][0]
    assert trajectory.shape == (6, FRAMES, 4, 4, 4)
    assert torch.equal(inverted["ei2_inversion"]["prompt"], prompt)

    unet = model.model.diffusion_model
    calls, attention, residuals = [], [], []  # per UNet call: its input and prompt, its q/k per block, its residual

    def spy(module, name):
        own = getattr(module, name)

        def attend(q, k, *args, **kwargs):
            attention[-1][calls[-1][2]["block"]] = (q.clone(), k.clone())
            return own(q, k, *args, **kwargs)

        def attention_for(extra_options):  # comfyui_attention(extra_options) -> attention(q, k, v, heads)
            own_attention = own(extra_options)
            return lambda q, k, *rest: (attention[-1].__setitem__(calls[-1][2]["block"], (q.clone(), k.clone())),
                                        own_attention(q, k, *rest))[1]

        monkeypatch.setattr(module, name, attend if name == "frame_attention" else attention_for)

    spy(pack.nodes.adapter.patching, "frame_attention")
    spy(pack.nodes.adapter.structure_reuse, "comfyui_attention")

    def spy_unet(module, args, kwargs):
        calls.append((args[0].clone(), kwargs["context"].clone(), kwargs["transformer_options"]))
        attention.append({})

    adapter = pack.nodes.adapter.structure_reuse
    resblock = unet.output_blocks[adapter.reused_resblock(unet)][0]
    hooks = [unet.register_forward_pre_hook(spy_unet, with_kwargs=True),
             resblock.register_forward_hook(lambda m, args, out: residuals.append(out - m.skip_connection(args[0])))]
    try:
        sample(pack, model, inverted, structure_reuse=0.5)  # the first 3 of 6 steps
    finally:
        for hook in hooks:
            hook.remove()

    # ComfyUI batches cond and uncond into one call (a tiny model on the CPU always fits): a source pass of one clip
    # before each of the first three steps' edit call of two clips.
    assert [len(x) // FRAMES for x, _, _ in calls] == [1, 2, 1, 2, 1, 2, 2, 2, 2]
    sigmas = pack.nodes.adapter.sampling.ddim_sigmas(model.model.model_sampling.sigmas, 6).float()
    decoder = [block for block in attention[1] if block[0] == "output"]
    assert decoder == [("output", n) for n in range(len(unet.output_blocks))]  # every decoder block, none else
    for step in range(3):
        source, edit = 2 * step, 2 * step + 1
        x, context, _ = calls[source]
        torch.testing.assert_close(x, trajectory[step] / (1 + sigmas[step] ** 2).sqrt())  # ComfyUI's input scaling
        assert torch.equal(context, prompt.expand(FRAMES, -1, -1))
        for block in decoder:
            for taken, recorded in zip(attention[edit][block], attention[source][block]):
                assert torch.equal(taken, recorded.repeat(2, 1, 1))
        torch.testing.assert_close(residuals[edit], residuals[source].repeat(2, 1, 1, 1))
    for edit in (6, 7, 8):  # the edit's own structure again: cond and uncond differ
        q, _ = attention[edit][decoder[0]]
        assert not torch.allclose(q[:FRAMES], q[FRAMES:], atol=1e-4)


def test_each_context_window_gets_its_own_source_frames(pack, video_model):
    """A 6-frame clip in windows of 4 (frames 0-3 and 2-5): before each window's edit call, a source pass of that
    window's frames of the trajectory."""
    clip = source(frames=6)
    inverted = invert(pack, video_model, latent=clip)
    trajectory = inverted["ei2_inversion"]["trajectory"]
    unet, calls = video_model.model.diffusion_model, []
    hook = unet.register_forward_pre_hook(lambda module, args: calls.append(args[0].clone()))
    try:
        edited = sample(pack, video_model, inverted, structure_reuse=1 / 3, context_frames=4, context_overlap=2)
    finally:
        hook.remove()
    assert edited.shape == clip["samples"].shape and torch.isfinite(edited).all()
    sigmas = pack.nodes.adapter.sampling.ddim_sigmas(video_model.model.model_sampling.sigmas, 6).float()
    # Steps 0 and 1 reuse: source, edit per window; steps 2-5: the edits alone.
    assert [len(x) for x in calls] == [4, 8, 4, 8] * 2 + [8, 8] * 4
    for step in range(2):
        for window, frames in enumerate((slice(0, 4), slice(2, 6))):
            x = calls[4 * step + 2 * window]
            torch.testing.assert_close(x, trajectory[step][frames] / (1 + sigmas[step] ** 2).sqrt())


def test_a_latent_that_no_longer_matches_its_inversion_is_refused(pack, video_model):
    inverted = invert(pack, video_model)
    with pytest.raises(ValueError, match="inverted with 6 steps and EI2Sample has 5; set both to the same number"):
        sample(pack, video_model, inverted, steps=5, structure_reuse=0.5)
    fewer = {**inverted, "samples": inverted["samples"][:3]}  # e.g. through LatentFromBatch
    for reuse in (0.0, 0.5):
        with pytest.raises(ValueError, match="latent holds 3 frames but EI2DDIMInvert inverted 4: it was cut or batched"):
            sample(pack, video_model, fewer, structure_reuse=reuse)
    larger = {**inverted, "samples": torch.nn.functional.interpolate(inverted["samples"], scale_factor=2)}
    with pytest.raises(ValueError, match=r"holds \(4, 8, 8\) per frame but was inverted as \(4, 4, 4\).*changed after"):
        sample(pack, video_model, larger, structure_reuse=0.5)
    older = {**inverted, "ei2_inversion": {k: v for k, v in inverted["ei2_inversion"].items() if k != "trajectory"}}
    with pytest.raises(ValueError, match="lacks.*run EI2DDIMInvert again, or set structure_reuse to 0"):
        sample(pack, video_model, older, structure_reuse=0.5)
    # Without reuse, a LATENT of the inverted clip's frames samples as before.
    assert torch.isfinite(sample(pack, video_model, older)).all()
    assert torch.isfinite(sample(pack, video_model, larger)).all()


def test_the_input_is_optional_with_a_tooltip_and_the_shared_default(pack):
    from ei2.structure_reuse import DEFAULT_STRUCTURE_REUSE

    inputs = pack.NODE_CLASS_MAPPINGS["EI2Sample"].INPUT_TYPES()
    kind, spec = inputs["optional"]["structure_reuse"]
    assert kind == "FLOAT" and (spec["min"], spec["max"]) == (0.0, 1.0)
    assert spec["default"] == DEFAULT_STRUCTURE_REUSE and "0 = off" in spec["tooltip"]
    assert list(inputs["optional"])[-1] == "structure_reuse"  # the last widget: saved workflows keep their values
