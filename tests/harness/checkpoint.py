"""Test models: the tiny SD1.5-shaped checkpoint (built by ``ei2.cli.tiny_checkpoint``, shared with the demo),
SD1.x MODELs with random weights built in memory (tests and benchmarks), and random prompts.
ComfyUI must already be imported (the ``comfyui`` fixture does it).
"""
from __future__ import annotations

import torch

from ei2.cli.tiny_checkpoint import SD15_UNET, SEED, TINY_UNET, fill_weights_, write_checkpoint  # noqa: F401


def sd15_model(unet: dict, seed: int = SEED, *, device: str = "cpu", dtype=torch.float32, inference: bool = True):
    """An SD1.x-structured MODEL (ModelPatcher) with the UNet config ``unet`` and seeded random weights.

    It carries ComfyUI's SD15 model config, so nodes treat it as a loaded SD 1.5 checkpoint.
    ``inference=True`` builds it under inference mode, as ComfyUI loads checkpoints (the weights are
    then inference tensors); ``False`` gives ordinary tensors for a plain autograd benchmark.
    """
    import comfy.model_base
    import comfy.model_patcher
    import comfy.supported_models

    config = comfy.supported_models.SD15(dict(unet))
    config.set_inference_dtype(dtype, None)
    with torch.inference_mode(inference):
        model = comfy.model_base.BaseModel(config, device=torch.device("cpu"))
        fill_weights_(model.diffusion_model, torch.Generator().manual_seed(seed))
        model.diffusion_model.to(device=device, dtype=dtype)
    model.eval()
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device(device), offload_device=torch.device(device))


def small_sd15_model(seed: int = SEED, **unet_overrides):
    """A fast SD1.x MODEL for in-process tests: the tiny checkpoint's UNet at 32 base channels, CPU, fp32."""
    return sd15_model({**TINY_UNET, "model_channels": 32, **unet_overrides}, seed)


def random_conditioning(seed: int, tokens: int = 77, width: int = 768):
    """A CONDITIONING as CLIPTextEncode returns it, with random (seeded) token embeddings."""
    embedding = torch.randn(1, tokens, width, generator=torch.Generator().manual_seed(seed))
    return [[embedding, {"pooled_output": None}]]


def shifting_clip(frames: int = 4, seed: int = 1) -> dict:
    """A LATENT of ``frames`` 4×4 frames, each the one before shifted by a pixel (wrapping round): a clip with motion."""
    base = torch.randn(1, 4, 6, 6, generator=torch.Generator().manual_seed(seed))
    return {"samples": torch.cat([torch.roll(base, shifts=i, dims=-1) for i in range(frames)])[..., :4, :4]}


def tuned_video_model(pack, latent: dict):
    """The small SD1.x MODEL inflated with the node's defaults and tuned a few steps on ``latent``: the tuning grows
    the zero-initialised temporal output maps, so the frames really interact."""
    from harness.graphs import INFLATE_DEFAULTS

    with torch.inference_mode():
        inflated = pack.NODE_CLASS_MAPPINGS["EI2InflateUNet"]().inflate(small_sd15_model(), **INFLATE_DEFAULTS)[0]
        return pack.NODE_CLASS_MAPPINGS["EI2OneShotTune"]().tune(
            inflated, latent, random_conditioning(5), 3, 1e-3, "temporal_and_queries", 0, False)[0]
