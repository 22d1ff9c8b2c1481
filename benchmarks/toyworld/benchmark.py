"""The edit benchmark: EI² vs Tune-A-Video vs per-frame editing of toy clips, scored analytically.

Each source clip is tuned and inverted once per configuration (``edit.tune_and_invert``), then
sampled with the source prompt (reconstruction) and with one edit prompt per attribute kind
(colour, shape, background). Configurations are (attention_type, temporal_type) pairs: the
image model per frame, Tune-A-Video, EI², and the two cross ablations.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, replace

import numpy as np

from .edit import EditSettings, tune_and_invert
from .inflate import Inflation
from .metrics import clip_metrics
from .model import ToyT2I
from .world import Scene, caption, clip_scenes, render_clip

CONFIGS = {
    "per-frame": ("per_frame", "none"),
    "Tune-A-Video": ("sparse_causal", "vanilla"),
    "EI²": ("ffam", "stam"),
    "FFAM + vanilla": ("ffam", "vanilla"),
    "sparse-causal + STAM": ("sparse_causal", "stam"),
}


@dataclass(frozen=True)
class SourceClip:
    name: str
    scene: Scene
    end: tuple[float, float]
    path: str
    edits: dict  # edited scene attribute (the edit kind) -> its new value, e.g. {"colour": "blue"}

    def frames(self, count: int) -> np.ndarray:
        return render_clip(clip_scenes(self.scene, self.end, count, self.path))

    def prompt(self, **changes) -> str:
        return caption(replace(self.scene, **changes))


SOURCE_CLIPS = (
    SourceClip("red circle, line", Scene("red", "circle", "grey", (8.0, 9.0), 6.5), (24.0, 23.0), "line",
               {"colour": "blue", "shape": "square", "background": "white"}),
    SourceClip("blue square, arc", Scene("blue", "square", "white", (9.0, 16.0), 6.0), (23.0, 16.0), "arc",
               {"colour": "yellow", "shape": "circle", "background": "black"}),
    SourceClip("yellow triangle, line", Scene("yellow", "triangle", "black", (23.0, 9.0), 6.5), (9.0, 23.0), "line",
               {"colour": "red", "shape": "square", "background": "grey"}),
    SourceClip("green square, line", Scene("green", "square", "black", (9.0, 22.0), 6.0), (23.0, 10.0), "line",
               {"colour": "yellow", "shape": "triangle", "background": "white"}),
    SourceClip("red triangle, arc", Scene("red", "triangle", "white", (16.0, 8.5), 6.0), (16.0, 23.5), "arc",
               {"colour": "green", "shape": "circle", "background": "black"}),
    SourceClip("yellow circle, arc", Scene("yellow", "circle", "grey", (21.0, 21.0), 6.5), (11.0, 11.0), "arc",
               {"colour": "blue", "shape": "triangle", "background": "black"}),
)


@dataclass(frozen=True)
class Plan:
    frames: int = 8
    settings: EditSettings = EditSettings()
    configs: tuple = tuple(CONFIGS)
    clips: tuple = SOURCE_CLIPS
    strides: tuple = (1, 2, 4)  # EI² coarse_stride sweep (2 is the main table's)
    learning_rates: tuple = (1e-4, 3e-4, 1e-3)  # EI² tuning sweep, on the first clip
    tune_steps: tuple = (20, 60)


def run_case(model: ToyT2I, clip: SourceClip, inflation: Inflation, settings: EditSettings, frames: int,
             edit_kinds=None) -> list[dict]:
    """One (clip, configuration): rows of metrics, one for reconstruction and one per edit kind."""
    source = clip.frames(frames)
    tuned = tune_and_invert(model, source, clip.prompt(), inflation, settings)
    reconstruction = tuned.reconstruct()
    recon = clip_metrics(source, reconstruction, clip.prompt(), reconstruction=reconstruction)
    rows = [{"clip": clip.name, "edit": "reconstruction", "final_loss": _final_loss(tuned.losses),
             "seconds": tuned.seconds, **recon}]
    for kind, value in clip.edits.items():
        if edit_kinds is not None and kind not in edit_kinds:
            continue
        began = time.monotonic()
        prompt = clip.prompt(**{kind: value})
        edited = tuned.sample(prompt)
        rows.append({"clip": clip.name, "edit": kind, "seconds": time.monotonic() - began,
                     **clip_metrics(source, edited, prompt)})
    return rows


def _final_loss(losses):
    return float(np.mean(losses[-10:])) if losses else float("nan")


def run_plan(model: ToyT2I, plan: Plan = Plan(), log=print) -> dict:
    """All tables' raw rows: ``{"main": {config: rows}, "stride": {s: rows}, "tuning": {(lr, steps): rows}}``."""
    results = {"main": {}, "stride": {}, "tuning": {}}
    for name in plan.configs:
        attention, temporal = CONFIGS[name]
        rows = []
        for clip in plan.clips:
            rows += run_case(model, clip, Inflation(attention, temporal), plan.settings, plan.frames)
        results["main"][name] = rows
        log(f"{name}: {sum(r['seconds'] for r in rows):.0f} s")
    for stride in plan.strides:
        if stride == Inflation().coarse_stride and "EI²" in results["main"]:
            results["stride"][stride] = results["main"]["EI²"]
            continue
        results["stride"][stride] = [row for clip in plan.clips for row in run_case(
            model, clip, Inflation("ffam", "stam", coarse_stride=stride), plan.settings, plan.frames)]
        log(f"coarse_stride {stride} done")
    for lr, steps in itertools.product(plan.learning_rates, plan.tune_steps):
        settings = replace(plan.settings, learning_rate=lr, tune_steps=steps)
        results["tuning"][(lr, steps)] = run_case(model, plan.clips[0], Inflation("ffam", "stam"), settings,
                                                  plan.frames)
        log(f"lr {lr:g} × {steps} steps done")
    return results
