"""DDIM sampling and DDIM inversion (Song et al. 2020) in σ-space, on Stable Diffusion's schedule.

Samples live in k-diffusion's σ-space, ``x_σ = x0 + σ·ε`` (the DDPM ``x_t`` divided by ``√ᾱ_t``,
``ᾱ = 1/(1+σ²)``), which is how ComfyUI drives its models. The model is a k-diffusion denoiser,
``model(x, sigma)``: the x0 estimate for the σ-space sample ``x`` at noise level ``sigma``, so
ε = (x − x0)/σ (ComfyUI scales the input by ``1/√(1+σ²)`` before the UNet sees it).

Timesteps follow the SD 1.x scheduler config that Tune-A-Video uses ("leading" spacing with
``steps_offset=1``: 1, 21, …, 981 for 50 steps). Both directions treat the clean latent as
σ = 0, like diffusers' schedulers with ``set_alpha_to_one=True``. SD's own scheduler config says
``set_alpha_to_one=False``: its last sampling step stops at ᾱ₀ = 1 − β₀ = 0.99915, i.e. σ₀ =
√(β₀/ᾱ₀) ≈ 0.0292 instead of 0, and inversion starts there. The difference sits at the clean end
(the lowest DDIM timestep, t = 1, has σ ≈ 0.0413): sampling's last step here also removes the
remaining 0.0292·ε̂ (in σ-space, 2.9% of unit-variance noise), and inversion's first step starts
from the clean latent itself. Ending at σ = 0 is what ComfyUI's own samplers do.
"""
from __future__ import annotations

import math

import torch


def ddim_timesteps(steps: int, train_steps: int = 1000, offset: int = 1) -> torch.Tensor:
    """The ``steps`` training timesteps DDIM visits, ascending ("leading" spacing, SD's offset 1)."""
    if not 1 <= steps <= train_steps:
        raise ValueError(f"steps must be between 1 and {train_steps}, got {steps}")
    return (torch.arange(steps) * (train_steps // steps) + offset).clamp(max=train_steps - 1)


def ddim_sigmas(schedule_sigmas: torch.Tensor, steps: int) -> torch.Tensor:
    """Sampling σs, descending, ending at 0: ``schedule_sigmas`` holds one σ per training timestep."""
    chosen = schedule_sigmas[ddim_timesteps(steps, len(schedule_sigmas))].flip(0)
    return torch.cat([chosen, chosen.new_zeros(1)])


def ddim_sample(model, x: torch.Tensor, sigmas: torch.Tensor, extra_args=None, callback=None, disable=None,
                eta: float = 0.0, noise_sampler=None) -> torch.Tensor:
    """DDIM from ``x`` at ``sigmas[0]`` down to ``sigmas[-1]``; η = 0 is deterministic (Euler in σ).

    The signature is k-diffusion's, so ComfyUI's ``KSAMPLER`` runs it as is: ``model(x, sigma, **extra_args)``
    returns the x0 estimate, ``callback`` gets one dict per step (previews and the progress bar) and
    ``disable`` (a console progress bar) has nothing to switch off here. The η-noise comes from
    ``noise_sampler(sigma, sigma_next)``, else from a generator seeded with ``extra_args["seed"]``.
    """
    extra_args = {} if extra_args is None else extra_args
    if noise_sampler is None:
        noise_sampler = seeded_noise_sampler(x, extra_args.get("seed"))
    s_in = x.new_ones(x.shape[0])
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * s_in, **extra_args)
        e = (x - denoised) / sigma
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})
        if eta == 0 or sigma_next == 0:
            x = denoised + sigma_next * e
            continue
        # DDIM's η-noise, written for σ-space: divide the DDPM update by √ᾱ_next.
        alpha, alpha_next = 1 / (1 + sigma**2), 1 / (1 + sigma_next**2)
        std = eta * torch.sqrt((1 - alpha_next) / (1 - alpha) * (1 - alpha / alpha_next))
        direction = torch.sqrt((1 - alpha_next - std**2).clamp(min=0) / alpha_next)
        x = denoised + direction * e + std / math.sqrt(float(alpha_next)) * noise_sampler(sigma, sigma_next)
    return x


def seeded_noise_sampler(x: torch.Tensor, seed: int | None):
    """Standard normal draws shaped like ``x``, drawn on the CPU so a seed gives the same noise on any device.

    The stream starts at ``seed + 1``: ComfyUI draws a sampler's starting noise from ``seed`` itself, and the
    η-noise must not repeat it.
    """
    generator = None if seed is None else torch.Generator().manual_seed((seed + 1) % 2**64)
    return lambda sigma, sigma_next: torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)


def ddim_invert(model, x: torch.Tensor, sigmas: torch.Tensor, extra_args=None, callback=None,
                disable=None) -> torch.Tensor:
    """DDIM inversion from the clean ``x`` at ``sigmas[0] = 0`` up to ``sigmas[-1]`` (ascending).

    Each step takes ε at the *target* level with the current sample, as diffusers'
    ``DDIMInverseScheduler`` and Tune-A-Video do; that is the mirror image of the sampling step,
    so inverting and then sampling with the same prompt returns close to the start. In σ-space
    the current sample is rescaled so that the UNet sees exactly the DDPM sample it would.
    Same signature as ``ddim_sample`` (without η).
    """
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones(x.shape[0])
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        scaled = x * torch.sqrt((1 + sigma_next**2) / (1 + sigma**2))
        e = (scaled - model(scaled, sigma_next * s_in, **extra_args)) / sigma_next
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": x - sigma * e})
        x = x + (sigma_next - sigma) * e
    return x
