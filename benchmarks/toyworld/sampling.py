"""Sampling the toy model with the ei2 core's DDIM: classifier-free guidance around ``ToyT2I.denoise``."""
from __future__ import annotations

import torch

from ei2.ddim import ddim_sample, ddim_sigmas

from .model import ToyT2I
from .schedule import schedule_sigmas


def guided_denoiser(model: ToyT2I, prompts: list[str], guidance: float, frames: int | None = 1, negative: str = ""):
    """k-diffusion denoiser ``(x, sigma) -> x0`` with CFG: ``uncond + guidance·(cond − uncond)``.

    ``prompts`` holds one prompt per clip; each clip is ``frames`` consecutive rows of ``x``.
    ``frames=None``: ``x`` is one clip of whatever length it comes with (one prompt), as context
    windows (``ei2.context_windows``) call it with windows of 16 or 17 frames.
    ``guidance=1`` runs the conditional model alone.
    """
    if frames is None and len(prompts) != 1:
        raise ValueError(f"frames=None takes one prompt (the batch is one clip), got {len(prompts)}")
    cond = torch.repeat_interleave(model.text.encode(prompts), frames or 1, dim=0)
    uncond = model.text.encode([negative]).expand_as(cond)

    def denoise(x, sigma):
        count = frames or x.shape[0]
        c, u = (cond, uncond) if frames else (cond.expand(count, -1, -1), uncond.expand(count, -1, -1))
        if guidance == 1:
            return model.denoise(x, sigma, c, count)
        # Two separate calls, never one batch of both: each must hold whole clips for frame attention.
        unconditional = model.denoise(x, sigma, u, count)
        return unconditional + guidance * (model.denoise(x, sigma, c, count) - unconditional)

    return denoise


@torch.no_grad()
def sample_images(model: ToyT2I, prompts: list[str], *, seed: int, steps: int = 25, guidance: float = 3.0,
                  image_size: int = 32) -> torch.Tensor:
    """One image per prompt, ``(B, 3, H, W)`` in [-1, 1], from noise drawn with ``seed``."""
    sigmas = ddim_sigmas(schedule_sigmas(), steps)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(len(prompts), 3, image_size, image_size, generator=generator) * sigmas[0]
    return ddim_sample(guided_denoiser(model, prompts, guidance), x, sigmas).clamp(-1, 1)
