"""Seams of context windows in the toy world: a long clip edited in windows against one window holding it all.

Each long source clip is tuned once, as the pack tunes (``frames_per_step`` = the window length),
then DDIM-inverted and edit-sampled three ways through ``ei2.context_windows``: one window holding
the whole clip (the reference: every frame attends to every other), windows of (16, 4) with the
anchor (frame 0 in every window), and the same windows without it.

Metrics, all on the uint8 frames (pixel units 0–255) or the scorer's readings:
- ``diff_ref``: per-frame mean |run − reference|; how far windowing moves the edit, overall and in
  the frames past the first window (where the anchor can act);
- jumps: mean |frame[t+1] − frame[t]| per consecutive pair. A pair is a *seam* pair when either frame
  lies in an overlap (held by two windows, so its result is a blend), else *away*. ``seam_excess`` is
  the run's mean jump minus the reference's at the same seam pairs (the motion and the edit's own
  flicker cancel out); ``away_excess`` the same away from seams. A seam that shows adds to the first only;
- the scorer's edit accuracy and attribute flips per clip (``metrics.clip_metrics``).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ei2.context_windows import ContextWindows, context_windows
from ei2.ddim import ddim_invert, ddim_sample, ddim_sigmas

from .benchmark import SOURCE_CLIPS, SourceClip
from .edit import EditSettings, tune
from .inflate import Inflation
from .metrics import clip_metrics
from .model import ToyT2I
from .sampling import guided_denoiser
from .schedule import schedule_sigmas
from .world import from_tensor_range, to_tensor_range

RUNS = {"one window (reference)": None, "windows + anchor": True, "windows, no anchor": False}  # name -> anchor
EDIT_KINDS = ("colour", "shape", "background")  # clip i gets edit kind i mod 3: each kind appears


@dataclass(frozen=True)
class WindowPlan:
    frames: int = 48
    context: tuple = (16, 4)  # the pack's default (frames, overlap)
    settings: EditSettings = EditSettings(frames_per_step=16)
    clips: tuple = SOURCE_CLIPS[:3]
    inflation: Inflation = Inflation("ffam", "stam")


@torch.no_grad()
def invert_and_sample(video: ToyT2I, clip: np.ndarray, source_prompt: str, prompt: str, settings: EditSettings,
                      context: tuple, anchor: bool) -> np.ndarray:
    """``clip`` DDIM-inverted with ``source_prompt`` and sampled with ``prompt`` (CFG), every model call in
    windows of ``context = (frames, overlap)``; ``(F, H, W, 3)`` uint8."""
    sigmas = ddim_sigmas(schedule_sigmas(), settings.ddim_steps)
    invert = ContextWindows(*context, anchor=anchor).sampler(ddim_invert)
    sample = ContextWindows(*context, anchor=anchor).sampler(ddim_sample)
    x0 = torch.from_numpy(to_tensor_range(clip))
    noise = invert(guided_denoiser(video, [source_prompt], 1.0, frames=None), x0, sigmas.flip(0))
    edited = sample(guided_denoiser(video, [prompt], settings.guidance, frames=None), noise, sigmas)
    return from_tensor_range(edited.clamp(-1, 1).numpy())


def overlap_frames(frames: int, context: tuple) -> np.ndarray:
    """Bool ``(F,)``: the frames held by more than one window (their result is a blend)."""
    count = np.zeros(frames, int)
    for window in context_windows(frames, *context):
        count[window.start:window.stop] += 1
    return count > 1


def seam_pairs(frames: int, context: tuple) -> np.ndarray:
    """Bool ``(F − 1,)``: pair ``(t, t + 1)`` is a seam pair when either frame lies in an overlap."""
    overlap = overlap_frames(frames, context)
    return overlap[:-1] | overlap[1:]


def frame_jumps(frames: np.ndarray) -> np.ndarray:
    """``(F − 1,)`` mean |frame[t+1] − frame[t]| in pixel units."""
    values = frames.astype(np.float64)
    return np.abs(values[1:] - values[:-1]).mean(axis=(1, 2, 3))


def seam_metrics(edited: np.ndarray, reference: np.ndarray, seams: np.ndarray, first_window: int) -> dict:
    """Windowing's footprint on ``edited`` against ``reference`` (see the module doc)."""
    diff = np.abs(edited.astype(np.float64) - reference.astype(np.float64)).mean(axis=(1, 2, 3))
    jumps, ref_jumps = frame_jumps(edited), frame_jumps(reference)
    away = ~seams
    return {"diff_ref": float(diff.mean()), "diff_ref_later": float(diff[first_window:].mean()),
            "jump_seam": float(jumps[seams].mean()), "jump_away": float(jumps[away].mean()),
            "seam_excess": float((jumps - ref_jumps)[seams].mean()),
            "away_excess": float((jumps - ref_jumps)[away].mean())}


