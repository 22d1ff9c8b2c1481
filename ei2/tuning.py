"""One-shot tuning: fit the inflated model to the single source clip (Tune-A-Video's objective).

Each step draws one timestep uniformly from the training schedule and one Gaussian noise for the
clip, and minimises the ε-prediction MSE, with AdamW (weight decay 1e-2) and gradient-norm
clipping, as Tune-A-Video does. The model is abstracted as ``predict_eps(x_sigma, sigma)`` in
k-diffusion's σ-space, where ``x_sigma = x0 + σ·ε`` (the DDPM ``x_t`` divided by √ᾱ_t), so this loop
knows nothing of the UNet or of ComfyUI.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

TRAIN_SETS = ("temporal_and_queries", "temporal", "queries")


class LossNotFinite(FloatingPointError):
    """The loss became NaN/inf; the parameters were not updated with it."""


def one_shot_tune(
    predict_eps: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    latents: torch.Tensor,
    sigmas: torch.Tensor,
    params: Sequence[torch.nn.Parameter],
    *,
    steps: int,
    learning_rate: float,
    seed: int,
    grad_clip: float = 1.0,
    weight_decay: float = 1e-2,
    loss_scaling: bool = False,
    on_step: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Run ``steps`` optimiser steps on ``params``; returns the loss of every step.

    ``sigmas`` is the model's training schedule (one σ per discrete timestep); noise and
    timesteps come from a CPU generator seeded with ``seed``, so a CPU run is bit-reproducible.
    ``loss_scaling`` enables dynamic loss scaling (for an fp16 UNet on CUDA). ``on_step(step,
    loss)`` runs after each update; raising there (e.g. on cancel) stops the loop cleanly.
    """
    if learning_rate <= 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
    scaler = torch.amp.GradScaler(latents.device.type, enabled=loss_scaling)
    losses = []
    try:
        for step in range(steps):
            timestep = torch.randint(len(sigmas), (1,), generator=generator)
            noise = torch.randn(latents.shape, generator=generator).to(latents)
            sigma = sigmas[timestep].to(latents)
            loss = F.mse_loss(predict_eps(latents + noise * sigma, sigma).float(), noise.float())
            if not torch.isfinite(loss):
                raise LossNotFinite(f"the loss is {loss.item()} at step {step + 1}")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
            scaler.step(optimizer)
            scaler.update()
            losses.append(loss.item())
            if on_step is not None:
                on_step(step, losses[-1])
    finally:
        optimizer.zero_grad(set_to_none=True)  # no gradients outlive the run
    return losses
