"""EI2OneShotTune in-process on a real ComfyUI with a small SD1.x UNet."""
from __future__ import annotations

import copy

import pytest
import torch

from harness.checkpoint import random_conditioning, small_sd15_model
from harness.graphs import INFLATE_DEFAULTS

FRAMES = 4
TUNE = dict(steps=6, learning_rate=1e-3, train="temporal_and_queries", seed=0, gradient_checkpointing=True)


@pytest.fixture
def inflated(pack):
    with torch.inference_mode():
        return pack.NODE_CLASS_MAPPINGS["EI2InflateUNet"]().inflate(small_sd15_model(), **INFLATE_DEFAULTS)[0]


@pytest.fixture
def tuner(pack):
    return pack.NODE_CLASS_MAPPINGS["EI2OneShotTune"]()


def clip_latent(seed=1):
    # A smooth "video": one pattern drifting across frames, like real footage.
    base = torch.randn(1, 4, 6, 6, generator=torch.Generator().manual_seed(seed))
    return {"samples": torch.cat([torch.roll(base, shifts=i, dims=-1) for i in range(FRAMES)])[..., :4, :4]}


def run(tuner, model, latent=None, conditioning=None, **options):
    with torch.inference_mode():  # as ComfyUI runs nodes
        return tuner.tune(model, latent or clip_latent(), conditioning or random_conditioning(5), **{**TUNE, **options})


def temporal_state(pack, model):
    modules = pack.nodes.adapter.patching.temporal_modules(model)
    return {k: v.detach().clone() for k, v in modules.state_dict().items()}


def unet_state(model):
    return {k: v.detach().clone() for k, v in model.model.diffusion_model.state_dict().items()}


def assert_unet_clean(model):
    """No training leftovers on the shared UNet."""
    for name, module in model.model.diffusion_model.named_modules():
        # ComfyUI undoes an object-patched forward by setting the class's own method back on the instance.
        forward = module.__dict__.get("forward")
        assert forward is None or getattr(forward, "__func__", None) is type(module).forward, f"{name}: patched forward left"
        if hasattr(module, "weight_function"):
            assert module.weight_function == [] and module.bias_function == [], name
    for name, param in model.model.diffusion_model.named_parameters():
        assert param.grad is None, name


def test_registered_with_tooltips(pack):
    inputs = pack.NODE_CLASS_MAPPINGS["EI2OneShotTune"].INPUT_TYPES()["required"]
    assert list(inputs) == ["model", "latent", "conditioning", *TUNE]
    assert inputs["steps"][1]["default"] == 500 and inputs["learning_rate"][1]["default"] == 3e-5
    assert inputs["learning_rate"][1]["min"] > 0  # the core refuses lr <= 0: the widget must not offer it
    assert inputs["train"][1]["default"] == "temporal_and_queries" and inputs["gradient_checkpointing"][1]["default"]
    assert all(spec.get("tooltip") for _, spec in inputs.values())
    optional = pack.NODE_CLASS_MAPPINGS["EI2OneShotTune"].INPUT_TYPES()["optional"]
    assert optional["frames_per_step"][1]["default"] == 16 and optional["frame_stride"][1]["default"] == 1
    assert all(spec["min"] == 1 and spec.get("tooltip") for _, spec in optional.values())


def held_out_loss(model, latent, conditioning, draws=8) -> float:
    """ε-MSE of a MODEL on fixed (timestep, noise) draws: a noise-free measure of the fit."""
    import comfy.model_management

    comfy.model_management.load_models_gpu([model, *model.get_nested_additional_models()])
    generator = torch.Generator().manual_seed(1234)
    x0 = model.model.process_latent_in(latent["samples"])
    context = conditioning[0][0].expand(FRAMES, -1, -1)
    sigmas = model.model.model_sampling.sigmas
    total = 0.0
    with torch.inference_mode():
        for _ in range(draws):
            sigma = sigmas[torch.randint(len(sigmas), (1,), generator=generator)].expand(FRAMES)
            noise = torch.randn(x0.shape, generator=generator)
            x = x0 + noise * sigma.view(-1, 1, 1, 1)
            denoised = model.model.apply_model(x, sigma, c_crossattn=context, transformer_options={
                **model.model_options["transformer_options"], "cond_or_uncond": [0]})
            total += torch.nn.functional.mse_loss((x - denoised) / sigma.view(-1, 1, 1, 1), noise).item()
    return total / draws


