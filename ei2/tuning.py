"""One-shot tuning: fit the inflated model to the single source clip (Tune-A-Video's objective).

Each step draws one timestep uniformly from the training schedule and one Gaussian noise for the
clip, and minimises the ε-prediction MSE, with AdamW (weight decay 1e-2) and gradient-norm
clipping, as Tune-A-Video does. The model is abstracted as ``predict_eps(x_sigma, sigma)`` in
k-diffusion's σ-space, where ``x_sigma = x0 + σ·ε`` (the DDPM ``x_t`` divided by √ᾱ_t), so this loop
knows nothing of the UNet or of ComfyUI.

Windows: a clip of any length is tuned on ``frames_per_step`` frames per step, every
``frame_stride``-th frame from a start drawn each step (Tune-A-Video's n_sample_frames and
sample_frame_rate, drawn from the clip instead of cut once), so memory follows the window, not the
clip. A window longer than the clip holds every ``frame_stride``-th frame of it; a window that
covers the whole clip draws no start, and the run is the same as without windows.
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
    frames_per_step: int | None = None,
    frame_stride: int = 1,
    on_step: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Run ``steps`` optimiser steps on ``params``; returns the loss of every step.

    ``sigmas`` is the model's training schedule (one σ per discrete timestep); noise and
    timesteps come from a CPU generator seeded with ``seed``, so a CPU run is bit-reproducible.
    ``loss_scaling`` enables dynamic loss scaling (for an fp16 UNet on CUDA). ``on_step(step,
    loss)`` runs after each update; raising there (e.g. on cancel) stops the loop cleanly.
    ``frames_per_step`` (default: the whole clip) and ``frame_stride`` choose each step's window.
    """
    if learning_rate <= 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
    length = window_length(len(latents), frames_per_step or len(latents), frame_stride)
    span = (length - 1) * frame_stride + 1
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
    scaler = torch.amp.GradScaler(latents.device.type, enabled=loss_scaling)
    losses = []
    try:
        for step in range(steps):
            timestep = torch.randint(len(sigmas), (1,), generator=generator)
            start = int(torch.randint(len(latents) - span + 1, (1,), generator=generator)) if span < len(latents) else 0
            window = latents[start:start + span:frame_stride]
            noise = torch.randn(window.shape, generator=generator).to(latents)
            sigma = sigmas[timestep].to(latents)
            loss = F.mse_loss(predict_eps(window + noise * sigma, sigma).float(), noise.float())
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


def window_length(frames: int, frames_per_step: int, frame_stride: int = 1) -> int:
    """Frames in each tuning step's window: ``frames_per_step``, or as many as the clip holds at ``frame_stride``."""
    if frames_per_step < 1 or frame_stride < 1:
        raise ValueError(f"frames_per_step and frame_stride must be at least 1, got {frames_per_step} and {frame_stride}.")
    return min(frames_per_step, (frames - 1) // frame_stride + 1)
