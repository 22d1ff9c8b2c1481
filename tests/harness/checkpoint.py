"""Test models: the tiny SD1.5-shaped checkpoint (built by ``ei2.cli.tiny_checkpoint``, shared with the demo)
and a small in-memory SD1.x MODEL. ComfyUI must already be imported (the ``comfyui`` fixture does it).
"""
from __future__ import annotations

import torch

from ei2.cli.tiny_checkpoint import SEED, SD_VAE, TINY_UNET, build_state_dict, init_weights, tiny_unet, write_checkpoint  # noqa: F401


def small_sd15_model(seed: int = SEED, **unet_overrides):
    """A fast SD1.x-structured MODEL (ModelPatcher) for in-process tests: 32 base channels, CPU, fp32.

    It carries ComfyUI's SD15 model config and inference-tensor weights, so nodes treat it exactly like a
    loaded SD 1.5 checkpoint.
    """
    import comfy.model_base
    import comfy.model_patcher
    import comfy.supported_models

    config = comfy.supported_models.SD15({**TINY_UNET, "model_channels": 32, **unet_overrides})
    # Built under inference mode, as ComfyUI loads checkpoints: the weights are inference tensors.
    with torch.inference_mode():
        model = comfy.model_base.BaseModel(config, device=torch.device("cpu"))
        state = init_weights(model.diffusion_model, torch.Generator().manual_seed(seed))
        model.diffusion_model.load_state_dict(state)
    model.eval()
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def random_conditioning(seed: int, tokens: int = 77, width: int = 768):
    """A CONDITIONING as CLIPTextEncode returns it, with random (seeded) token embeddings."""
    embedding = torch.randn(1, tokens, width, generator=torch.Generator().manual_seed(seed))
    return [[embedding, {"pooled_output": None}]]
