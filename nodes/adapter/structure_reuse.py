"""Structure reuse (``ei2.structure_reuse``) on ComfyUI's SD 1.x UNet: where the source pass records and the edit
takes, through ComfyUI's own patch points (nothing in the shared UNet is replaced or mutated):

- the decoder's self-attention queries and keys: an ``attn1`` replace patch on every transformer block of
  ``output_blocks``, wrapping the one already there (FFAM, from EI2InflateUNet) or ComfyUI's attention;
- the residual branch of the middle ResBlock of the coarsest decoder level with attention (``output_blocks[4]``
  in SD 1.x, Plug-and-Play's choice): an object patch on its ``forward``;
- the source pass: an ``APPLY_MODEL`` wrapper runs the UNet on the source latent, with the inversion's prompt,
  no ControlNet and one clip, before the edit's call (once per step and window, however ComfyUI batches
  cond and uncond).
"""
from __future__ import annotations

from ...ei2.structure_reuse import StructureReuse
from .patching import block_name, comfyui_attention, transformer_blocks

WRAPPER_KEY = "ei2_structure_reuse"


def reused_resblock(diffusion_model) -> int:
    """The output block whose ResBlock gives its residual: the middle one of the coarsest level with attention."""
    from comfy.ldm.modules.attention import SpatialTransformer
    from comfy.ldm.modules.diffusionmodules.openaimodel import Upsample

    levels, level = [], []
    for number, block in enumerate(diffusion_model.output_blocks):
        level.append(number)
        if any(isinstance(layer, Upsample) for layer in block):
            levels.append(level)
            level = []
    levels.append(level)
    for level in levels:
        if any(isinstance(layer, SpatialTransformer) for number in level for layer in diffusion_model.output_blocks[number]):
            return level[len(level) // 2]
    raise ValueError("structure reuse needs a UNet decoder with attention; this MODEL's has none")


def with_structure_reuse(model, reuse: StructureReuse, source_context):
    """A clone of ``model`` whose calls run a source pass with ``source_context`` (``[1, tokens, dim]``) and exchange
    its structure through ``reuse`` on the steps that reuse it. ``model`` is not touched."""
    import comfy.patcher_extension

    reusing = model.clone()
    diffusion_model = model.model.diffusion_model
    replaced = reusing.model_options["transformer_options"].get("patches_replace", {}).get("attn1", {})
    for (stage, number, index), _ in transformer_blocks(diffusion_model):
        if stage == "output":
            own = replaced.get((stage, number, index), replaced.get((stage, number)))
            reusing.set_model_attn1_replace(_exchanging_attention(reuse, block_name((stage, number), index), own),
                                            stage, number, index)

    number = reused_resblock(diffusion_model)
    resblock = diffusion_model.output_blocks[number][0]
    reusing.add_object_patch(f"diffusion_model.output_blocks.{number}.0.forward",
                             _exchanging_resblock(reuse, f"output_{number}.residual", resblock))

    def apply_model(executor, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
        def source_pass(step):
            source = reuse.source_latent(step, x)
            context = source_context.to(c_crossattn).expand(len(source), -1, -1)
            executor(source, t[:len(source)], c_concat, context, None, {**transformer_options, "cond_or_uncond": [0]},
                     **kwargs)

        return reuse.denoise(t, source_pass,
                             lambda: executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs))

    reusing.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, WRAPPER_KEY, apply_model)
    return reusing


def _exchanging_attention(reuse: StructureReuse, name: str, own):
    def attn1(q, k, v, extra_options):
        q, k = reuse.exchange(f"{name}.q", q), reuse.exchange(f"{name}.k", k)
        if own is not None:
            return own(q, k, v, extra_options)
        return comfyui_attention(extra_options)(q, k, v, extra_options["n_heads"])

    return attn1


def _exchanging_resblock(reuse: StructureReuse, key: str, resblock):
    own_forward = type(resblock).forward

    def forward(x, emb):
        out = own_forward(resblock, x, emb)
        if reuse.mode is None:
            return out
        skip = resblock.skip_connection(x)
        return skip + reuse.exchange(key, out - skip)

    return forward
