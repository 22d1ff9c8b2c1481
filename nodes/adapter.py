"""The one module that knows ComfyUI's UNet internals: it patches an SD 1.x MODEL into an EI² video model.

How the patch works (nothing in the shared UNet module is replaced or mutated):
- spatial self-attention: an ``attn1`` replace patch per transformer block hands the projected
  q, k, v to :func:`ei2.ffam.frame_attention`;
- temporal attention, ``temporal_placement="after_feedforward"`` (Tune-A-Video's place, default):
  an object patch on the clone replaces each transformer block's ``forward`` by one that runs the
  block, then its temporal module. ComfyUI sets object patches on the shared UNet only while this
  MODEL is loaded and restores the original before any other clone runs.
  ``"after_self_attention"``: a ``middle_patch`` (called right after each block's self-attention
  residual, before cross-attention) runs it instead;
- the temporal modules are ordinary fp32 ``nn.Module``s in their own ModelPatcher, attached with
  ``set_additional_models`` so ComfyUI loads and offloads them together with the UNet.

Frames: ComfyUI batches ``[chunk for each entry of cond_or_uncond]`` and every chunk holds the F
frames of the clip, so F = batch // len(cond_or_uncond); chunks (cond / uncond) never mix.
"""
from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
import torch.utils.checkpoint

from ..ei2.ddim import ddim_invert, ddim_sample, ddim_sigmas
from ..ei2.ffam import ATTENTION_TYPES, COARSE_TYPES, frame_attention
from ..ei2.spectral import settle
from ..ei2.stam import CENTERING_TYPES, MAPPING_TYPES
from ..ei2.temporal import TEMPORAL_TYPES, make_temporal
from ..ei2.tuning import TRAIN_SETS, one_shot_tune

OPTIONS_KEY = "ei2_inflation"  # in model_options: marks an inflated MODEL and records how
TUNED_KEY = "ei2_tuned"  # in model_options: the TunedQueries of a tuned MODEL
# Version 2: clipped STAM with its norm estimates, Tune-A-Video's vanilla init, temporal_placement.
TUNED_FORMAT = "2"
ADDITIONAL_MODELS_KEY = "ei2_temporal"
TEMPORAL_PLACEMENTS = ("after_feedforward", "after_self_attention")


