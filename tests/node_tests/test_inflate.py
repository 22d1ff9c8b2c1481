"""EI2InflateUNet in-process on a real ComfyUI: stock samplers, non-destruction, frame semantics, bad input."""
from __future__ import annotations

import contextlib
import copy
import hashlib
from collections import Counter

import pytest
import torch

from harness.checkpoint import TINY_UNET, random_conditioning, sd15_model, small_sd15_model
from harness.graphs import INFLATE_DEFAULTS

FRAMES = 4
# The small UNet's transformer blocks, as block_name() names them.
BLOCKS = ("input_1_0", "input_3_0", "middle_0_0", "output_0_0", "output_1_0", "output_2_0", "output_3_0")


@pytest.fixture
def model(comfyui):
    return small_sd15_model()


@pytest.fixture
def node(pack):
    return pack.NODE_CLASS_MAPPINGS["EI2InflateUNet"]()


def inflate(node, model, **options):
    with torch.inference_mode():
        return node.inflate(model, **{**INFLATE_DEFAULTS, **options})[0]


def latent_of(frames=FRAMES, seed=1, size=32):
    return {"samples": torch.randn(frames, 4, size // 8, size // 8, generator=torch.Generator().manual_seed(seed))}


def ksample(comfyui, model, latent, positive=None, negative=None, steps=2, cfg=7.0, denoise=1.0):
    positive = positive or random_conditioning(10)
    negative = negative or random_conditioning(11)
    with torch.inference_mode():
        return comfyui.nodes.KSampler().sample(model, 0, steps, cfg, "ddim", "ddim_uniform", positive, negative,
                                             latent, denoise=denoise)[0]["samples"]


def record_predictions(model):
    """A clone whose UNet outputs are recorded per call as {cond_or_uncond index: (F, 4, h, w)}."""
    calls = []

    def wrapper(apply_model, args):
        out = apply_model(args["input"], args["timestep"], **args["c"])
        chunks = out.chunk(len(args["cond_or_uncond"]))
        calls.append({kind: chunk.clone() for kind, chunk in zip(args["cond_or_uncond"], chunks)})
        return out

    recorder = model.clone()
    recorder.set_model_unet_function_wrapper(wrapper)
    return recorder, calls


def record_batches(model):
    """A clone that records each UNet call's ``cond_or_uncond`` (which conds its batch holds, in order)."""
    batches = []

    def wrapper(apply_model, args):
        batches.append(list(args["cond_or_uncond"]))
        return apply_model(args["input"], args["timestep"], **args["c"])

    recorder = model.clone()
    recorder.set_model_unet_function_wrapper(wrapper)
    return recorder, batches


@contextlib.contextmanager
def ei2_calls(pack, model):
    """Record every frame-attention call as (frames, batch) and every temporal-module call as (block, frames, batch)."""
    patching = pack.nodes.adapter.patching
    calls = {"frame_attention": [], "temporal": []}
    original = patching.frame_attention

    def frame_attention(q, k, v, *, frames, **options):
        calls["frame_attention"].append((frames, q.shape[0]))
        return original(q, k, v, frames=frames, **options)

    def temporal_hook(name):
        return lambda module, args: calls["temporal"].append((name, args[1], args[0].shape[0]))

    modules = patching.temporal_modules(model) or {}
    hooks = [module.register_forward_pre_hook(temporal_hook(name)) for name, module in modules.items()]
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(patching, "frame_attention", frame_attention)  # the attn1 patch looks it up per call
            yield calls
    finally:
        for hook in hooks:
            hook.remove()


def assert_ran_at_every_block(calls, evaluations, frames, batch, attention=True, temporal=True):
    """Frame attention and the temporal modules ran once per block and UNet evaluation, each on clips of ``frames``."""
    assert evaluations > 0
    assert calls["frame_attention"] == ([(frames, batch)] * len(BLOCKS) * evaluations if attention else [])
    assert Counter(name for name, _, _ in calls["temporal"]) == (Counter(BLOCKS * evaluations) if temporal else Counter())
    assert all((seen, size) == (frames, batch) for _, seen, size in calls["temporal"])


def fingerprint(model) -> str:
    digest = hashlib.sha256()
    for key, value in sorted(model.model.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def test_registered_with_tooltips(pack):
    cls = pack.NODE_CLASS_MAPPINGS["EI2InflateUNet"]
    inputs = cls.INPUT_TYPES()["required"]
    assert list(inputs) == ["model", *INFLATE_DEFAULTS]
    for name, (kind, spec) in inputs.items():
        assert spec.get("tooltip"), f"{name} has no tooltip"
        if name in INFLATE_DEFAULTS:
            assert spec["default"] == INFLATE_DEFAULTS[name]
    assert pack.NODE_DISPLAY_NAME_MAPPINGS["EI2InflateUNet"]


@pytest.mark.parametrize("attention_type", ["ffam", "sparse_causal", "full", "per_frame"])
@pytest.mark.parametrize("temporal_type", ["stam", "vanilla", "none"])
def test_stock_ksampler_samples_the_inflated_model(comfyui, pack, node, model, attention_type, temporal_type):
    inflated = inflate(node, model, attention_type=attention_type, temporal_type=temporal_type)
    recorder, batches = record_batches(inflated)
    with ei2_calls(pack, inflated) as calls:
        samples = ksample(comfyui, recorder, latent_of())
    assert samples.shape == (FRAMES, 4, 4, 4) and torch.isfinite(samples).all()
    assert len(batches) == 2 and all(sorted(batch) == [0, 1] for batch in batches)  # 2 steps, cond + uncond
    # per_frame is the image model's own attention: no patch; "none" has no temporal modules.
    assert_ran_at_every_block(calls, len(batches), FRAMES, 2 * FRAMES, attention=attention_type != "per_frame",
                              temporal=temporal_type != "none")
    # STAM starts as the identity; vanilla's output bias and every cross-frame attention change the image model.
    image = ksample(comfyui, model, latent_of())
    if attention_type != "per_frame" or temporal_type == "vanilla":
        assert not torch.allclose(samples, image)
    else:
        assert torch.equal(samples, image)


def test_samplers_custom_and_advanced_and_one_frame(comfyui, pack, node, model):
    from comfy_extras.nodes_custom_sampler import BasicScheduler, KSamplerSelect, SamplerCustom

    inflated = inflate(node, model)
    recorder, batches = record_batches(inflated)
    with torch.inference_mode(), ei2_calls(pack, inflated) as calls:
        advanced = comfyui.nodes.KSamplerAdvanced().sample(
            recorder, "enable", 0, 2, 5.0, "euler", "normal", random_conditioning(1), random_conditioning(2),
            latent_of(), 0, 2, "disable")[0]["samples"]
    assert torch.isfinite(advanced).all()
    assert_ran_at_every_block(calls, len(batches), FRAMES, 2 * FRAMES)

    recorder, batches = record_batches(inflated)
    with torch.inference_mode(), ei2_calls(pack, inflated) as calls:
        sigmas = BasicScheduler().get_sigmas(recorder, "normal", 2, 1.0)[0]
        sampler = KSamplerSelect().get_sampler("euler")[0]
        custom = SamplerCustom().sample(recorder, True, 0, 5.0, random_conditioning(1), random_conditioning(2),
                                        sampler, sigmas, latent_of())[0]["samples"]
    assert torch.isfinite(custom).all()
    assert_ran_at_every_block(calls, len(batches), FRAMES, 2 * FRAMES)

    recorder, batches = record_batches(inflated)
    with ei2_calls(pack, inflated) as calls:
        single = ksample(comfyui, recorder, latent_of(frames=1))
    assert single.shape == (1, 4, 4, 4) and torch.isfinite(single).all()
    assert_ran_at_every_block(calls, len(batches), 1, 2)


def open_output_maps(modules, scale=0.5):
    """Give the zero-initialised temporal output maps random weights, as tuning would."""
    with torch.inference_mode(False), torch.no_grad():
        for module in modules.values():
            module.to_out.weight.copy_(scale * torch.randn_like(module.to_out.weight) / module.to_out.weight.shape[1] ** 0.5)


@pytest.mark.parametrize("placement", ["after_feedforward", "after_self_attention"])
def test_input_model_is_untouched(comfyui, pack, node, model, placement):
    before_hash = fingerprint(model)
    before_options = copy.deepcopy(model.model_options)
    before_patches = {k: list(v) for k, v in model.patches.items()}
    before_sample = ksample(comfyui, model, latent_of())

    inflated = inflate(node, model, attention_type="per_frame", temporal_type="stam", temporal_placement=placement)
    open_output_maps(pack.nodes.adapter.patching.temporal_modules(inflated))
    # Sample the output too: loading it must not leak into the input (its temporal modules really run).
    assert not torch.allclose(ksample(comfyui, inflated, latent_of()), before_sample)

    assert fingerprint(model) == before_hash
    assert model.model_options == before_options
    assert {k: list(v) for k, v in model.patches.items()} == before_patches
    assert not model.get_additional_models()
    assert torch.equal(ksample(comfyui, model, latent_of()), before_sample)


@pytest.mark.parametrize("placement", ["after_feedforward", "after_self_attention"])
def test_temporal_module_runs_where_it_is_placed(comfyui, pack, node, model, placement):
    """after_feedforward: on the block's output (Tune-A-Video); after_self_attention: before cross-attention."""
    adapter = pack.nodes.adapter
    inflated = inflate(node, model, temporal_placement=placement)
    modules = adapter.patching.temporal_modules(inflated)
    open_output_maps(modules)
    _, block = adapter.patching.named_transformer_blocks(inflated)["input_1_0"]
    seen = {}

    def keep(key, value):  # returns None: the hooks change nothing
        seen[key] = value.detach().clone()

    def keep_temporal(module, args, out):
        keep("in", args[0])
        keep("out", out)

    hooks = [modules["input_1_0"].register_forward_hook(keep_temporal),
             block.norm2.register_forward_pre_hook(lambda m, args: keep("norm2_in", args[0])),
             block.norm3.register_forward_pre_hook(lambda m, args: keep("norm3_in", args[0])),
             block.ff.register_forward_hook(lambda m, args, out: keep("ff_out", out))]
    try:
        ksample(comfyui, inflated, latent_of(), steps=1)
    finally:
        for hook in hooks:
            hook.remove()
    assert not torch.allclose(seen["in"], seen["out"])  # the module did something, so its place matters
    if placement == "after_feedforward":
        assert torch.equal(seen["in"], seen["norm3_in"] + seen["ff_out"])  # the block's own output
    else:
        assert torch.equal(seen["out"], seen["norm2_in"])  # cross-attention sees the temporal module's output


@pytest.mark.parametrize("attention_type", ["ffam", "sparse_causal", "full"])
def test_frame_attention_runs_on_the_users_comfyui_attention_backend(comfyui, pack, node, model, monkeypatch,
                                                                     attention_type):
    """Inside ComfyUI the frame attention goes through ``optimized_attention`` (the backend picked at launch);
    on this CPU that is PyTorch's SDPA, so the result equals the core's own SDPA path."""
    import comfy.ldm.modules.attention as comfy_attention

    inflated = inflate(node, model, attention_type=attention_type, temporal_type="none")
    with monkeypatch.context() as patch:
        patch.setattr(pack.nodes.adapter.patching, "comfyui_attention", lambda extra_options: None)  # the core's SDPA
        core = ksample(comfyui, inflated, latent_of())
    shapes = []
    original = comfy_attention.optimized_attention

    def recording(q, k, v, heads, *args, **kwargs):
        shapes.append((q.shape[1], k.shape[1]))
        return original(q, k, v, heads, *args, **kwargs)

    monkeypatch.setattr(comfy_attention, "optimized_attention", recording)
    through_comfyui = ksample(comfyui, inflated, latent_of())
    # Cross-attention (attn2) always has the prompt's 77 keys; any other key set is the frame attention's.
    assert any(keys != 77 for _, keys in shapes)
    torch.testing.assert_close(through_comfyui, core, atol=1e-5, rtol=1e-5)


def test_stam_at_init_with_per_frame_equals_the_image_model(comfyui, node, model):
    image = ksample(comfyui, model, latent_of())
    video = ksample(comfyui, inflate(node, model, attention_type="per_frame", temporal_type="stam"), latent_of())
    assert torch.equal(video, image)


def test_ffam_lets_frame_3_change_frame_0(comfyui, node, model):
    changed = latent_of()
    changed["samples"] = changed["samples"].clone()
    changed["samples"][3] += 1.0

    def frame0_prediction(candidate, latent):
        recorder, calls = record_predictions(candidate)
        ksample(comfyui, recorder, latent, steps=1)
        return calls[0][0][0]  # first call, cond chunk, frame 0

    ffam = inflate(node, model, attention_type="ffam")
    assert not torch.allclose(frame0_prediction(ffam, latent_of()), frame0_prediction(ffam, changed))
    # Control: without cross-frame attention the frames are independent.
    image_like = inflate(node, model, attention_type="per_frame", temporal_type="none")
    assert torch.equal(frame0_prediction(image_like, latent_of()), frame0_prediction(image_like, changed))


def test_cond_and_uncond_halves_never_attend_to_each_other(comfyui, node, model):
    inflated = inflate(node, model, attention_type="full", temporal_type="vanilla")
    with torch.inference_mode(False), torch.no_grad():  # move the vanilla modules off their no-op init
        for param in inflated.get_additional_models()[0].model.parameters():
            param.add_(0.05 * torch.randn_like(param))

    def cond_prediction(negative):
        recorder, calls = record_predictions(inflated)
        ksample(comfyui, recorder, latent_of(), negative=negative, steps=1)
        assert set(calls[0]) == {0, 1}, "expected cond and uncond in one batch"
        return calls[0][0]

    first, second = cond_prediction(random_conditioning(11)), cond_prediction(random_conditioning(99))
    assert torch.equal(first, second)


@pytest.mark.parametrize("placement", ["after_feedforward", "after_self_attention"])
def test_several_conds_batched_together_or_one_by_one_give_the_same_clip(comfyui, pack, node, model, monkeypatch,
                                                                        placement):
    """Two combined prompts plus the negative make three clips per UNet evaluation (cond_or_uncond [0, 0, 1]).
    ComfyUI batches them together when memory allows and one by one when it does not: every frame attention and
    temporal call must see one clip of F frames either way, and the edit must not depend on the batching."""
    import comfy.model_management

    inflated = inflate(node, model, temporal_placement=placement)  # ffam: the frames of a clip see each other
    open_output_maps(pack.nodes.adapter.patching.temporal_modules(inflated))
    positive = comfyui.nodes.ConditioningCombine().combine(random_conditioning(10), random_conditioning(12))[0]

    def sample():
        recorder, batches = record_batches(inflated)
        with ei2_calls(pack, inflated) as calls:
            samples = ksample(comfyui, recorder, latent_of(), positive=positive)
        return samples, batches, calls

    together, batches, calls = sample()
    assert len(batches) == 2 and all(sorted(batch) == [0, 0, 1] for batch in batches)  # 2 steps, 3 clips each
    assert_ran_at_every_block(calls, len(batches), FRAMES, 3 * FRAMES)

    # No free memory: ComfyUI's batching then falls back to one cond per UNet call.
    monkeypatch.setattr(comfy.model_management, "get_free_memory", lambda *args, **kwargs: 0)
    one_by_one, batches, calls = sample()
    assert sorted(map(tuple, batches)) == [(0,)] * 4 + [(1,)] * 2  # 2 steps × (2 prompts + the negative)
    assert_ran_at_every_block(calls, len(batches), FRAMES, FRAMES)

    torch.testing.assert_close(one_by_one, together, atol=1e-4, rtol=1e-4)
    # The comparison can fail: the second prompt is really sampled.
    assert not torch.allclose(ksample(comfyui, inflated, latent_of()), together, atol=1e-2)


def test_lora_before_and_after_inflation(comfyui, node, model):
    import comfy.sd

    key = "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q"
    lora = {f"{key}.lora_up.weight": torch.randn(32, 4), f"{key}.lora_down.weight": torch.randn(4, 32)}
    with torch.inference_mode():
        before = inflate(node, comfy.sd.load_lora_for_models(model, None, lora, 1.0, 0)[0])
        after = comfy.sd.load_lora_for_models(inflate(node, model), None, lora, 1.0, 0)[0]
    plain = ksample(comfyui, inflate(node, model), latent_of())
    with_before, with_after = ksample(comfyui, before, latent_of()), ksample(comfyui, after, latent_of())
    assert not torch.allclose(with_before, plain)
    assert torch.allclose(with_before, with_after, atol=1e-5)


def test_temporal_modules_are_fp32_named_and_managed(comfyui, pack, node, model):
    from comfy.ldm.modules.attention import BasicTransformerBlock

    adapter = pack.nodes.adapter
    inflated = inflate(node, model, temporal_type="stam", seed=3)
    modules = adapter.patching.temporal_modules(inflated)
    blocks = [m for m in model.model.diffusion_model.modules() if isinstance(m, BasicTransformerBlock)]
    assert len(modules) == len(blocks)
    assert set(modules) == {"input_1_0", "input_3_0", "middle_0_0", "output_0_0", "output_1_0", "output_2_0", "output_3_0"}
    for param in modules.parameters():
        assert param.dtype == torch.float32 and param.requires_grad and not param.is_inference()
    assert inflated.get_additional_models()[0].model is modules  # loaded/offloaded with the UNet
    same_seed = adapter.patching.temporal_modules(inflate(node, model, temporal_type="stam", seed=3))
    other_seed = adapter.patching.temporal_modules(inflate(node, model, temporal_type="stam", seed=4))
    flat = lambda m: torch.cat([p.flatten() for p in m.parameters()])  # noqa: E731
    assert torch.equal(flat(modules), flat(same_seed))
    assert not torch.equal(flat(modules), flat(other_seed))


def predicted_noise(comfyui, model):
    """σ·ε of a one-step sample's UNet evaluation (x - denoised: what the UNet computes, without the input x)."""
    predicted = []

    def wrapper(apply_model, args):
        denoised = apply_model(args["input"], args["timestep"], **args["c"])
        predicted.append(args["input"] - denoised)
        return denoised

    recorder = model.clone()
    recorder.set_model_unet_function_wrapper(wrapper)
    ksample(comfyui, recorder, latent_of(), steps=1)
    [only] = predicted
    return only


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_unet_runs_close_to_fp32_with_fp32_temporal_modules(comfyui, pack, node, dtype):
    """A UNet whose weights and compute are half precision (ComfyUI without manual cast, as on a GPU that runs it)
    feeds its half features to fp32 temporal modules, which compute in fp32 and hand back the UNet's dtype."""
    temporal_modules = pack.nodes.adapter.patching.temporal_modules
    half_model = sd15_model({**TINY_UNET, "model_channels": 32}, dtype=dtype)  # small_sd15_model's weights, rounded
    assert half_model.model.get_dtype() == dtype and half_model.model.manual_cast_dtype is None
    full, half = inflate(node, small_sd15_model()), inflate(node, half_model)
    open_output_maps(temporal_modules(full))
    with torch.inference_mode(False), torch.no_grad():
        temporal_modules(half).load_state_dict(temporal_modules(full).state_dict())
    module = temporal_modules(half)["input_1_0"]
    seen = {}
    hooks = [module.register_forward_hook(lambda m, args, out: seen.update(features=args[0].dtype, out=out.dtype)),
             module.to_q.register_forward_pre_hook(lambda m, args: seen.update(compute=args[0].dtype))]
    try:
        with ei2_calls(pack, half) as calls:
            predicted = predicted_noise(comfyui, half)
    finally:
        for hook in hooks:
            hook.remove()
    assert_ran_at_every_block(calls, 1, FRAMES, 2 * FRAMES)
    assert seen == {"features": dtype, "compute": torch.float32, "out": dtype}
    assert all(p.dtype == torch.float32 for p in temporal_modules(half).parameters())
    assert torch.isfinite(predicted).all()

    reference = predicted_noise(comfyui, full)
    error = ((predicted - reference).norm() / reference.norm()).item()
    # Rounding grows through the UNet's layers: measured ~6 units of the dtype's precision, allowed 16.
    assert error < 16 * torch.finfo(dtype).eps
    effect = ((predicted_noise(comfyui, small_sd15_model()) - reference).norm() / reference.norm()).item()
    assert effect > 2 * error  # the comparison is not swamped by rounding: inflating changes more than that


@pytest.mark.parametrize("config_name", ["SDXL", "SD20", "SD3", "Flux"])
def test_rejects_non_sd1_models(comfyui, node, config_name):
    import comfy.model_patcher
    import comfy.supported_models

    class Foreign(torch.nn.Module):  # stands in for the real (large) model; only its config is read
        def __init__(self):
            super().__init__()
            self.model_config = getattr(comfy.supported_models, config_name)({})
            self.diffusion_model = torch.nn.Identity()

    foreign = comfy.model_patcher.ModelPatcher(Foreign(), torch.device("cpu"), torch.device("cpu"))
    with pytest.raises(ValueError, match=rf"Stable Diffusion 1\.x models only; this MODEL is {config_name}\b"):
        inflate(node, foreign)
    assert not foreign.model_options["transformer_options"] and not foreign.get_additional_models()


@pytest.mark.parametrize("in_channels", [9, 8])  # SD 1.x inpainting, InstructPix2Pix
def test_rejects_sd1_models_that_take_an_image_input(comfyui, node, in_channels):
    model = small_sd15_model(in_channels=in_channels)
    with pytest.raises(ValueError, match=rf"text-to-image models only; this MODEL is SD15 with {in_channels} input channels"):
        inflate(node, model)
    assert not model.model_options["transformer_options"] and not model.get_additional_models()


def test_rejects_an_already_inflated_model(node, model):
    inflated = inflate(node, model)
    options = copy.deepcopy(inflated.model_options)
    with pytest.raises(ValueError, match="already inflated"):
        inflate(node, inflated)
    assert inflated.model_options == options


def test_bad_options_are_refused_before_patching(node, model):
    with pytest.raises(ValueError, match="attention_type='sparse' is not supported; choose one of ffam"):
        inflate(node, model, attention_type="sparse")
    with pytest.raises(ValueError, match="coarse_stride must be at least 1"):
        inflate(node, model, coarse_stride=0)
    assert not model.model_options["transformer_options"]


def test_batch_that_does_not_split_into_clips_is_a_clear_error(pack):
    with pytest.raises(ValueError, match="a batch of 7 latents does not split into 2 equal clips"):
        pack.nodes.adapter.patching.frames_in(7, {"cond_or_uncond": [1, 0]})
    assert pack.nodes.adapter.patching.frames_in(8, {"cond_or_uncond": [1, 0]}) == 4
    assert pack.nodes.adapter.patching.frames_in(3, {}) == 3  # direct calls without a sampler: one clip
