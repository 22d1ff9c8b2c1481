"""Stable Diffusion's noise schedule in σ-space: the levels the toy model trains on and samples at.

SD 1.x: 1000 timesteps, β "scaled_linear" from 0.00085 to 0.012, ᾱ_t = Π(1−β), σ_t = √((1−ᾱ_t)/ᾱ_t)
(σ from 0.029 at t = 0 to 14.6 at t = 999). ``ei2.ddim.ddim_sigmas`` picks DDIM's steps from it.
"""
from __future__ import annotations

import torch

TRAIN_STEPS = 1000


def schedule_sigmas(steps: int = TRAIN_STEPS, beta_start: float = 0.00085, beta_end: float = 0.012) -> torch.Tensor:
    """``(steps,)`` ascending σ, one per training timestep."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, steps, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1 - betas, dim=0)
    return ((1 - alphas_cumprod) / alphas_cumprod).sqrt().float()
