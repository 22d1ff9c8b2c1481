"""Edit a toy clip with the node pack's pipeline: inflate → one-shot tune → DDIM invert → sample.

The same ei2 core calls as the nodes, on the toy model: ``inflate.inflate`` (EI2InflateUNet),
``ei2.tuning.one_shot_tune`` (EI2OneShotTune; source prompt, ε-loss on SD's discrete σ schedule),
``ei2.ddim.ddim_invert`` with the source prompt and no guidance (EI2DDIMInvert, Tune-A-Video's
inversion), ``ei2.ddim.ddim_sample`` with the edit prompt and CFG (EI2Sample).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ei2.ddim import ddim_invert, ddim_sample, ddim_sigmas
from ei2.tuning import one_shot_tune

from .inflate import Inflation, inflate, settle_temporal, trainable_parameters
from .model import ToyT2I
from .sampling import guided_denoiser
from .schedule import schedule_sigmas
from .world import from_tensor_range, to_tensor_range


@dataclass(frozen=True)
class EditSettings:
    tune_steps: int = 60
    learning_rate: float = 3e-4
    train: str = "temporal_and_queries"
    ddim_steps: int = 25
    guidance: float = 7.5  # the pack's EI2Sample default
    seed: int = 0
    frames_per_step: int | None = None  # each tuning step's window of frames (ei2.tuning); None: the whole clip


@dataclass
class EditResult:
    edited: np.ndarray  # (F, H, W, 3) uint8
    reconstruction: np.ndarray | None  # the inverted noise sampled back with the source prompt, no CFG
    losses: list = field(default_factory=list)
    seconds: float = 0.0


@torch.no_grad()
def _invert(video: ToyT2I, x0, source_prompt: str, sigmas, frames: int):
    return ddim_invert(guided_denoiser(video, [source_prompt], 1.0, frames), x0, sigmas.flip(0))


@torch.no_grad()
def _sample(video: ToyT2I, noise, prompt: str, sigmas, frames: int, guidance: float):
    return ddim_sample(guided_denoiser(video, [prompt], guidance, frames), noise, sigmas).clamp(-1, 1)


@dataclass
class TunedClip:
    """A clip's tuned video model and its inverted noise: every edit prompt of the clip starts here."""
    video: ToyT2I
    noise: torch.Tensor
    source_prompt: str
    settings: EditSettings
    losses: list = field(default_factory=list)
    seconds: float = 0.0

    @property
    def frames(self) -> int:
        return self.noise.shape[0]

    def sigmas(self):
        return ddim_sigmas(schedule_sigmas(), self.settings.ddim_steps)

    def sample(self, prompt: str) -> np.ndarray:
        """The clip edited to ``prompt`` (CFG), ``(F, H, W, 3)`` uint8."""
        return from_tensor_range(_sample(self.video, self.noise, prompt, self.sigmas(), self.frames,
                                         self.settings.guidance).numpy())

    def reconstruct(self) -> np.ndarray:
        """The inverted noise sampled back with the source prompt and no guidance."""
        return from_tensor_range(_sample(self.video, self.noise, self.source_prompt, self.sigmas(), self.frames,
                                         1.0).numpy())


def tune(model: ToyT2I, clip: np.ndarray, source_prompt: str, inflation: Inflation,
         settings: EditSettings = EditSettings()) -> tuple[ToyT2I, list]:
    """Inflate and one-shot tune on ``clip`` ``(F, H, W, 3)`` uint8 with ``source_prompt``: ``(video model, losses)``."""
    x0 = torch.from_numpy(to_tensor_range(clip))
    video = inflate(model, inflation)
    losses = []
    if settings.tune_steps > 0 and (inflation.temporal_type != "none" or settings.train != "temporal"):
        params = trainable_parameters(video, settings.train)
        context = video.text.encode([source_prompt])

        def predict_eps(x, sigma):
            frames = x.shape[0]  # the step's window (frames_per_step), the whole clip by default
            return video.predict_eps(x, sigma.expand(frames), context.expand(frames, -1, -1), frames)

        losses = one_shot_tune(predict_eps, x0, schedule_sigmas(), params, steps=settings.tune_steps,
                               learning_rate=settings.learning_rate, seed=settings.seed,
                               frames_per_step=settings.frames_per_step)
        video.requires_grad_(False)
        settle_temporal(video)
    return video.eval(), losses


def tune_and_invert(model: ToyT2I, clip: np.ndarray, source_prompt: str, inflation: Inflation,
                    settings: EditSettings = EditSettings()) -> TunedClip:
    """Inflate, one-shot tune on ``clip`` ``(F, H, W, 3)`` uint8 with ``source_prompt``, DDIM-invert it."""
    began = time.monotonic()
    video, losses = tune(model, clip, source_prompt, inflation, settings)
    x0 = torch.from_numpy(to_tensor_range(clip))
    noise = _invert(video, x0, source_prompt, ddim_sigmas(schedule_sigmas(), settings.ddim_steps), clip.shape[0])
    return TunedClip(video, noise, source_prompt, settings, losses, time.monotonic() - began)


def edit_clip(model: ToyT2I, clip: np.ndarray, source_prompt: str, prompt: str, inflation: Inflation,
              settings: EditSettings = EditSettings(), reconstruct: bool = False) -> EditResult:
    """Edit ``clip`` ``(F, H, W, 3)`` uint8 from ``source_prompt`` to ``prompt``; ``model`` is not changed."""
    began = time.monotonic()
    tuned = tune_and_invert(model, clip, source_prompt, inflation, settings)
    reconstruction = tuned.reconstruct() if reconstruct else None
    return EditResult(tuned.sample(prompt), reconstruction, tuned.losses, time.monotonic() - began)