def test_tuning_lowers_the_loss(tuner, inflated, pack):
    losses = {}
    original = pack.nodes.adapter.training.one_shot_tune

    def recording(*args, **kwargs):
        losses[kwargs["learning_rate"]] = original(*args, **kwargs)
        return losses[kwargs["learning_rate"]]

    conditioning = random_conditioning(5)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pack.nodes.adapter.training, "one_shot_tune", recording)
        tuned, plot = run(tuner, inflated, conditioning=conditioning, steps=20, learning_rate=3e-3)
        run(tuner, inflated, conditioning=conditioning, steps=20, learning_rate=1e-12)  # control: same draws, no learning
    tuned_losses, control = losses[3e-3], losses[1e-12]
    assert len(tuned_losses) == 20 and all(torch.isfinite(torch.tensor(tuned_losses)))
    # Same seed, same timestep/noise draws: any gap is learning, not the luck of the draw.
    assert sum(tuned_losses[-5:]) < sum(control[-5:])
    assert held_out_loss(tuned, clip_latent(), conditioning) < held_out_loss(inflated, clip_latent(), conditioning)
    assert plot.shape == (1, 256, 512, 3) and plot.min() >= 0 and plot.max() <= 1 and plot.std() > 0


def test_exactly_the_selected_parameters_change(tuner, inflated, pack):
    adapter = pack.nodes.adapter
    before_temporal, before_unet = temporal_state(pack, inflated), unet_state(inflated)
    query_keys = set(adapter.patching.query_weight_keys(inflated))
    assert len(query_keys) == 14  # attn1 + attn2 of the 7 transformer blocks

    for train, temporal_changes, patched in [("temporal_and_queries", True, query_keys),
                                             ("temporal", True, set()), ("queries", False, query_keys)]:
        tuned, _ = run(tuner, inflated, train=train)
        after = temporal_state(pack, tuned)
        changed = {k for k in after if not torch.equal(after[k], before_temporal[k])}
        assert changed == (set(after) if temporal_changes else set()), train
        # No gradient outlives the run, on trained or untrained (train=queries) modules alike.
        assert all(p.grad is None for p in adapter.patching.temporal_modules(tuned).parameters()), train
        assert set(tuned.patches) == patched, train
        for key in patched:
            assert tuned.patches[key][0][1][0].abs().max() > 0, key  # a real, non-zero delta
        # The shared UNet weights are never written.
        assert all(torch.equal(v, before_unet[k]) for k, v in unet_state(inflated).items())


def test_input_model_is_untouched_and_the_unet_left_clean(tuner, inflated, pack):
    before_temporal = temporal_state(pack, inflated)
    before_options, before_patches = copy.deepcopy(inflated.model_options), dict(inflated.patches)
    tuned, _ = run(tuner, inflated)
    assert pack.nodes.adapter.patching.temporal_modules(tuned) is not pack.nodes.adapter.patching.temporal_modules(inflated)
    assert all(torch.equal(v, before_temporal[k]) for k, v in temporal_state(pack, inflated).items())
    assert inflated.model_options == before_options and dict(inflated.patches) == before_patches
    assert_unet_clean(inflated)
    for param in pack.nodes.adapter.patching.temporal_modules(tuned).parameters():
        assert param.grad is None


def test_no_op_receives_a_resident_unet_weight_while_training(tuner, inflated, pack, monkeypatch):
    """Autograd must save explicit training copies, never the UNet's resident parameters (which ComfyUI
    may hold as inference tensors, cast without copying or stream in and out)."""
    import torch.nn.functional as F

    diffusion_model = inflated.model.diffusion_model
    checked = []

    def guarded(op):
        def run(*args, **kwargs):
            if torch.is_grad_enabled():
                resident = {p.untyped_storage().data_ptr() for p in diffusion_model.parameters()}
                tensors = [a for a in (*args[1:], *kwargs.values()) if isinstance(a, torch.Tensor)]
                checked.append(op.__name__)
                assert not any(t.untyped_storage().data_ptr() in resident for t in tensors), f"{op.__name__} got a resident weight"
            return op(*args, **kwargs)
        return run

    for name in ("linear", "conv2d", "layer_norm", "group_norm"):
        monkeypatch.setattr(F, name, guarded(getattr(F, name)))
    run(tuner, inflated, steps=2)
    assert {"linear", "conv2d", "layer_norm", "group_norm"} <= set(checked)  # every kind of UNet op was seen
    assert_unet_clean(inflated)