@dataclass(frozen=True)
class InflateOptions:
    attention_type: str = "ffam"
    coarse_stride: int = 2
    coarse_type: str = "avg"
    temporal_type: str = "stam"
    temporal_placement: str = "after_feedforward"
    centering_type: str = "frames"
    mapping_type: str = "spectral"
    seed: int = 0

    def __post_init__(self):
        for name, allowed in (("attention_type", ATTENTION_TYPES), ("coarse_type", COARSE_TYPES),
                              ("temporal_type", TEMPORAL_TYPES), ("temporal_placement", TEMPORAL_PLACEMENTS),
                              ("centering_type", CENTERING_TYPES),
                              ("mapping_type", MAPPING_TYPES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r} is not supported; choose one of {', '.join(allowed)}.")
        if self.coarse_stride < 1:
            raise ValueError(f"coarse_stride must be at least 1, got {self.coarse_stride}.")


def block_name(block: tuple, index: int) -> str:
    """Stable name of a UNet transformer block, e.g. ``input_1_0`` (stage, block number, depth index)."""
    return f"{block[0]}_{block[1]}_{index}"


def transformer_blocks(diffusion_model):
    """``(stage, number, index), BasicTransformerBlock`` for every transformer block of the UNet."""
    from comfy.ldm.modules.attention import SpatialTransformer

    stages = (("input", diffusion_model.input_blocks), ("middle", [diffusion_model.middle_block]),
              ("output", diffusion_model.output_blocks))
    for stage, blocks in stages:
        for number, block in enumerate(blocks):
            for layer in block:
                if isinstance(layer, SpatialTransformer):
                    for index, transformer_block in enumerate(layer.transformer_blocks):
                        yield (stage, number, index), transformer_block


def named_transformer_blocks(model) -> dict:
    """``block_name -> (attribute path from model.model, BasicTransformerBlock)`` for every transformer block."""
    diffusion_model = model.model.diffusion_model
    paths = {id(module): f"diffusion_model.{path}" for path, module in diffusion_model.named_modules()}
    return {block_name(block[:2], block[2]): (paths[id(module)], module)
            for block, module in transformer_blocks(diffusion_model)}


def frames_in(batch: int, extra_options: dict) -> int:
    """Frames per clip: the sampler stacks one chunk of F frames per cond/uncond entry."""
    clips = len(extra_options.get("cond_or_uncond") or [0])
    if batch % clips:
        raise ValueError(
            f"EI² video model: a batch of {batch} latents does not split into {clips} equal clips "
            f"(one per cond/uncond entry). Give the sampler one LATENT batch holding the frames of one clip."
        )
    return batch // clips


def check_supported(model) -> None:
    """Refuse anything but an SD 1.x UNet, and an already inflated MODEL, before touching anything."""
    import comfy.supported_models
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    config = getattr(model.model, "model_config", None)
    found = type(config).__name__ if config is not None else type(model.model).__name__
    if not isinstance(config, comfy.supported_models.SD15) or not isinstance(model.model.diffusion_model, UNetModel):
        raise ValueError(
            f"EI2InflateUNet supports Stable Diffusion 1.x models only; this MODEL is {found}. "
            "Load an SD 1.x checkpoint (SD 1.4/1.5 or a fine-tune of it) with CheckpointLoaderSimple."
        )
    if OPTIONS_KEY in model.model_options:
        raise ValueError(
            f"This MODEL is already inflated ({inflation_options(model)}). "
            "Connect the original MODEL from the checkpoint loader to EI2InflateUNet instead."
        )


def inflation_options(model) -> InflateOptions | None:
    stored = model.model_options.get(OPTIONS_KEY)
    return InflateOptions(**stored) if stored is not None else None


def build_temporal_modules(model, options: InflateOptions) -> torch.nn.ModuleDict:
    """Fresh fp32 temporal modules, one per transformer block, seeded; real tensors even under inference mode."""
    modules = torch.nn.ModuleDict()
    with torch.inference_mode(False), torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.seed)
        stam_options = {}
        if options.temporal_type == "stam":
            stam_options = dict(centering_type=options.centering_type, mapping_type=options.mapping_type)
        for name, (_, transformer_block) in named_transformer_blocks(model).items():
            channels = transformer_block.n_heads * transformer_block.d_head
            module = make_temporal(options.temporal_type, channels, transformer_block.n_heads, **stam_options)
            if module is not None:
                modules[name] = module.float()
    return modules


def inflate(model, options: InflateOptions):
    """A clone of ``model`` that edits video: frame attention + temporal modules. ``model`` is not touched."""
    check_supported(model)
    modules = build_temporal_modules(model, options)  # may raise: done before anything is patched
    inflated = model.clone()

    if options.attention_type != "per_frame":  # per_frame is the image model's own attention
        def attn1(q, k, v, extra_options):
            height, width = extra_options["activations_shape"][-2:]
            return frame_attention(
                q, k, v, frames=frames_in(q.shape[0], extra_options), heads=extra_options["n_heads"],
                size=(height, width), attention_type=options.attention_type,
                coarse_stride=options.coarse_stride, coarse_type=options.coarse_type,
                attention=_comfyui_attention(extra_options),
            )

        for (stage, number, index), _ in transformer_blocks(model.model.diffusion_model):
            inflated.set_model_attn1_replace(attn1, stage, number, index)

    inflated.model_options[OPTIONS_KEY] = asdict(options)
    attach_temporal_modules(inflated, modules)
    return inflated


def _comfyui_attention(extra_options: dict):
    """The attention backend the user chose in ComfyUI (pytorch, xformers, sage, flash, split …), per call.

    Looked up when called, so launch flags and attention-override patches apply; ``extra_options``
    carries the transformer options (and the block's attention precision) that backend may read.
    """
    import comfy.ldm.modules.attention

    def attention(q, k, v, heads):
        return comfy.ldm.modules.attention.optimized_attention(
            q, k, v, heads, attn_precision=extra_options.get("attn_precision"), transformer_options=extra_options)

    return attention


