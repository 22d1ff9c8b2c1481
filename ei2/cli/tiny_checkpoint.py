"""A tiny random SD1.5-shaped checkpoint built from a fixed seed: the demo's and the tests' stand-in model.

It only proves the pipeline runs: the weights are random, so the "edit" is noise shaped by the clip.

Needs ComfyUI's modules (``comfy``), so import it only in a process that has ComfyUI on ``sys.path``;
``python -m ei2.cli.tiny_checkpoint COMFYUI_DIR OUT.safetensors`` builds the file in a fresh process.

ComfyUI recognises SD1.5 by ``model_channels=320`` and ``context_dim=768`` (plus no linear
transformer projections, no ADM input), not by depth, so a UNet with two levels, one res block and
one transformer per level is detected as SD1.5 while staying ~107 M parameters. The VAE and CLIP-L
have to be full size: ComfyUI builds them from fixed configs.

ComfyUI's model classes skip weight initialisation, so every tensor here is written explicitly:
small normal weights scaled by fan-in, norms at weight 1 / bias 0.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

SEED = 20230527
# Stable Diffusion 1.5's UNet as ComfyUI configures it (the benchmarks build it at full size).
SD15_UNET = dict(
    image_size=32, in_channels=4, out_channels=4, model_channels=320, num_res_blocks=[2, 2, 2, 2],
    channel_mult=[1, 2, 4, 4], transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0],
    transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], transformer_depth_middle=1,
    num_heads=8, num_head_channels=-1, context_dim=768, use_linear_in_transformer=False,
    use_spatial_transformer=True, legacy=False, adm_in_channels=None,
)
# Two levels with one res block and one transformer each: still detected as SD1.5 (see above).
TINY_UNET = {**SD15_UNET, "num_res_blocks": [1, 1], "channel_mult": [1, 2], "transformer_depth": [1, 1],
             "transformer_depth_output": [1, 1, 1, 1]}
SD_VAE = dict(double_z=True, z_channels=4, resolution=256, in_channels=3, out_ch=3, ch=128,
              ch_mult=[1, 2, 4, 4], num_res_blocks=2, attn_resolutions=[], dropout=0.0)


def tiny_unet(**overrides):
    """An SD1.x-structured ComfyUI UNet (on the meta device; fill it with :func:`init_weights`)."""
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    return UNetModel(**{**TINY_UNET, **overrides}, device="meta", operations=comfy.ops.disable_weight_init)


def random_parameter(module: torch.nn.Module, name: str, shape, generator: torch.Generator, gain: float = 0.5):
    """The value one parameter of ``module`` gets: fan-in scaled normals, norms at weight 1 / bias 0."""
    kind = type(module).__name__
    if "Norm" in kind:
        return torch.ones(shape) if name == "weight" else torch.zeros(shape)
    if name == "bias":
        return torch.zeros(shape)
    if len(shape) >= 2 and kind != "Embedding":
        return torch.randn(shape, generator=generator) * (gain / math.sqrt(math.prod(shape[1:])))
    return torch.randn(shape, generator=generator) * 0.02  # embeddings, free-standing vectors


def init_weights(module: torch.nn.Module, generator: torch.Generator, gain: float = 0.5) -> dict:
    """Deterministic values for every parameter of ``module`` (which may live on meta), as a state dict."""
    return {f"{module_name}.{name}" if module_name else name: random_parameter(sub, name, param.shape, generator, gain)
            for module_name, sub in module.named_modules() for name, param in sub.named_parameters(recurse=False)}


def fill_weights_(module: torch.nn.Module, generator: torch.Generator, gain: float = 0.5) -> None:
    """The values of :func:`init_weights`, written in place one tensor at a time (cheap at full SD size)."""
    with torch.no_grad():
        for sub in module.modules():
            for name, param in sub.named_parameters(recurse=False):
                param.copy_(random_parameter(sub, name, param.shape, generator, gain))


def build_state_dict(seed: int = SEED, **unet_overrides) -> dict:
    """UNet (``TINY_UNET`` with ``unet_overrides``) + VAE + CLIP-L in the original SD checkpoint layout."""
    import comfy.sd1_clip
    from comfy.ldm.models.autoencoder import AutoencoderKL

    generator = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        vae = AutoencoderKL(ddconfig=SD_VAE, embed_dim=4)
        clip = comfy.sd1_clip.SDClipModel(device="meta", dtype=torch.float32)
    parts = {
        "model.diffusion_model.": tiny_unet(**unet_overrides),
        "first_stage_model.": vae,
        "cond_stage_model.": clip,
    }
    state = {}
    for prefix, module in parts.items():
        for key, value in init_weights(module, generator).items():
            state[prefix + key] = value.to(torch.float16)
    return state


def write_checkpoint(path: Path, seed: int = SEED, **unet_overrides) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(build_state_dict(seed, **unet_overrides), str(path))
    return path


def main(argv: list[str]) -> None:
    comfyui, out = argv
    sys.path.insert(0, comfyui)
    import comfy.options

    comfy.options.enable_args_parsing(False)  # ComfyUI must not parse this process's arguments
    from comfy.cli_args import args

    args.cpu = True  # building needs no accelerator, and ComfyUI insists on CUDA unless told
    tmp = Path(out + ".partial")  # never leave a half-written checkpoint under the final name
    write_checkpoint(tmp)
    tmp.replace(out)


if __name__ == "__main__":
    main(sys.argv[1:])
