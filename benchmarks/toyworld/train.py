"""Deterministic training of the toy text-to-image model on single frames of the toy world.

Every step draws its own batch from a generator seeded by ``(seed, step)``: fresh random scenes,
their captions (10 % replaced by "" for classifier-free guidance), noise levels log-uniform over
SD's σ range, and Gaussian noise. A run therefore depends only on its arguments and the number
of threads (float summation order), and a resumed run continues exactly where it stopped.

Every ``checkpoint_every`` steps the full state (weights, EMA, optimiser) goes to
``run_dir/state.pt`` and the EMA weights to the weights file; the log is ``run_dir/train.log``.

``init`` (a weights file) fine-tunes instead of training from scratch: model and EMA start from
its weights (its config is used), the optimiser and the step count start afresh; batches are
still drawn from ``(seed, step)``, so a fine-tune is as reproducible as a run from scratch.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .model import ToyConfig, ToyT2I, training_loss
from .schedule import schedule_sigmas
from .weights_io import DEFAULT_WEIGHTS, save_weights
from .world import caption, random_scene, render, to_tensor_range

RUNS = Path(__file__).resolve().parent / "runs"


@dataclass(frozen=True)
class TrainSettings:
    steps: int = 8000  # the flat-world model the committed weights start from
    batch: int = 32
    learning_rate: float = 1e-3
    warmup: int = 200
    ema_decay: float = 0.999
    caption_dropout: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 250
    init: str | None = None  # weights file to fine-tune from (None: train from the seed's initialisation)


def training_batch(seed: int, step: int, batch: int, caption_dropout: float):
    """``(pixels (B, 3, 32, 32) in [-1, 1], prompts, u (B,) uniform, noise)`` of one step, from ``(seed, step)``."""
    rng = np.random.default_rng([seed, step])
    scenes = [random_scene(rng) for _ in range(batch)]
    pixels = torch.from_numpy(to_tensor_range(np.stack([render(s) for s in scenes])))
    prompts = ["" if rng.random() < caption_dropout else caption(s) for s in scenes]
    generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
    u = torch.rand(batch, generator=generator)
    noise = torch.randn(pixels.shape, generator=generator)
    return pixels, prompts, u, noise


def log_uniform_sigmas(u: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    low, high = math.log(sigmas.min()), math.log(sigmas.max())
    return torch.exp(low + u * (high - low))


def ema_update(ema: ToyT2I, model: ToyT2I, decay: float) -> None:
    with torch.no_grad():
        for averaged, current in zip(ema.parameters(), model.parameters()):
            averaged.lerp_(current, 1 - decay)


def train(settings: TrainSettings, run_dir: Path = RUNS / "default", weights: Path = DEFAULT_WEIGHTS,
          config: ToyConfig = ToyConfig(), max_minutes: float | None = None, log=print) -> ToyT2I:
    """Train (or resume) to ``settings.steps``; returns the EMA model."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    facts = {}
    if settings.init is not None:
        from .weights_io import load_model, read_metadata

        model = load_model(settings.init).train().requires_grad_(True)
        config = model.config
        facts = {"init": Path(settings.init).name, "init_steps": read_metadata(settings.init).get("steps")}
    else:
        torch.manual_seed(settings.seed)  # the initial weights
        model = ToyT2I(config)
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=1e-2)
    start, state_path = 0, run_dir / "state.pt"
    if state_path.exists():
        state = torch.load(state_path, weights_only=False)
        if (state["settings"]["seed"] != settings.seed or state["config"] != asdict(config)
                or state["settings"].get("init") != settings.init):
            raise ValueError(f"{state_path} belongs to another run (seed, init or config differ); pick another run_dir")
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["step"]
        log(f"resumed at step {start} from {state_path}")
    sigmas = schedule_sigmas()
    began, window = time.monotonic(), []

    def checkpoint(step):
        partial = state_path.with_suffix(".partial")
        torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
                    "step": step, "settings": asdict(settings), "config": asdict(config)}, partial)
        partial.replace(state_path)
        save_weights(ema, weights, steps=step, seed=settings.seed, batch=settings.batch, **facts)

    step = start
    for step in range(start, settings.steps):
        pixels, prompts, u, noise = training_batch(settings.seed, step, settings.batch, settings.caption_dropout)
        for group in optimizer.param_groups:
            group["lr"] = settings.learning_rate * min(1.0, (step + 1) / settings.warmup)
        loss = training_loss(model, pixels, log_uniform_sigmas(u, sigmas), model.text.encode(prompts), noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        optimizer.step()
        # Early on the average would be mostly the random initialisation: ramp the decay up.
        ema_update(ema, model, min(settings.ema_decay, (1 + step) / (10 + step)))
        window.append(loss.item())
        done = step + 1
        if done % 50 == 0 or done == settings.steps:
            elapsed = time.monotonic() - began
            log(f"step {done} loss {np.mean(window):.4f} {elapsed / (done - start):.2f} s/step {elapsed / 60:.1f} min")
            window = []
        if done % settings.checkpoint_every == 0 or done == settings.steps:
            checkpoint(done)
        if max_minutes is not None and time.monotonic() - began > 60 * max_minutes:
            checkpoint(done)
            log(f"stopped after {max_minutes} minutes at step {done}")
            break
    return ema.eval()