def attach_temporal_modules(model, modules: torch.nn.ModuleDict) -> None:
    """Run ``modules`` at the inflation's ``temporal_placement``; ComfyUI loads/offloads them with the UNet."""
    import comfy.model_patcher

    if len(modules) == 0:
        return
    if inflation_options(model).temporal_placement == "after_feedforward":
        # Replacing modules (e.g. after tuning) replaces these object patches: one key per block.
        for name, (path, block) in named_transformer_blocks(model).items():
            if name in modules:
                model.add_object_patch(f"{path}.forward", _block_then_temporal(block, modules[name]))
    else:
        # A closure, not a callable object: ComfyUI deep-copies model_options on clone and would copy a module.
        def temporal(hidden, extra_options):
            name = block_name(extra_options["block"], extra_options.get("block_index", 0))
            if name not in modules:
                return hidden
            return modules[name](hidden, frames_in(hidden.shape[0], extra_options))

        temporal.ei2_temporal = True
        patches = model.model_options["transformer_options"].setdefault("patches", {})
        # Replacing modules (e.g. after tuning) must not leave the old ones running too.
        patches["middle_patch"] = [p for p in patches.get("middle_patch", []) if not getattr(p, "ei2_temporal", False)]
        model.set_model_patch(temporal, "middle_patch")
    patcher = comfy.model_patcher.ModelPatcher(modules, load_device=model.load_device, offload_device=model.offload_device)
    model.set_additional_models(ADDITIONAL_MODELS_KEY, [patcher])


def _block_then_temporal(block, module):
    """A ``forward`` for ``block``: the block's own computation (through its feed-forward), then ``module``."""
    own_forward = type(block).forward

    def forward(x, *args, **kwargs):
        x = own_forward(block, x, *args, **kwargs)
        options = kwargs.get("transformer_options", args[1] if len(args) > 1 else None)
        return module(x, frames_in(x.shape[0], options or {}))

    return forward


def temporal_modules(model) -> torch.nn.ModuleDict | None:
    """The temporal modules of an inflated MODEL, keyed by :func:`block_name`."""
    patchers = model.get_additional_models_with_key(ADDITIONAL_MODELS_KEY)
    return patchers[0].model if patchers else None


def _copy_of_temporal_modules(model) -> torch.nn.ModuleDict:
    """A private copy to change (tune, load into) without touching the modules ``model`` shares."""
    modules = temporal_modules(model)
    return copy.deepcopy(modules) if modules is not None else torch.nn.ModuleDict()


# --- one-shot tuning -----------------------------------------------------------------------------

def query_weight_keys(model) -> list[str]:
    """ModelPatcher keys of the attn1/attn2 query projections (Tune-A-Video tunes these)."""
    return [name for name, _ in model.model.named_parameters()
            if ".transformer_blocks." in name and name.endswith((".attn1.to_q.weight", ".attn2.to_q.weight"))]


def _use_training_copies(trainer, deltas: dict[str, torch.Tensor]) -> list:
    """Hand every UNet op an explicit copy of its weight, made for training (plus its query delta).

    Autograd then saves only these copies, never the resident parameters, however ComfyUI holds
    them: inference tensors (what loading under inference mode makes), weights cast without a copy,
    or streamed by dynamic VRAM. They go in as ComfyUI weight wrappers, which every kind of load
    applies (setting ``weight_function`` by hand would not survive a dynamic load). Returns them,
    for :func:`_remove_weight_functions`.
    """
    added = []
    for name, module in trainer.model.diffusion_model.named_modules():
        if not hasattr(module, "weight_function"):
            continue
        for kind in ("weight", "bias"):
            key = f"diffusion_model.{name}.{kind}"
            if getattr(module, kind, None) is not None:
                function = _adding(deltas[key]) if key in deltas else _training_copy
                trainer.add_weight_wrapper(key, function)
                added.append(function)
    return added


def _training_copy(weight):
    return weight.clone()


def _adding(delta):
    return lambda weight: weight + delta.to(weight.dtype)  # a new tensor: the resident weight is not saved


def _remove_weight_functions(diffusion_model, added: list) -> None:
    """Take the training wrappers off the shared UNet's modules (a full load leaves them on when unloaded)."""
    ours = {id(function) for function in added}
    for module in diffusion_model.modules():
        if hasattr(module, "weight_function"):
            module.weight_function = [f for f in module.weight_function if id(f) not in ours]
            module.bias_function = [f for f in module.bias_function if id(f) not in ours]


