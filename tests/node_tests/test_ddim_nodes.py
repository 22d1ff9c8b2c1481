"""EI2DDIMInvert, EI2Sample and EI2DDIMSampler in-process: the exact schedule, the round trip, progress,
cancel, bad input, the steps limit, and the SAMPLER in SamplerCustom."""
from __future__ import annotations

import logging

import pytest
import torch

from ei2.ddim import ddim_invert, ddim_sample, ddim_sigmas
from harness.checkpoint import random_conditioning, shifting_clip, small_sd15_model, tuned_video_model
from harness.numerics import batching_tolerance

FRAMES = 4


@pytest.fixture(scope="module")
def video_model(pack):
    return tuned_video_model(pack, source())


def source():
    return shifting_clip(FRAMES)


def invert(pack, model, latent=None, steps=10, conditioning=None):
    with torch.inference_mode():
        return pack.NODE_CLASS_MAPPINGS["EI2DDIMInvert"]().invert(
            model, latent or source(), conditioning or random_conditioning(5), steps)[0]


def sample(pack, model, latent, steps=10, cfg=1.0, eta=0.0, seed=0, positive=None, **context):
    with torch.inference_mode():
        return pack.NODE_CLASS_MAPPINGS["EI2Sample"]().sample(
            model, positive or random_conditioning(5), random_conditioning(6), latent, steps, cfg, eta, seed, **context)[0]


def smooth_denoiser(x, sigma):
    """x0 of a smooth ε-model, ε = 0.5·tanh(x_t), for σ-space x: DDIM's only error is its discretisation."""
    sigma = sigma.view(-1, 1, 1, 1)
    return x - sigma * 0.5 * torch.tanh(x / torch.sqrt(1 + sigma**2))


def smooth_model():
    """The tiny MODEL with its UNet replaced by ``smooth_denoiser`` (ComfyUI's wrapper returns x0)."""
    smooth = small_sd15_model().clone()
    smooth.set_model_unet_function_wrapper(lambda apply_model, args: smooth_denoiser(args["input"], args["timestep"]))
    return smooth


def test_registered_with_tooltips_and_defaults(pack):
    invert_inputs = pack.NODE_CLASS_MAPPINGS["EI2DDIMInvert"].INPUT_TYPES()["required"]
    sample_inputs = pack.NODE_CLASS_MAPPINGS["EI2Sample"].INPUT_TYPES()["required"]
    sampler_inputs = pack.NODE_CLASS_MAPPINGS["EI2DDIMSampler"].INPUT_TYPES()["required"]
    assert list(invert_inputs) == ["model", "latent", "conditioning", "steps"]
    assert list(sample_inputs) == ["model", "positive", "negative", "latent", "steps", "cfg", "eta", "seed"]
    assert list(sampler_inputs) == ["eta"] and sampler_inputs["eta"][1]["default"] == 0.0
    assert invert_inputs["steps"][1]["default"] == sample_inputs["steps"][1]["default"] == 50
    assert sample_inputs["cfg"][1]["default"] == 7.5 and "12.5" in sample_inputs["cfg"][1]["tooltip"]
    assert sample_inputs["eta"][1]["default"] == 0.0
    assert all(spec.get("tooltip") for _, spec in [*invert_inputs.values(), *sample_inputs.values(), *sampler_inputs.values()])
    sampler = pack.NODE_CLASS_MAPPINGS["EI2DDIMSampler"]
    assert sampler.RETURN_TYPES == ("SAMPLER",) and sampler.CATEGORY == "EI²"
    assert "the inversion's schedule" in sampler.DESCRIPTION and pack.NODE_DISPLAY_NAME_MAPPINGS["EI2DDIMSampler"]
    # EI2Sample's words say what its code does: the inversion's schedule only when the steps agree.
    assert "when both nodes have the same steps (it warns when they differ" in pack.NODE_CLASS_MAPPINGS["EI2Sample"].DESCRIPTION