@dataclass
class CaseResult:
    clip: str
    edit: str
    rows: dict = field(default_factory=dict)  # run name -> metrics
    seconds: float = 0.0


def run_case(model: ToyT2I, clip: SourceClip, kind: str, plan: WindowPlan) -> CaseResult:
    """One clip and one edit, the three runs."""
    began = time.monotonic()
    source = clip.frames(plan.frames)
    prompt = clip.prompt(**{kind: clip.edits[kind]})
    video, _ = tune(model, source, clip.prompt(), plan.inflation, plan.settings)
    seams = seam_pairs(plan.frames, plan.context)
    result = CaseResult(clip.name, kind)
    reference = None
    for name, anchor in RUNS.items():
        context = (plan.frames, 0) if anchor is None else plan.context
        edited = invert_and_sample(video, source, clip.prompt(), prompt, plan.settings, context, bool(anchor))
        reference = edited if reference is None else reference
        scored = clip_metrics(source, edited, prompt)
        result.rows[name] = {**seam_metrics(edited, reference, seams, plan.context[0]),
                             "edit_acc": scored["edit_acc"], "flips": scored["flips"]}
    result.seconds = time.monotonic() - began
    return result


def run_plan(model: ToyT2I, plan: WindowPlan = WindowPlan(), log=print) -> list[CaseResult]:
    results = []
    for index, clip in enumerate(plan.clips):
        kind = EDIT_KINDS[index % len(EDIT_KINDS)]
        results.append(run_case(model, clip, kind, plan))
        log(f"{clip.name}, {kind}: {results[-1].seconds:.0f} s")
    return results


# --- the report ------------------------------------------------------------------------------------

COLUMNS = (("diff_ref", "Δ ref px", "{:.2f}"), ("diff_ref_later", "Δ ref px, frames ≥ 16", "{:.2f}"),
           ("jump_seam", "jump at seams px", "{:.2f}"), ("jump_away", "jump away px", "{:.2f}"),
           ("seam_excess", "seam jump − ref", "{:+.2f}"), ("away_excess", "away jump − ref", "{:+.2f}"),
           ("edit_acc", "edit acc", "{:.0%}"), ("flips", "flips/clip", "{:.2f}"))


def _mean_and_error(values) -> tuple[float, float]:
    """Mean and its standard error over cases (NaN error for one case)."""
    values = np.asarray(values, float)
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else math.nan


def anchor_effect(results: list[CaseResult], key: str) -> tuple[float, float]:
    """Paired over cases: anchor − no anchor, mean and standard error."""
    return _mean_and_error([r.rows["windows + anchor"][key] - r.rows["windows, no anchor"][key] for r in results])


def render_table(results: list[CaseResult], plan: WindowPlan, minutes: float, note: str = "") -> str:
    s = plan.settings
    first = f"{plan.context[0]}"
    header = "| run | " + " | ".join(title.replace("16", first) for _, title, _ in COLUMNS) + " |"
    lines = [f"### Context windows: seams against one window (`python -m benchmarks.toyworld windows`)", "",
             f"{note}{len(results)} clips of {plan.frames} frames (32×32), one edit each "
             f"({', '.join(f'{r.clip}: {r.edit}' for r in results)}); EI² (ffam s={plan.inflation.coarse_stride} + "
             f"{plan.inflation.temporal_type}) tuned once per clip, {s.tune_steps} steps at lr {s.learning_rate:g}, "
             f"frames_per_step={s.frames_per_step}; DDIM {s.ddim_steps} steps, CFG {s.guidance:g}; windows "
             f"{plan.context} = {len(context_windows(plan.frames, *plan.context))} windows, "
             f"{int(seam_pairs(plan.frames, plan.context).sum())} of {plan.frames - 1} frame pairs at seams; "
             f"{minutes:.1f} min on CPU. Means over clips.", "",
             header, "|" + "---|" * (len(COLUMNS) + 1)]
    for name in RUNS:
        cells = [fmt.format(float(np.mean([r.rows[name][key] for r in results]))) for key, _, fmt in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    effects = []
    for key, title, fmt in COLUMNS:
        mean, error = anchor_effect(results, key)
        scale = 100 if fmt.endswith("%}") else 1
        effects.append(f"{title.replace('16', first)} {mean * scale:+.2f} ± {error * scale:.2f}")
    lines += ["", "Anchor − no anchor, paired over clips (mean ± standard error; × 100 for edit acc): "
              + "; ".join(effects) + "."]
    return "\n".join(lines) + "\n"


def quick_plan(plan: WindowPlan) -> WindowPlan:
    return replace(plan, clips=plan.clips[:1])