@contextmanager
def _frozen(parameters):
    """No gradients to ``parameters`` while training; their ``requires_grad`` flags are restored afterwards."""
    frozen = [p for p in parameters if p.requires_grad]
    try:
        for p in frozen:
            p.requires_grad_(False)
        yield
    finally:
        with torch.inference_mode():  # weights loaded by ComfyUI are inference tensors: only settable here
            for p in frozen:
                p.requires_grad_(True)


@contextmanager
def _gradient_checkpointing(diffusion_model):
    """Recompute each ResBlock and SpatialTransformer in the backward pass instead of storing activations.

    The UNet mutates ``transformer_options`` while it runs (which block it is in); each checkpointed
    call gets its own snapshot so that the recomputation sees the same block as the first pass.
    """
    from comfy.ldm.modules.attention import SpatialTransformer
    from comfy.ldm.modules.diffusionmodules.openaimodel import ResBlock

    def checkpointed(original):
        def forward(*args, **kwargs):
            if not torch.is_grad_enabled():
                return original(*args, **kwargs)
            args = [dict(a) if isinstance(a, dict) else a for a in args]
            kwargs = {k: dict(v) if isinstance(v, dict) else v for k, v in kwargs.items()}
            return torch.utils.checkpoint.checkpoint(lambda *a: original(*a, **kwargs), *args, use_reentrant=False)
        return forward

    patched = [m for m in diffusion_model.modules() if isinstance(m, (ResBlock, SpatialTransformer))]
    try:
        for m in patched:
            m.forward = checkpointed(m.forward)  # an instance attribute shadows the class method
        yield
    finally:
        for m in patched:
            m.__dict__.pop("forward", None)


def _unload(patcher) -> None:
    """Take a patcher out of ComfyUI's loaded models (restores weights it patched in place)."""
    import comfy.model_management

    loaded = comfy.model_management.current_loaded_models
    for index, entry in enumerate(loaded):
        if entry.model is patcher:
            loaded.pop(index).model_unload()
            return


def tune(model, latents: torch.Tensor, conditioning, *, steps: int, learning_rate: float, train: str,
         seed: int, gradient_checkpointing: bool = True, on_step=None):
    """One-shot tune an inflated MODEL on one clip; returns ``(tuned clone, losses)``. ``model`` is not touched.

    Tuned temporal modules live in the clone's own module container; tuned query projections are
    stored as ordinary ComfyUI weight patches (``diff``), so the result loads, offloads and
    combines with LoRAs like any MODEL.
    """
    import comfy.model_management

    if inflation_options(model) is None:
        raise ValueError("EI2OneShotTune needs an inflated MODEL: add EI2InflateUNet between the checkpoint loader and this node.")
    if train not in TRAIN_SETS:
        raise ValueError(f"train={train!r} is not supported; choose one of {', '.join(TRAIN_SETS)}.")
    _check_latent({"samples": latents}, "latent")
    if len(conditioning) != 1:
        raise ValueError(f"conditioning holds {len(conditioning)} prompts; connect one CLIPTextEncode with the source prompt.")
    tuned = model.clone()
    if steps == 0:
        return tuned, []

    with torch.inference_mode(False):
        modules = _copy_of_temporal_modules(model)
        attach_temporal_modules(tuned, modules)
        keys = query_weight_keys(model) if train in ("temporal_and_queries", "queries") else []
        weights = dict(model.model.named_parameters())
        device = model.load_device
        deltas = {key: torch.zeros(weights[key].shape, dtype=torch.float32, device=device, requires_grad=True)
                  for key in keys}
        # Frozen parts (vanilla's LayerNorm, as in Tune-A-Video) and, for train=queries, the whole
        # temporal modules get no gradient at all: nothing accumulates on the returned MODEL.
        trainable = [p for p in modules.parameters() if p.requires_grad]
        trained, frozen = (trainable, []) if train != "queries" else ([], trainable)
        params = trained + list(deltas.values())
        if not params:
            raise ValueError(f"Nothing to tune: train={train!r} but this MODEL has no temporal modules "
                             "(temporal_type none). Choose train=queries or inflate with stam/vanilla.")

        trainer = tuned.clone()  # loaded for training only, then unloaded; never returned
        training_copies = _use_training_copies(trainer, deltas)
        loaded = [trainer, *trainer.get_nested_additional_models()]
        comfy.model_management.load_models_gpu(loaded, force_full_load=True)
        frames = latents.shape[0]
        x0 = trainer.model.process_latent_in(latents.clone()).to(device)
        context = conditioning[0][0].clone().to(device).expand(frames, -1, -1)
        options = trainer.model_options["transformer_options"]

        def predict_eps(x, sigma):
            sigma = sigma.expand(frames)
            denoised = trainer.model.apply_model(x, sigma, c_crossattn=context,
                                                 transformer_options={**options, "cond_or_uncond": [0]})
            return (x - denoised) / sigma.view(-1, 1, 1, 1)

        checkpointing = _gradient_checkpointing(trainer.model.diffusion_model) if gradient_checkpointing else _no_context()
        try:
            with _frozen([*trainer.model.diffusion_model.parameters(), *frozen]), checkpointing:
                losses = one_shot_tune(
                    predict_eps, x0, trainer.model.model_sampling.sigmas, params, steps=steps,
                    learning_rate=learning_rate, seed=seed, on_step=on_step,
                    loss_scaling=device.type == "cuda" and trainer.model.get_dtype() == torch.float16)
        finally:
            for patcher in loaded:
                _unload(patcher)
            _remove_weight_functions(trainer.model.diffusion_model, training_copies)
        if trained:
            settle(modules)  # the tuned spectral clips hold to ~1e-4 from the first sampling step on
        info = dict(frames=frames, steps=steps, learning_rate=learning_rate, train=train, seed=seed)
        set_query_deltas(tuned, {key: delta.detach().cpu() for key, delta in deltas.items()}, info)
    return tuned, losses


