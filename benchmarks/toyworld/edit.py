"""Edit a toy clip with the node pack's pipeline: inflate → one-shot tune → DDIM invert → sample.

The same ei2 core calls as the nodes, on the toy model: ``inflate.inflate`` (EI2InflateUNet, with the
pack's inflation policy ``ei2.inflation``), ``ei2.tuning.one_shot_tune`` (EI2OneShotTune; source prompt,
ε-loss on SD's discrete σ schedule, query deltas), ``ei2.ddim.ddim_invert`` with no guidance
(EI2DDIMInvert; the empty prompt, as every bundled workflow and Tune-A-Video invert, or the source
prompt), ``ei2.ddim.ddim_sample`` with the edit prompt and CFG (EI2Sample). Defaults are the bundled
workflows': 500 tuning steps at lr 3e-5, ``temporal_and_queries``, empty-prompt inversion.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ei2.ddim import ddim_invert, ddim_sample, ddim_sigmas
from ei2.inflation import InflateOptions
from ei2.structure_reuse import StructureReuse, TrajectoryRecorder, reused_steps
from ei2.tuning import one_shot_tune

from .inflate import inflate, start_tuning, tuned_model
from .model import ToyT2I
from .reuse import reuse_denoiser, reusing_structure
from .sampling import guided_denoiser
from .schedule import schedule_sigmas
from .world import from_tensor_range, to_tensor_range


INVERSION_PROMPTS = ("empty", "source")  # what EI2DDIMInvert is given: the workflows' "" or the source prompt


@dataclass(frozen=True)
class EditSettings:
    tune_steps: int = 500  # EI2OneShotTune's and the workflows' budget
    learning_rate: float = 3e-5
    train: str = "temporal_and_queries"
    ddim_steps: int = 25
    guidance: float = 7.5  # the pack's EI2Sample default
    seed: int = 0
    frames_per_step: int | None = None  # each tuning step's window of frames (ei2.tuning); None: the whole clip
    inversion: str = "empty"

    def __post_init__(self):
        if self.inversion not in INVERSION_PROMPTS:
            raise ValueError(f"inversion={self.inversion!r} is not supported; choose one of {', '.join(INVERSION_PROMPTS)}")

    def inversion_prompt(self, source_prompt: str) -> str:
        return source_prompt if self.inversion == "source" else ""


@dataclass
class EditResult:
    edited: np.ndarray  # (F, H, W, 3) uint8
    reconstruction: np.ndarray | None  # the inverted noise sampled back with the source prompt, no CFG
    losses: list = field(default_factory=list)
    seconds: float = 0.0


@torch.no_grad()
def _invert(video: ToyT2I, x0, prompt: str, sigmas, frames: int):
    """The inverted noise and the inversion's trajectory (``ei2.structure_reuse``)."""
    recorder = TrajectoryRecorder()
    noise = ddim_invert(guided_denoiser(video, [prompt], 1.0, frames), x0, sigmas.flip(0), callback=recorder)
    return noise, recorder.trajectory(noise)


@torch.no_grad()
def _sample(video: ToyT2I, noise, prompt: str, sigmas, frames: int, guidance: float, reuse=None, source_prompt=""):
    """DDIM with CFG; with ``reuse`` (a ``StructureReuse``), each reused step first runs a source pass with
    ``source_prompt``."""
    denoiser = guided_denoiser(video, [prompt], guidance, frames)
    if reuse is None:
        return ddim_sample(denoiser, noise, sigmas).clamp(-1, 1)
    with reusing_structure(video, reuse):
        denoiser = reuse_denoiser(video, denoiser, reuse, video.text.encode([source_prompt]))
        return ddim_sample(denoiser, noise, sigmas).clamp(-1, 1)