def test_inversion_is_exactly_ddim_on_the_models_own_schedule(pack, video_model):
    """The node's result equals the core inversion driven straight through the model, no sampler in between."""
    import comfy.model_management

    inverted = invert(pack, video_model, steps=10)
    info = inverted["ei2_inversion"]
    assert info["steps"] == 10 and info["frames"] == FRAMES and info["trajectory"].shape == (10, FRAMES, 4, 4, 4)

    comfy.model_management.load_models_gpu([video_model, *video_model.get_nested_additional_models()])
    inner = video_model.model
    sigmas = ddim_sigmas(inner.model_sampling.sigmas, 10).flip(0).float()
    context = random_conditioning(5)[0][0].expand(FRAMES, -1, -1)
    options = {**video_model.model_options["transformer_options"], "cond_or_uncond": [0]}

    def denoiser(x, sigma):
        return inner.apply_model(x, sigma, c_crossattn=context, transformer_options=dict(options))

    with torch.inference_mode():
        expected = ddim_invert(denoiser, inner.process_latent_in(source()["samples"]), sigmas) / sigmas[-1]
    torch.testing.assert_close(inverted["samples"], expected, atol=1e-4, rtol=1e-4)


def test_round_trip_reconstructs_the_source(pack, video_model):
    errors = {}
    for steps in (5, 20, 50):
        back = sample(pack, video_model, invert(pack, video_model, steps=steps), steps=steps, cfg=1.0)["samples"]
        errors[steps] = (back - source()["samples"]).abs().mean().item()
    fresh = dict(invert(pack, video_model, steps=50))
    fresh["samples"] = torch.randn(fresh["samples"].shape, generator=torch.Generator().manual_seed(9))
    from_noise = (sample(pack, video_model, fresh, steps=50, cfg=1.0)["samples"] - source()["samples"]).abs().mean().item()
    print(f"round-trip mean |error| by steps: {errors}; from fresh noise: {from_noise:.4f}")
    assert errors[50] < 0.1 * from_noise
    assert errors[50] <= errors[5]


def test_round_trip_through_the_nodes_converges_for_a_smooth_model(pack):
    """With a smooth ε-model the only error left is DDIM's discretisation: it must shrink with the steps."""
    smooth = smooth_model()
    errors = []
    for steps in (5, 20, 80):
        back = sample(pack, smooth, invert(pack, smooth, steps=steps), steps=steps)["samples"]
        errors.append((back - source()["samples"]).abs().max().item())
    print(f"smooth-model round-trip max |error| for 5/20/80 steps: {errors}")
    # First-order convergence: 4× the steps, about a quarter of the error (in raw VAE-latent units).
    assert errors[1] < 0.6 * errors[0] and errors[2] < 0.3 * errors[1] and errors[2] < 0.1


def test_edit_prompt_and_cfg_change_the_result(pack, video_model):
    inverted = invert(pack, video_model)
    same = sample(pack, video_model, inverted, cfg=1.0)["samples"]
    edited = sample(pack, video_model, inverted, cfg=7.5, positive=random_conditioning(42))["samples"]
    assert edited.shape == same.shape == (FRAMES, 4, 4, 4) and torch.isfinite(edited).all()
    assert not torch.allclose(edited, same, atol=1e-3)


def test_eta_noise_follows_the_seed(pack, video_model):
    inverted = invert(pack, video_model)
    deterministic = [sample(pack, video_model, inverted, eta=0.0, seed=s)["samples"] for s in (0, 1)]
    assert torch.equal(*deterministic)
    noisy = [sample(pack, video_model, inverted, eta=0.5, seed=s)["samples"] for s in (0, 0, 1)]
    assert torch.equal(noisy[0], noisy[1]) and not torch.allclose(noisy[0], noisy[2])
    assert not torch.allclose(noisy[0], deterministic[0])