@contextmanager
def _no_context():
    yield


# --- tuned weights: what is saved and loaded -------------------------------------------------------

class TunedQueries:
    """Query-projection deltas of a tuned MODEL plus how it was tuned.

    Kept in ``model_options`` so it follows the MODEL through clones; ``__deepcopy__`` returns
    itself because ComfyUI deep-copies model_options on every clone and these tensors never change.
    """

    def __init__(self, deltas: dict[str, torch.Tensor], info: dict):
        self.deltas, self.info = deltas, info

    def __deepcopy__(self, memo):
        return self


def set_query_deltas(model, deltas: dict[str, torch.Tensor], info: dict) -> None:
    """Apply ``deltas`` as ordinary ComfyUI weight patches (``diff``) and remember them.

    Tuning an already tuned MODEL adds to its deltas: what is remembered (and saved) is the sum.
    """
    if deltas:
        model.add_patches({key: (delta,) for key, delta in deltas.items()})
    previous = model.model_options.get(TUNED_KEY)
    if previous is not None:
        deltas = {k: previous.deltas.get(k, 0) + deltas.get(k, 0) for k in previous.deltas.keys() | deltas.keys()}
        info = {**info, "steps": previous.info.get("steps", 0) + info.get("steps", 0)}
    model.model_options[TUNED_KEY] = TunedQueries(deltas, info)


def base_fingerprint(model) -> str:
    """A short hash of the base UNet's query weights (as loaded, before any patch), to recognise its base model."""
    import hashlib

    digest = hashlib.sha256()
    for key in query_weight_keys(model):
        backup = model.backup.get(key)  # ComfyUI keeps the unpatched weight here while patches are applied
        weight = backup.weight if backup is not None else dict(model.model.named_parameters())[key]
        digest.update(weight.detach().float().cpu().flatten()[:4096].numpy().tobytes())
    return digest.hexdigest()[:16]