@dataclass
class TunedClip:
    """A clip's tuned video model and its inverted noise: every edit prompt of the clip starts here."""
    video: ToyT2I
    noise: torch.Tensor
    source_prompt: str
    settings: EditSettings
    losses: list = field(default_factory=list)
    seconds: float = 0.0
    noise_std: float = float("nan")  # std of the inversion's noise (x_T − x0) / σ_max: 1 for Gaussian noise
    trajectory: torch.Tensor | None = None  # the inversion's states in sampling order, for structure reuse

    @property
    def frames(self) -> int:
        return self.noise.shape[0]

    def sigmas(self):
        return ddim_sigmas(schedule_sigmas(), self.settings.ddim_steps)

    def sample(self, prompt: str, structure_reuse: float = 0.0) -> np.ndarray:
        """The clip edited to ``prompt`` (CFG), ``(F, H, W, 3)`` uint8; the first ``structure_reuse`` of the
        steps reuse the source's structure (EI2Sample's input of that name)."""
        sigmas, reuse = self.sigmas(), None
        if structure_reuse > 0:
            reuse = StructureReuse(self.trajectory, sigmas, reused_steps(len(sigmas) - 1, structure_reuse))
        edited = _sample(self.video, self.noise, prompt, sigmas, self.frames, self.settings.guidance, reuse,
                         self.settings.inversion_prompt(self.source_prompt))
        return from_tensor_range(edited.numpy())

    def reconstruct(self) -> np.ndarray:
        """The inverted noise sampled back with the inversion's prompt and no guidance (the inversion undone)."""
        return from_tensor_range(_sample(self.video, self.noise, self.settings.inversion_prompt(self.source_prompt),
                                         self.sigmas(), self.frames, 1.0).numpy())


def tune(model: ToyT2I, clip: np.ndarray, source_prompt: str, inflation: InflateOptions,
         settings: EditSettings = EditSettings(), checkpoints=()) -> tuple[ToyT2I, list, dict]:
    """Inflate and one-shot tune on ``clip`` ``(F, H, W, 3)`` uint8 with ``source_prompt``.

    Returns ``(video model, losses, {step: video model tuned that far})`` for every step count in
    ``checkpoints`` (0: inflated, untuned), so a budget curve costs one tuning run.
    """
    x0 = torch.from_numpy(to_tensor_range(clip))
    inflated = inflate(model, inflation).eval()
    snapshots = {0: inflated}
    losses = []
    if settings.tune_steps > 0:
        trainer = copy.deepcopy(inflated)
        tuning = start_tuning(trainer, settings.train)
        context = trainer.text.encode([source_prompt])

        def predict_eps(x, sigma):
            frames = x.shape[0]  # the step's window (frames_per_step), the whole clip by default
            return trainer.predict_eps(x, sigma.expand(frames), context.expand(frames, -1, -1), frames)

        def snapshot(step, loss):
            if step + 1 in checkpoints or step + 1 == settings.tune_steps:
                snapshots[step + 1] = tuned_model(inflated, trainer, tuning)

        losses = one_shot_tune(predict_eps, x0, schedule_sigmas(), tuning.params, steps=settings.tune_steps,
                               learning_rate=settings.learning_rate, seed=settings.seed,
                               frames_per_step=settings.frames_per_step, on_step=snapshot)
    return snapshots[settings.tune_steps], losses, {step: snapshots[step] for step in checkpoints}


def invert(video: ToyT2I, clip: np.ndarray, source_prompt: str, settings: EditSettings, losses=(),
           seconds: float = 0.0) -> TunedClip:
    """DDIM-invert ``clip`` with ``video`` (no guidance; the prompt ``settings.inversion`` names)."""
    began = time.monotonic()
    x0 = torch.from_numpy(to_tensor_range(clip))
    sigmas = ddim_sigmas(schedule_sigmas(), settings.ddim_steps)
    noise, trajectory = _invert(video, x0, settings.inversion_prompt(source_prompt), sigmas, clip.shape[0])
    noise_std = float(((noise - x0) / sigmas[0]).std())
    return TunedClip(video, noise, source_prompt, settings, list(losses), seconds + time.monotonic() - began, noise_std,
                     trajectory)


def tune_and_invert(model: ToyT2I, clip: np.ndarray, source_prompt: str, inflation: InflateOptions,
                    settings: EditSettings = EditSettings()) -> TunedClip:
    """Inflate, one-shot tune on ``clip`` ``(F, H, W, 3)`` uint8 with ``source_prompt``, DDIM-invert it."""
    began = time.monotonic()
    video, losses, _ = tune(model, clip, source_prompt, inflation, settings)
    return invert(video, clip, source_prompt, settings, losses, time.monotonic() - began)


def edit_clip(model: ToyT2I, clip: np.ndarray, source_prompt: str, prompt: str, inflation: InflateOptions,
              settings: EditSettings = EditSettings(), reconstruct: bool = False,
              structure_reuse: float = 0.0) -> EditResult:
    """Edit ``clip`` ``(F, H, W, 3)`` uint8 from ``source_prompt`` to ``prompt``; ``model`` is not changed."""
    began = time.monotonic()
    tuned = tune_and_invert(model, clip, source_prompt, inflation, settings)
    reconstruction = tuned.reconstruct() if reconstruct else None
    return EditResult(tuned.sample(prompt, structure_reuse), reconstruction, tuned.losses, time.monotonic() - began)
