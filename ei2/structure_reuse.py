"""Structure reuse: the source's layout and motion carried into the edit (Plug-and-Play, Tumanyan et al. 2023;
TokenFlow, Geyer et al. 2024), for a tuned video model or none.

Sampled from the inverted noise alone, an edit keeps the source's layout only while nothing pulls it away;
once the edit prompt takes over, shapes drift to the centre and change size. Here, for the first part of
the schedule, every model call of the edit is preceded by a *source pass*: the model denoises the source
latent at the same noise level (a state of the inversion's own trajectory) with the inversion's prompt, and
records two things the edit then uses instead of its own, in every pass (conditional and unconditional):
- the self-attention queries and keys of the decoder's transformer blocks: where each token looks, i.e. the
  layout and, through frame attention, the motion;
- the residual branch of one ResBlock of the coarsest decoder level with attention (Plug-and-Play's
  feature injection): spatial features that hold the shape but little of the appearance.
Values, cross-attention and everything else stay the edit's: that is where the new prompt acts.

Nothing is kept across model calls but the trajectory (steps × frames latents); what a source pass records
lives for one step of one window.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from einops import repeat

# EI2Sample's default and the toy ``edit`` command's: reuse for the first 80 % of the steps (Plug-and-Play's
# feature-injection share of the schedule; docs/benchmarks.md has what the toy world shows).
DEFAULT_STRUCTURE_REUSE = 0.8

def reused_steps(steps: int, structure_reuse: float) -> int:
    """How many of the first ``steps`` sampling steps reuse the source's structure (a fraction of the schedule)."""
    if not 0.0 <= structure_reuse <= 1.0:
        raise ValueError(f"structure_reuse must be between 0 and 1 (the part of the steps that keep the source's "
                         f"structure), got {structure_reuse}.")
    return round(structure_reuse * steps)


class TrajectoryRecorder:
    """A k-diffusion ``callback`` for ``ei2.ddim.ddim_invert`` that keeps every state of the inversion."""

    def __init__(self, callback=None, store=lambda x: x.clone()):
        self.states, self.callback, self.store = [], callback, store

    def __call__(self, info: dict) -> None:
        self.states.append(self.store(info["x"]))
        if self.callback is not None:
            self.callback(info)

    def trajectory(self, inverted: torch.Tensor) -> torch.Tensor:
        """``[steps, frames, ...]`` in sampling order: entry i is the source at the i-th sampling σ (σ_max first).

        The inversion starts at σ = 0 (the clean latent, which no sampling step evaluates) and ends with ``inverted``.
        """
        return torch.stack([*self.states[1:], self.store(inverted)]).flip(0)


class StructureReuse:
    """One edit's reuse: the source trajectory, which steps reuse it, and what the current source pass recorded.

    ``trajectory[i]`` is the source latent at ``sigmas[i]`` (the sampling schedule, descending); the first
    ``steps`` steps reuse it. Before each window of frames, :meth:`select_frames` names the frames it holds.
    """

    def __init__(self, trajectory: torch.Tensor, sigmas: torch.Tensor, steps: int):
        if len(trajectory) != len(sigmas) - 1:
            raise ValueError(f"the source trajectory has {len(trajectory)} states for {len(sigmas) - 1} sampling steps")
        self.trajectory, self.sigmas, self.steps = trajectory, sigmas[:-1].double().cpu(), steps
        self.frames = None  # the current window's frames (None: the whole clip)
        self.mode = None  # "record" during a source pass, "inject" during an edit pass
        self.recorded: dict[str, torch.Tensor] = {}
        self.recorded_for = None  # (step, frames) of what ``recorded`` holds

    def select_frames(self, frames) -> None:
        self.frames = None if frames is None else [int(f) for f in frames]

    def step_of(self, sigma) -> int | None:
        """The sampling step at noise level ``sigma`` if it reuses the source, else None."""
        sigma = float(sigma.flatten()[0]) if torch.is_tensor(sigma) else float(sigma)
        matches = torch.isclose(self.sigmas, torch.tensor(sigma, dtype=torch.float64), rtol=1e-4).nonzero()
        step = int(matches[0]) if len(matches) else None
        return step if step is not None and step < self.steps else None

    def source_latent(self, step: int, like: torch.Tensor) -> torch.Tensor:
        source = self.trajectory[step] if self.frames is None else self.trajectory[step][self.frames]
        return source.to(device=like.device, dtype=like.dtype)

    def denoise(self, sigma, source_pass, edit_pass):
        """``edit_pass()``, after ``source_pass(source latent)`` recorded the structure it takes (steps that reuse)."""
        step = self.step_of(sigma)
        if step is None:
            self.recorded, self.recorded_for = {}, None  # nothing more to hold
            return edit_pass()
        if self.recorded_for != (step, self.frames):  # once per step and window, however the edit's passes are split
            self.recorded, self.recorded_for = {}, None
            with self._mode("record"):
                source_pass(step)
            self.recorded_for = (step, self.frames)
        with self._mode("inject"):
            return edit_pass()

    @contextmanager
    def _mode(self, mode: str):
        self.mode = mode
        try:
            yield
        finally:
            self.mode = None

    def exchange(self, key: str, value: torch.Tensor) -> torch.Tensor:
        """In a source pass, record ``value``; in an edit pass, the recorded source value for each of its clips."""
        if self.mode == "record":
            self.recorded[key] = value
        elif self.mode == "inject" and key in self.recorded:
            source = self.recorded[key]
            clips, rest = divmod(value.shape[0], source.shape[0])
            if rest or value.shape[1:] != source.shape[1:]:
                raise ValueError(f"structure reuse: the edit's {key} {tuple(value.shape)} does not match the "
                                 f"source's {tuple(source.shape)}; the edit must run on the inverted clip's frames")
            return repeat(source, "f ... -> (clips f) ...", clips=clips)
        return value