def tuned_state(model) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Everything tuning changed, as flat tensors + string metadata (for safetensors)."""
    import json

    options = inflation_options(model)
    tuned = model.model_options.get(TUNED_KEY)
    if options is None or tuned is None:
        raise ValueError("This MODEL has no tuned weights to save: connect the output of EI2OneShotTune or EI2LoadTuned.")
    tensors = {f"temporal.{k}": v.detach().cpu().contiguous() for k, v in temporal_modules(model).state_dict().items()} \
        if temporal_modules(model) is not None else {}
    tensors.update({f"delta.{k}": v.contiguous() for k, v in tuned.deltas.items()})
    metadata = {"ei2_format": TUNED_FORMAT, "inflation": json.dumps(asdict(options)), "base_fingerprint": base_fingerprint(model),
                **{k: json.dumps(v) for k, v in tuned.info.items()}}
    return tensors, metadata


def apply_tuned_state(model, tensors: dict[str, torch.Tensor], metadata: dict[str, str], source: str = "file"):
    """A clone of an inflated ``model`` carrying saved tuned weights; clear errors when they do not fit."""
    import json
    import logging

    options = inflation_options(model)
    if options is None:
        raise ValueError("EI2LoadTuned needs an inflated MODEL: add EI2InflateUNet (with the options the weights were tuned with) first.")
    if TUNED_KEY in model.model_options:
        raise ValueError("This MODEL already carries tuned weights; connect the EI2InflateUNet output to EI2LoadTuned.")
    if metadata.get("ei2_format") is None:
        raise ValueError(f"{source} is not an EI² tuned-weights file (made by EI2SaveTuned).")
    if metadata["ei2_format"] != TUNED_FORMAT:
        raise ValueError(f"{source} was saved by another version of this pack (format {metadata['ei2_format']}, "
                         f"this one reads {TUNED_FORMAT}) whose temporal modules differ; tune the clip again.")
    saved = json.loads(metadata["inflation"])
    mismatched = {k: (saved.get(k), v) for k, v in asdict(options).items() if k != "seed" and saved.get(k) != v}
    if mismatched:
        detail = ", ".join(f"{k}: file {a!r} vs model {b!r}" for k, (a, b) in mismatched.items())
        raise ValueError(f"{source} was tuned with other EI2InflateUNet options ({detail}); set EI2InflateUNet to match.")
    if metadata.get("base_fingerprint") != base_fingerprint(model):
        # A warning, not an error: applying tuned weights to a fine-tune of the same base is legitimate.
        logging.warning("EI²: %s was tuned on another base model; the result may differ from the tuned one.", source)

    broken = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:
        raise ValueError(f"{source} holds NaN or infinite values ({sorted(broken)[:3]}); it is damaged: tune again.")
    loaded = model.clone()
    with torch.inference_mode(False):
        modules = _copy_of_temporal_modules(model)
        temporal = {k[len("temporal."):]: v for k, v in tensors.items() if k.startswith("temporal.")}
        missing, unexpected = modules.load_state_dict(temporal, strict=False)
        if missing or unexpected:
            raise ValueError(f"{source} does not fit this model's temporal modules "
                             f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}).")
        attach_temporal_modules(loaded, modules)
    deltas = {k[len("delta."):]: v for k, v in tensors.items() if k.startswith("delta.")}
    shapes, queries = dict(model.model.named_parameters()), set(query_weight_keys(model))
    wrong = [k for k, v in deltas.items() if k not in queries or shapes[k].shape != v.shape]
    if wrong:
        # Tuning only ever changes the attn1/attn2 query projections of this UNet.
        raise ValueError(f"{source} holds weights that are not this UNet's tuned query projections ({sorted(wrong)[:3]}); "
                         "was it made for another model?")
    info = {k: json.loads(metadata[k]) for k in ("frames", "steps", "learning_rate", "train", "seed") if k in metadata}
    set_query_deltas(loaded, deltas, info)
    return loaded


# --- DDIM inversion and sampling, on ComfyUI's sampling machinery ------------------------------------

INVERSION_KEY = "ei2_inversion"  # in an inverted LATENT: how it was made, for EI2Sample
MAX_DDIM_STEPS = 250  # keeps the first σ below the schedule's σ_max, where ComfyUI would rescale the start


def _eps_of(denoiser, extra_args):
    """σ-space ε-prediction from a ComfyUI denoiser (which returns the CFG-combined x0 estimate)."""
    def eps(x, sigma):
        return (x - denoiser(x, sigma * x.new_ones(x.shape[0]), **extra_args)) / sigma
    return eps


def _k_callback(callback, sigmas):
    if callback is None:
        return None
    return lambda i, x, denoised: callback({"i": i, "x": x, "denoised": denoised, "sigma": sigmas[i], "sigma_hat": sigmas[i]})


def _ddim_sampler(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=0.0, noise_seed=0):
    return ddim_sample(_eps_of(model, extra_args or {}), x, sigmas, eta=eta,
                       generator=torch.Generator().manual_seed(noise_seed), callback=_k_callback(callback, sigmas))


def _ddim_inverse_sampler(model, x, sigmas, extra_args=None, callback=None, disable=None):
    return ddim_invert(_eps_of(model, extra_args or {}), x, sigmas, callback=_k_callback(callback, sigmas))


def _check_steps(steps: int) -> None:
    if not 1 <= steps <= MAX_DDIM_STEPS:
        raise ValueError(f"steps must be between 1 and {MAX_DDIM_STEPS}, got {steps}.")


def _run_sampler(model, sampler_function, sigmas, latent, noise, positive, negative, cfg, seed, **options):
    """Run a σ-space sampler through ComfyUI (conds, CFG, model loading, previews, progress, cancel)."""
    import comfy.sample
    import comfy.samplers
    import comfy.utils
    import latent_preview

    sampler = comfy.samplers.KSAMPLER(sampler_function, extra_options=options)
    callback = latent_preview.prepare_callback(model, len(sigmas) - 1)
    return comfy.sample.sample_custom(model, noise, cfg, sampler, sigmas, positive, negative, latent,
                                      callback=callback, disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)


def _check_latent(latent: dict, what: str) -> torch.Tensor:
    samples = latent.get("samples")
    if samples is None or samples.ndim != 4 or samples.shape[0] == 0:
        shape = None if samples is None else tuple(samples.shape)
        raise ValueError(f"{what} must hold the frames of one clip as [frames, 4, h, w]; got shape {shape}.")
    return samples


def invert(model, latent: dict, conditioning, steps: int) -> dict:
    """DDIM-invert a clip (η = 0, no CFG) to its starting noise.

    Returns a LATENT whose ``samples`` are that noise at unit scale (like a sampler's fresh noise)
    and whose ``ei2_inversion`` entry tells EI2Sample the schedule it came from.
    """
    samples = _check_latent(latent, "latent")
    _check_steps(steps)
    sigmas = ddim_sigmas(model.get_model_object("model_sampling").sigmas, steps).flip(0).float()
    with torch.inference_mode():
        # Starting at σ = 0, ComfyUI's noise scaling leaves the clean latent as it is.
        inverted = _run_sampler(model, _ddim_inverse_sampler, sigmas, samples, torch.zeros_like(samples),
                                conditioning, conditioning, 1.0, 0)
        noise = model.model.process_latent_in(inverted) / sigmas[-1]
    return {"samples": noise, INVERSION_KEY: {"steps": steps, "frames": samples.shape[0],
                                             "sigma": float(sigmas[-1]), "tuned_frames": _tuned_frames(model)}}


def _tuned_frames(model):
    tuned = model.model_options.get(TUNED_KEY)
    return None if tuned is None else tuned.info.get("frames")


def sample(model, positive, negative, latent: dict, *, steps: int, cfg: float, eta: float, seed: int) -> dict:
    """DDIM-sample the edit from an inverted LATENT: ``samples`` are scaled to the first σ of the schedule."""
    import logging

    noise = _check_latent(latent, "latent")
    _check_steps(steps)
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}.")
    inversion = latent.get(INVERSION_KEY)
    if inversion is None:
        raise ValueError("latent is not an inverted clip: connect the LATENT output of EI2DDIMInvert.")
    if inversion["steps"] != steps:
        logging.warning("EI²: sampling with %d steps from a %d-step inversion; the edit will follow the source "
                        "less closely. Use the same steps for both.", steps, inversion["steps"])
    tuned_frames = _tuned_frames(model)
    if tuned_frames is not None and tuned_frames != noise.shape[0]:
        logging.warning("EI²: the model was tuned on %d frames and samples %d; the temporal modules accept any "
                        "count, but the result is best on the tuned clip.", tuned_frames, noise.shape[0])
    sigmas = ddim_sigmas(model.get_model_object("model_sampling").sigmas, steps).float()
    with torch.inference_mode():
        edited = _run_sampler(model, _ddim_sampler, sigmas, torch.zeros_like(noise), noise, positive, negative,
                              cfg, seed, eta=eta, noise_seed=seed)
    return {"samples": edited}