def test_vanilla_trains_what_tune_a_video_trains(tuner, pack):
    """Tune-A-Video's trainable modules match ``attn_temp``: the projections and output bias move, norm_temp not."""
    with torch.inference_mode():
        vanilla = pack.NODE_CLASS_MAPPINGS["EI2InflateUNet"]().inflate(
            small_sd15_model(), **{**INFLATE_DEFAULTS, "temporal_type": "vanilla"})[0]
    before = temporal_state(pack, vanilla)
    after = temporal_state(pack, run(tuner, vanilla, train="temporal")[0])
    changed = {k.split(".", 1)[1] for k in after if not torch.equal(after[k], before[k])}
    assert changed == {"to_q.weight", "to_k.weight", "to_v.weight", "to_out.weight", "to_out.bias"}


def test_tuned_spectral_clips_hold_from_the_first_sampling_step(tuner, inflated, pack):
    """Tuning ends by settling the norm estimates: the clipped weights' exact norms are ≤ 1 (to 1e-4)."""
    tuned, _ = run(tuner, inflated, learning_rate=3e-2)
    norms = [torch.linalg.matrix_norm(layer.clipped_weight().detach().double(), ord=2).item()
             for module in pack.nodes.adapter.patching.temporal_modules(tuned).values() for layer in (module.to_v, module.to_out)]
    assert max(norms) <= 1 + 1e-4
    assert max(norms) > 0.99  # the value maps sit at the clip: the check is not met by small weights


def test_same_seed_gives_bit_identical_weights_and_checkpointing_changes_nothing(tuner, inflated, pack):
    first, _ = run(tuner, inflated)
    second, _ = run(tuner, inflated)
    no_checkpointing, _ = run(tuner, inflated, gradient_checkpointing=False)
    other_seed, _ = run(tuner, inflated, seed=1)
    reference = temporal_state(pack, first)
    assert all(torch.equal(v, reference[k]) for k, v in temporal_state(pack, second).items())
    assert all(torch.equal(first.patches[k][0][1][0], second.patches[k][0][1][0]) for k in first.patches)
    assert all(torch.allclose(v, reference[k], atol=1e-6) for k, v in temporal_state(pack, no_checkpointing).items())
    assert not all(torch.equal(v, reference[k]) for k, v in temporal_state(pack, other_seed).items())


def test_tuned_model_samples_with_a_stock_sampler(comfyui, tuner, inflated):
    tuned, _ = run(tuner, inflated)
    with torch.inference_mode():
        out = comfyui.nodes.KSampler().sample(tuned, 0, 2, 7.0, "ddim", "ddim_uniform", random_conditioning(1),
                                              random_conditioning(2), clip_latent())[0]["samples"]
        plain = comfyui.nodes.KSampler().sample(inflated, 0, 2, 7.0, "ddim", "ddim_uniform", random_conditioning(1),
                                                random_conditioning(2), clip_latent())[0]["samples"]
    assert out.shape == (FRAMES, 4, 4, 4) and torch.isfinite(out).all()
    assert not torch.allclose(out, plain)  # the tuned weights are really used


def test_progress_reaches_the_total(tuner, inflated):
    import comfy.utils

    seen = []
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, **kwargs: seen.append((value, total)))
    try:
        run(tuner, inflated, steps=6)
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
    # Newer ComfyUI throttles the hook (first and last updates always arrive), so only the shape is asserted.
    assert seen[-1] == (6, 6) and [v for v, _ in seen] == sorted(v for v, _ in seen)


def test_cancel_stops_within_a_step_and_the_next_run_works(comfyui, tuner, inflated, pack, monkeypatch):
    import comfy.model_management

    training, done = pack.nodes.adapter.training, []
    original = training.one_shot_tune

    def cancelled_during_step_3(*args, on_step, **kwargs):
        def step(index, loss):
            done.append(index + 1)
            if index + 1 == 3:  # the user presses cancel while step 3 runs
                comfy.model_management.interrupt_current_processing(True)
            on_step(index, loss)
        return original(*args, on_step=step, **kwargs)

    monkeypatch.setattr(training, "one_shot_tune", cancelled_during_step_3)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            run(tuner, inflated, steps=50)
    finally:
        comfy.model_management.interrupt_current_processing(False)
    assert done == [1, 2, 3]
    assert_unet_clean(inflated)
    monkeypatch.setattr(training, "one_shot_tune", original)
    tuned, _ = run(tuner, inflated)
    assert tuned.patches