def test_progress_reaches_the_total_and_cancel_stops_within_a_step(pack, video_model):
    import comfy.model_management
    import comfy.utils

    inverted = invert(pack, video_model)
    seen = []

    def hook(value, total, preview, **kwargs):
        seen.append((value, total))
        comfy.model_management.throw_exception_if_processing_interrupted()  # what the server's hook does

    counting, evaluations = video_model.clone(), []

    def cancel_during_step_4(apply_model, args):
        evaluations.append(1)
        if len(evaluations) == 4:  # the user presses cancel while the 4th model evaluation runs
            comfy.model_management.interrupt_current_processing(True)
        return apply_model(args["input"], args["timestep"], **args["c"])

    counting.set_model_unet_function_wrapper(cancel_during_step_4)
    comfy.utils.set_progress_bar_global_hook(hook)
    try:
        sample(pack, video_model, inverted, steps=10)
        assert seen[-1] == (10, 10)  # the first and last updates arrive even where the hook is throttled
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            sample(pack, counting, inverted, steps=10)
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
        comfy.model_management.interrupt_current_processing(False)
    # 0.3.75 stops in the progress hook after step 4; newer ComfyUI at the first op of step 5.
    assert len(evaluations) in (4, 5)
    assert torch.isfinite(sample(pack, video_model, inverted, steps=10)["samples"]).all()


def frames_alone(run, latent):
    """``run`` on each frame of ``latent`` as a one-frame clip (an inverted one as if that frame had been inverted
    alone), the results stacked back into a clip."""
    samples, record = latent["samples"], latent.get("ei2_inversion")

    def frame(i):
        if record is None:
            return {**latent, "samples": samples[i:i + 1]}
        alone = {**record, "frames": 1, "trajectory": record["trajectory"][:, i:i + 1]}
        return {**latent, "samples": samples[i:i + 1], "ei2_inversion": alone}

    return torch.cat([run(frame(i))["samples"] for i in range(len(samples))])


def test_a_plain_model_is_the_per_frame_baseline(pack, video_model):
    """A plain MODEL inverts and samples each frame on its own: the clip's result is the frames' results."""
    plain = small_sd15_model()
    inverted = invert(pack, plain, steps=5)
    torch.testing.assert_close(inverted["samples"], frames_alone(lambda one: invert(pack, plain, one, steps=5), source()),
                               **batching_tolerance(inverted["samples"]))
    edited = sample(pack, plain, inverted, steps=5, cfg=7.5)["samples"]
    # Up to float32 batching noise, which CFG 7.5 amplifies: ~1e-4 of values of up to ~20 (raw VAE latents).
    torch.testing.assert_close(edited, frames_alone(lambda one: sample(pack, plain, one, steps=5, cfg=7.5), inverted),
                               atol=2e-3, rtol=1e-4)
    # The comparison can tell: in the video model the frames attend to each other.
    video_inverted = invert(pack, video_model, steps=5)["samples"]
    alone = frames_alone(lambda one: invert(pack, video_model, one, steps=5), source())
    assert not torch.allclose(video_inverted, alone, atol=1e-3)


