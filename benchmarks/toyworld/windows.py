"""Seams of context windows in the toy world: a long clip edited in windows against one window holding it all.

Each long source clip is tuned once, as the pack tunes (``frames_per_step`` = the window length),
then DDIM-inverted and edit-sampled once per entry of the run table (``window_runs``: name → context
frames, overlap, anchor) through ``ei2.context_windows``: one window holding the whole clip (the
reference: every frame attends to every other); windows of (16, 4) with the anchor (frame 0 in every
window) and without it (the pack's default); and, without the anchor, overlaps 0 (hard cuts: no
blending), 2 and 8 in the same 16-frame windows.

Metrics, all on the uint8 frames (pixel units 0–255) or the scorer's readings:
- ``diff_ref``: per-frame mean |run − reference|; how far windowing moves the edit, overall and in
  the frames past the first window (where the anchor can act);
- jumps: mean |frame[t+1] − frame[t]| per consecutive pair. A pair is a *seam* pair, for the run's own
  windows, when either frame lies in an overlap (held by two windows, so its result is a blend) or no
  window holds both frames (the pair straddles a hard cut, overlap 0), else *away*. ``seam_excess`` is
  the run's mean jump minus the reference's at the same seam pairs (the motion and the edit's own
  flicker cancel out); ``away_excess`` the same away from seams. A seam that shows adds to the first only;
- the scorer's edit accuracy and attribute flips per clip (``metrics.clip_metrics``);
- the cost: windows, and UNet frame evaluations per model call (every window's frames, plus the anchor
  in each window after the first) over the clip's frames, i.e. relative to the one-window run.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ei2.context_windows import DEFAULT_CONTEXT, ContextWindows, context_windows
from ei2.ddim import ddim_invert, ddim_sample, ddim_sigmas
from ei2.inflation import InflateOptions

from .clips import SOURCE_CLIPS, SourceClip
from .edit import EditSettings, tune
from .metrics import clip_metrics
from .model import ToyT2I
from .sampling import guided_denoiser
from .schedule import schedule_sigmas
from .world import from_tensor_range, to_tensor_range


@dataclass(frozen=True)
class Run:
    """One row of the run table: ``frames`` per window (None: one window holding the whole clip), ``overlap``,
    ``anchor``."""
    frames: int | None
    overlap: int = 0
    anchor: bool = False

    def context(self, clip_frames: int) -> tuple:
        return (clip_frames, 0) if self.frames is None else (self.frames, self.overlap)

    def label(self, clip_frames: int) -> str:
        return f"{clip_frames} (whole clip)" if self.frames is None else f"({self.frames}, {self.overlap})"


REFERENCE, BASELINE = "one window (reference)", "windows, no anchor"  # BASELINE: what the overlaps are paired with
ANCHORED = "windows + anchor"


def window_runs(frames: int = DEFAULT_CONTEXT.frames, overlap: int = DEFAULT_CONTEXT.overlap,
                overlaps: tuple = (0, 2, 8)) -> dict:
    """The run table, name → ``Run``; the defaults give

    one window (reference)  whole clip, overlap 0, no anchor
    windows + anchor        16, 4, anchor
    windows, no anchor      16, 4            (the pack's default; the baseline of the paired differences)
    overlap 0 (hard cuts)   16, 0
    overlap 2               16, 2
    overlap 8               16, 8
    """
    runs = {REFERENCE: Run(None), ANCHORED: Run(frames, overlap, True), BASELINE: Run(frames, overlap)}
    for other in overlaps:
        runs[f"overlap {other}" + " (hard cuts)" * (other == 0)] = Run(frames, other)
    return runs


RUNS = window_runs()
EDIT_KINDS = ("colour", "shape", "background")  # clip i gets edit kind i mod 3: each kind appears


@dataclass(frozen=True)
class WindowPlan:
    frames: int = 48
    runs: dict = field(default_factory=lambda: dict(RUNS))  # name -> Run; the first is the reference
    settings: EditSettings = EditSettings(frames_per_step=DEFAULT_CONTEXT.frames)
    clips: tuple = SOURCE_CLIPS[:3]
    inflation: InflateOptions = InflateOptions(attention_type="ffam", temporal_type="stam")

    @property
    def context(self) -> tuple:
        """The baseline's (frames, overlap): the reference's seam columns are read at its seams."""
        return self.runs[BASELINE].context(self.frames)


@torch.no_grad()
def invert_and_sample(video: ToyT2I, clip: np.ndarray, source_prompt: str, prompt: str, settings: EditSettings,
                      context: tuple, anchor: bool) -> np.ndarray:
    """``clip`` DDIM-inverted (with the prompt ``settings.inversion`` names) and sampled with ``prompt`` (CFG), every
    model call in windows of ``context = (frames, overlap)``; ``(F, H, W, 3)`` uint8."""
    sigmas = ddim_sigmas(schedule_sigmas(), settings.ddim_steps)
    invert = ContextWindows(*context, anchor=anchor).sampler(ddim_invert)
    sample = ContextWindows(*context, anchor=anchor).sampler(ddim_sample)
    x0 = torch.from_numpy(to_tensor_range(clip))
    noise = invert(guided_denoiser(video, [settings.inversion_prompt(source_prompt)], 1.0, frames=None), x0, sigmas.flip(0))
    edited = sample(guided_denoiser(video, [prompt], settings.guidance, frames=None), noise, sigmas)
    return from_tensor_range(edited.clamp(-1, 1).numpy())


def overlap_frames(frames: int, context: tuple) -> np.ndarray:
    """Bool ``(F,)``: the frames held by more than one window (their result is a blend)."""
    count = np.zeros(frames, int)
    for window in context_windows(frames, *context):
        count[window.start:window.stop] += 1
    return count > 1


def seam_pairs(frames: int, context: tuple) -> np.ndarray:
    """Bool ``(F − 1,)``: pair ``(t, t + 1)`` is a seam pair when either frame lies in an overlap, or when no
    window holds both frames (a hard cut between windows that do not overlap)."""
    overlap = overlap_frames(frames, context)
    together = np.zeros(frames - 1, bool)
    for window in context_windows(frames, *context):
        together[window.start:window.stop - 1] = True
    return overlap[:-1] | overlap[1:] | ~together


def unet_frames(frames: int, run: Run) -> float:
    """UNet frame evaluations per model call over the clip's frames (1 for one window): every window's frames,
    plus the anchor in each window that does not start at frame 0."""
    windows = context_windows(frames, *run.context(frames))
    return sum(len(w) + (run.anchor and w.start > 0) for w in windows) / frames


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


def run_case(model: ToyT2I, clip: SourceClip, kind: str, plan: WindowPlan, log=None) -> CaseResult:
    """One clip and one edit, every run of the table (the first is the reference)."""
    began = time.monotonic()
    source = clip.frames(plan.frames)
    prompt = clip.prompt(**{kind: clip.edits[kind]})
    video, _, _ = tune(model, source, clip.prompt(), plan.inflation, plan.settings)
    result = CaseResult(clip.name, kind)
    reference = None
    for name, run in plan.runs.items():
        run_began = time.monotonic()
        context = run.context(plan.frames)
        edited = invert_and_sample(video, source, clip.prompt(), prompt, plan.settings, context, run.anchor)
        reference = edited if reference is None else reference
        seams = seam_pairs(plan.frames, plan.context if run.frames is None else context)
        scored = clip_metrics(source, edited, prompt)
        result.rows[name] = {**seam_metrics(edited, reference, seams, plan.context[0]),
                             "edit_acc": scored["edit_acc"], "flips": scored["flips"]}
        if log is not None:
            log(f"  {name}: {time.monotonic() - run_began:.0f} s")
    result.seconds = time.monotonic() - began
    return result


def run_plan(model: ToyT2I, plan: WindowPlan = WindowPlan(), log=print) -> list[CaseResult]:
    results = []
    for index, clip in enumerate(plan.clips):
        kind = EDIT_KINDS[index % len(EDIT_KINDS)]
        results.append(run_case(model, clip, kind, plan, log))
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


def paired(results: list[CaseResult], run: str, against: str, key: str) -> tuple[float, float]:
    """Paired over cases: ``run`` − ``against``, mean and standard error."""
    return _mean_and_error([r.rows[run][key] - r.rows[against][key] for r in results])


def anchor_effect(results: list[CaseResult], key: str) -> tuple[float, float]:
    """Paired over cases: anchor − no anchor, mean and standard error."""
    return paired(results, ANCHORED, BASELINE, key)


def overlap_runs(plan: WindowPlan) -> list[str]:
    """The runs without the anchor that differ from the baseline in their overlap only."""
    base = plan.runs[BASELINE]
    return [name for name, run in plan.runs.items()
            if run.frames == base.frames and not run.anchor and run.overlap != base.overlap]


def render_table(results: list[CaseResult], plan: WindowPlan, minutes: float, note: str = "") -> str:
    s = plan.settings
    first = f"{plan.context[0]}"
    titles = [title.replace("16", first) for _, title, _ in COLUMNS]
    header = "| run | context (frames, overlap) | windows | UNet frames × | seam pairs | " + " | ".join(titles) + " |"
    lines = ["### Context windows: seams against one window (`python -m benchmarks.toyworld windows`)", "",
             f"{note}{len(results)} clips of {plan.frames} frames (32×32), one edit each "
             f"({', '.join(f'{r.clip}: {r.edit}' for r in results)}); EI² (ffam s={plan.inflation.coarse_stride} + "
             f"{plan.inflation.temporal_type}) tuned once per clip, {s.tune_steps} steps at lr {s.learning_rate:g}, "
             f"frames_per_step={s.frames_per_step}; DDIM {s.ddim_steps} steps, CFG {s.guidance:g}; "
             f"{minutes:.1f} min on CPU. Means over clips. UNet frames ×: UNet frame evaluations per step over the "
             f"one-window run's; seam pairs: of the {plan.frames - 1} frame pairs, those touching an overlap or "
             f"straddling a hard cut, per run (the reference's jumps are read at {plan.context}'s).", "",
             header, "|" + "---|" * (len(COLUMNS) + 5)]
    for name, run in plan.runs.items():
        context = plan.context if run.frames is None else run.context(plan.frames)
        cost = [run.label(plan.frames) + " + anchor" * run.anchor,
                str(len(context_windows(plan.frames, *run.context(plan.frames)))),
                f"{unet_frames(plan.frames, run):.2f}", str(int(seam_pairs(plan.frames, context).sum()))]
        cells = [fmt.format(float(np.mean([r.rows[name][key] for r in results]))) for key, _, fmt in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cost + cells) + " |")
    effects = []
    for (key, _, fmt), title in zip(COLUMNS, titles):
        mean, error = anchor_effect(results, key)
        scale = 100 if fmt.endswith("%}") else 1
        effects.append(f"{title} {mean * scale:+.2f} ± {error * scale:.2f}")
    lines += ["", "Anchor − no anchor, paired over clips (mean ± standard error; × 100 for edit acc): "
              + "; ".join(effects) + "."]
    others = overlap_runs(plan)
    if others:
        base = plan.runs[BASELINE].overlap
        pairs = []
        for name in others:
            seam, seam_error = paired(results, name, BASELINE, "seam_excess")
            diff, diff_error = paired(results, name, BASELINE, "diff_ref")
            pairs.append(f"{name}: {seam:+.2f} ± {seam_error:.2f} seam jump − ref, {diff:+.2f} ± {diff_error:.2f} "
                         "Δ ref px")
        lines += ["", f"Each overlap − overlap {base} (no anchor), paired over clips (mean ± standard error): "
                  + "; ".join(pairs) + "."]
    return "\n".join(lines) + "\n"


def quick_plan(plan: WindowPlan) -> WindowPlan:
    return replace(plan, clips=plan.clips[:1])