def test_repeated_runs_do_not_pile_up_loaded_models(comfyui, tuner, inflated):
    import comfy.model_management

    run(tuner, inflated)
    count = len(comfy.model_management.current_loaded_models)
    for _ in range(3):
        run(tuner, inflated)
    assert len(comfy.model_management.current_loaded_models) <= count


def test_zero_steps_returns_an_unchanged_clone(tuner, inflated, pack):
    tuned, plot = run(tuner, inflated, steps=0)
    assert tuned is not inflated and not tuned.patches
    assert pack.nodes.adapter.patching.temporal_modules(tuned) is pack.nodes.adapter.patching.temporal_modules(inflated)
    assert plot.shape == (1, 256, 512, 3)


def test_bad_input_is_refused_with_a_clear_message(tuner, inflated):
    with pytest.raises(ValueError, match="add EI2InflateUNet"):
        run(tuner, small_sd15_model())
    with pytest.raises(ValueError, match=r"latent must hold the frames of one clip .* got shape \(0, 4, 4, 4\)"):
        run(tuner, inflated, latent={"samples": torch.zeros(0, 4, 4, 4)})
    with pytest.raises(ValueError, match="learning_rate must be > 0"):
        run(tuner, inflated, learning_rate=0.0)
    with pytest.raises(ValueError, match="conditioning holds 2 prompts"):
        run(tuner, inflated, conditioning=random_conditioning(1) + random_conditioning(2))


def test_a_long_clip_is_tuned_a_window_at_a_time(tuner, inflated, pack, monkeypatch):
    training = pack.nodes.adapter.training
    core_tune, batches = training.one_shot_tune, []

    def recording(predict_eps, *args, **kwargs):
        return core_tune(lambda x, sigma: batches.append(x.shape[0]) or predict_eps(x, sigma), *args, **kwargs)

    monkeypatch.setattr(training, "one_shot_tune", recording)
    long_clip = {"samples": torch.cat([clip_latent(seed)["samples"] for seed in (1, 2, 3)])}  # 12 frames
    tuned, _ = run(tuner, inflated, latent=long_clip, frames_per_step=4, frame_stride=2)
    assert len(batches) == TUNE["steps"] and set(batches) == {4}  # the UNet never sees more than the window
    assert pack.nodes.adapter.tuned_state.tuned_frames(tuned) == 4
    batches.clear()
    run(tuner, inflated, latent=long_clip, frames_per_step=4, frame_stride=4)  # 12 frames hold 3 at stride 4
    assert set(batches) == {3}
    batches.clear()
    run(tuner, inflated)  # the node's default window (16) holds this 4-frame clip whole
    assert set(batches) == {FRAMES}


def test_nan_loss_stops_with_a_clear_error_and_corrupts_nothing(tuner, inflated, pack):
    before = temporal_state(pack, inflated)
    latent = clip_latent()
    latent["samples"] = latent["samples"].clone()
    latent["samples"][1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="Tuning stopped: the loss is nan at step 1. Lower learning_rate"):
        run(tuner, inflated, latent=latent)
    assert all(torch.equal(v, before[k]) for k, v in temporal_state(pack, inflated).items())
    assert_unet_clean(inflated)


def test_nothing_to_tune_is_explained(tuner, pack):
    with torch.inference_mode():
        bare = pack.NODE_CLASS_MAPPINGS["EI2InflateUNet"]().inflate(small_sd15_model(), **{**INFLATE_DEFAULTS, "temporal_type": "none"})[0]
    with pytest.raises(ValueError, match="Nothing to tune: train='temporal'"):
        run(tuner, bare, train="temporal")


def test_loss_scaling_follows_the_dtype_the_unet_computes_in(pack):
    """fp8-stored weights compute in ComfyUI's manual-cast dtype: fp16 there needs loss scaling, bf16 does not."""
    from types import SimpleNamespace

    needs = pack.nodes.adapter.training.needs_loss_scaling

    def model(stored, computed=None):
        return SimpleNamespace(get_dtype=lambda: stored, manual_cast_dtype=computed)

    assert needs(model(torch.float8_e4m3fn, torch.float16), "cuda")
    assert not needs(model(torch.float8_e4m3fn, torch.bfloat16), "cuda")
    assert needs(model(torch.float16), torch.device("cuda", 0))
    assert not needs(model(torch.float32), "cuda") and not needs(model(torch.bfloat16), "cuda")
    assert not needs(model(torch.float16), "cpu")  # no CUDA, no GradScaler