def test_steps_up_to_the_limit_run_on_the_exact_schedule_and_beyond_are_refused(pack):
    """At MAX_DDIM_STEPS the first σ is still below σ_max, so ComfyUI starts from noise·σ₀ unchanged (at σ_max
    it would start from noise·√(1+σ₀²)); one step more is refused before anything runs."""
    import comfy.model_management

    limit = pack.nodes.adapter.sampling.MAX_DDIM_STEPS
    assert pack.NODE_CLASS_MAPPINGS["EI2Sample"].INPUT_TYPES()["required"]["steps"][1]["max"] == limit
    smooth = smooth_model()
    inner = smooth.model
    sigmas = ddim_sigmas(inner.model_sampling.sigmas, limit).float()
    assert sigmas[0] < inner.model_sampling.sigma_max

    inverted = invert(pack, smooth, steps=limit)
    comfy.model_management.load_models_gpu([smooth])
    with torch.inference_mode():
        clean = inner.process_latent_in(source()["samples"])
        noise = ddim_invert(smooth_denoiser, clean, sigmas.flip(0)) / sigmas[0]
        expected = inner.process_latent_out(ddim_sample(smooth_denoiser, noise * sigmas[0], sigmas))
    torch.testing.assert_close(inverted["samples"], noise, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(sample(pack, smooth, inverted, steps=limit)["samples"], expected, atol=1e-4, rtol=1e-4)

    message = f"steps must be between 1 and {limit}, got {limit + 1}"
    with pytest.raises(ValueError, match=message):
        invert(pack, smooth, steps=limit + 1)
    with pytest.raises(ValueError, match=message):
        sample(pack, smooth, inverted, steps=limit + 1)


def test_ddim_sampler_in_sampler_custom_is_ei2_sample_on_the_same_sigmas(pack):
    """EI2DDIMSampler's SAMPLER in SamplerCustom / SamplerCustomAdvanced gives EI2Sample's result for the same
    noise and seed, and both are the core DDIM driven straight through the model (η-noise from the seed)."""
    import comfy.model_management
    import comfy.sample
    from comfy_extras.nodes_custom_sampler import CFGGuider, RandomNoise, SamplerCustom, SamplerCustomAdvanced

    plain, seed, eta, steps = small_sd15_model(), 7, 0.5, 10
    positive, negative = random_conditioning(5), random_conditioning(6)
    empty = {"samples": torch.zeros(FRAMES, 4, 4, 4)}
    inner = plain.model
    sigmas = ddim_sigmas(inner.model_sampling.sigmas, steps).float()
    with torch.inference_mode():
        sampler = pack.NODE_CLASS_MAPPINGS["EI2DDIMSampler"]().get_sampler(eta)[0]
        custom = SamplerCustom().sample(plain, True, seed, 1.0, positive, negative, sampler, sigmas, empty)[0]["samples"]
        guider = CFGGuider().get_guider(plain, positive, negative, 1.0)[0]
        advanced = SamplerCustomAdvanced().sample(RandomNoise().get_noise(seed)[0], guider, sampler, sigmas, empty)[0]["samples"]
    torch.testing.assert_close(advanced, custom, atol=0, rtol=0)

    noise = comfy.sample.prepare_noise(empty["samples"], seed)  # the noise SamplerCustom draws from its seed
    inverted = {"samples": noise, "ei2_inversion": {"steps": steps, "frames": FRAMES}}
    ei2 = sample(pack, plain, inverted, steps=steps, cfg=1.0, eta=eta, seed=seed, positive=positive,
                 context_frames=FRAMES, context_overlap=1)["samples"]
    assert torch.equal(custom, ei2)  # one window holding the clip: the unwindowed sampler, bit for bit

    comfy.model_management.load_models_gpu([plain])
    context = positive[0][0].expand(FRAMES, -1, -1)
    options = {**plain.model_options.get("transformer_options", {}), "cond_or_uncond": [0]}

    def denoiser(x, sigma, **extra_args):  # cfg 1: the positive prompt alone
        return inner.apply_model(x, sigma, c_crossattn=context, transformer_options=dict(options))

    with torch.inference_mode():
        direct = inner.process_latent_out(ddim_sample(denoiser, noise * sigmas[0], sigmas, extra_args={"seed": seed}, eta=eta))
    torch.testing.assert_close(custom, direct, atol=1e-4, rtol=1e-4)
    with torch.inference_mode():
        deterministic = SamplerCustom().sample(plain, True, seed, 1.0, positive, negative,
                                               pack.NODE_CLASS_MAPPINGS["EI2DDIMSampler"]().get_sampler(0.0)[0], sigmas, empty)
    assert not torch.allclose(deterministic[0]["samples"], custom, atol=1e-3)  # η really adds noise


def test_bad_input(pack, video_model, caplog):
    with pytest.raises(ValueError, match="connect the LATENT output of EI2DDIMInvert"):
        sample(pack, video_model, source())
    with pytest.raises(ValueError, match=r"latent must hold the frames of one clip as \[frames, 4, h, w\]; got shape \(0, 4, 4, 4\)"):
        invert(pack, video_model, latent={"samples": torch.zeros(0, 4, 4, 4)})
    with pytest.raises(ValueError, match="steps must be between 1 and 250"):
        invert(pack, video_model, steps=0)
    inverted = invert(pack, video_model, steps=10)
    with caplog.at_level(logging.WARNING):
        mismatched = sample(pack, video_model, inverted, steps=5)["samples"]
    assert "sampling with 5 steps from a 10-step inversion" in caplog.text and torch.isfinite(mismatched).all()
    caplog.clear()
    longer = {"samples": torch.cat([source()["samples"]] * 2)}
    with caplog.at_level(logging.WARNING):
        edited = sample(pack, video_model, invert(pack, video_model, latent=longer), steps=10)["samples"]
    assert "tuned on 4 frames at a time and samples 8" in caplog.text and edited.shape[0] == 8
