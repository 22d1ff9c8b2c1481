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
from dataclasses import asdict

import torch

from ...ei2.ffam import frame_attention
from ...ei2.inflation import InflateOptions, build_temporal_modules

OPTIONS_KEY = "ei2_inflation"  # in model_options: marks an inflated MODEL and records how
ADDITIONAL_MODELS_KEY = "ei2_temporal"


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
    unet = model.model.diffusion_model
    if not isinstance(config, comfy.supported_models.SD15) or not isinstance(unet, UNetModel):
        raise ValueError(
            f"EI2InflateUNet supports Stable Diffusion 1.x models only; this MODEL is {found}. "
            "Load an SD 1.x checkpoint (SD 1.4/1.5 or a fine-tune of it) with CheckpointLoaderSimple."
        )
    if unet.in_channels != 4:  # inpainting (9) and InstructPix2Pix (8) models take extra image channels
        raise ValueError(
            f"EI2InflateUNet supports Stable Diffusion 1.x text-to-image models only; this MODEL is {found} with "
            f"{unet.in_channels} input channels (an inpainting or InstructPix2Pix model), which needs an image "
            "input the video edit does not give. Load a text-to-image SD 1.x checkpoint (SD 1.4/1.5 or a fine-tune)."
        )
    if OPTIONS_KEY in model.model_options:
        raise ValueError(
            f"This MODEL is already inflated ({inflation_options(model)}). "
            "Connect the original MODEL from the checkpoint loader to EI2InflateUNet instead."
        )


def inflation_options(model) -> InflateOptions | None:
    stored = model.model_options.get(OPTIONS_KEY)
    return InflateOptions(**stored) if stored is not None else None


def temporal_blocks(model) -> dict[str, tuple[int, int]]:
    """``block_name -> (channels, heads)`` of every transformer block, in the order the UNet runs them."""
    return {name: (block.n_heads * block.d_head, block.n_heads) for name, (_, block) in named_transformer_blocks(model).items()}


def inflate(model, options: InflateOptions):
    """A clone of ``model`` that edits video: frame attention + temporal modules. ``model`` is not touched."""
    check_supported(model)
    modules = build_temporal_modules(temporal_blocks(model), options)  # may raise: done before anything is patched
    inflated = model.clone()

    frame_options = options.frame_attention_options()
    if frame_options is not None:  # None: per_frame is the image model's own attention
        def attn1(q, k, v, extra_options):
            height, width = extra_options["activations_shape"][-2:]
            return frame_attention(q, k, v, frames=frames_in(q.shape[0], extra_options), heads=extra_options["n_heads"],
                                   size=(height, width), attention=comfyui_attention(extra_options), **frame_options)

        for (stage, number, index), _ in transformer_blocks(model.model.diffusion_model):
            inflated.set_model_attn1_replace(attn1, stage, number, index)

    inflated.model_options[OPTIONS_KEY] = asdict(options)
    attach_temporal_modules(inflated, modules)
    return inflated


def comfyui_attention(extra_options: dict):
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


def copy_of_temporal_modules(model) -> torch.nn.ModuleDict:
    """A private copy to change (tune, load into) without touching the modules ``model`` shares."""
    modules = temporal_modules(model)
    return copy.deepcopy(modules) if modules is not None else torch.nn.ModuleDict()


def query_weight_keys(model) -> list[str]:
    """ModelPatcher keys of the attn1/attn2 query projections (Tune-A-Video tunes these)."""
    return [name for name, _ in model.model.named_parameters()
            if ".transformer_blocks." in name and name.endswith((".attn1.to_q.weight", ".attn2.to_q.weight"))]


def check_latent(latent: dict, what: str) -> torch.Tensor:
    samples = latent.get("samples")
    if samples is None or samples.ndim != 4 or samples.shape[0] == 0:
        shape = None if samples is None else tuple(samples.shape)
        raise ValueError(f"{what} must hold the frames of one clip as [frames, 4, h, w]; got shape {shape}.")
    return samples
