"""Markdown tables of the edit benchmark (``benchmark.run_plan``'s rows), and writing them into a document.

Every number is first averaged per clip (over that clip's edits of the kinds the metric is about), then
over clips; comparisons are paired over clips with a bootstrap 95 % interval (``stats.py``).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .benchmark import ABLATIONS, CONFIGS, MAIN, SWEPT, Plan
from .stats import MIN_CLIPS, paired_difference

BEGIN, END = "<!-- toyworld:begin -->", "<!-- toyworld:end -->"
KINDS = ("colour", "shape", "background")
KEEP_SHAPE = ("colour", "background")  # a shape edit changes the mask by design
RECON = ("reconstruction",)

# key, column title, format, which rows' values (edit kinds, or the reconstruction)
METRICS = {
    "edit_acc": ("edit acc", "{:.1%}", KINDS),
    "colour_edit": ("colour", "{:.0%}", ("colour",)),
    "shape_edit": ("shape", "{:.0%}", ("shape",)),
    "background_edit": ("background", "{:.0%}", ("background",)),
    "centroid_error": ("centroid err px", "{:.2f}", KINDS),
    "centroid_kept": ("centroid err px (colour, bg)", "{:.2f}", KEEP_SHAPE),
    "centroid_shape": ("centroid err px (shape)", "{:.2f}", ("shape",)),
    "mask_iou": ("mask IoU", "{:.2f}", KEEP_SHAPE),
    "area_ratio": ("area ratio", "{:.2f}", KEEP_SHAPE),
    "flips": ("flips/clip", "{:.2f}", KINDS),
    "jitter": ("jitter px", "{:+.2f}", KINDS),
    "noise_std": ("inverted noise std", "{:.2f}", RECON),
    "recon_psnr": ("recon PSNR dB", "{:.1f}", RECON),
    "recon_acc": ("recon attrs", "{:.0%}", RECON),
}
SUMMARY = ("edit_acc", "colour_edit", "shape_edit", "background_edit", "centroid_error", "mask_iou", "area_ratio",
           "flips", "jitter", "noise_std", "recon_psnr")
COMPARED = ("edit_acc", "centroid_error", "mask_iou", "area_ratio", "flips", "jitter")


def _value(row: dict, metric: str) -> float:
    key = "edit_acc" if metric.endswith("_edit") else "centroid_error" if metric.startswith("centroid") else metric
    value = row.get(key, math.nan)
    return min(value, 99.0) if metric == "recon_psnr" else value  # a perfect reconstruction is +inf dB


def per_clip(rows: list[dict], metric: str) -> dict:
    """``clip -> mean of metric`` over the rows of the kinds ``metric`` is about."""
    kinds = METRICS[metric][2]
    values = {}
    for row in rows:
        if row["edit"] in kinds:
            values.setdefault(row["clip"], []).append(_value(row, metric))
    return {clip: float(np.nanmean(v)) if not np.isnan(v).all() else math.nan for clip, v in values.items()}


def mean(rows: list[dict], metric: str) -> float:
    values = [v for v in per_clip(rows, metric).values() if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def select(rows: list[dict], config: str, settings, **variant) -> list[dict]:
    """The rows of ``config`` at the plan's settings, without structure reuse, except where ``variant`` (steps,
    inversion, guidance, learning_rate, structure_reuse) says otherwise. Reconstruction rows match any guidance."""
    wanted = {"steps": settings.tune_steps, "inversion": settings.inversion, "guidance": CONFIGS[config][2],
              "learning_rate": settings.learning_rate, "structure_reuse": 0.0, **variant}
    return [r for r in rows if r["config"] == config
            and all(r[k] == v for k, v in wanted.items() if not (k == "guidance" and r["edit"] in RECON))]


def _spread(values: dict) -> str:
    v = np.array([x for x in values.values() if not math.isnan(x)])
    return f"min {v.min():.2f}, median {np.median(v):.2f}, max {v.max():.2f} over {len(v)} clips" if len(v) else "–"


def _cell(value: float, fmt: str) -> str:
    return "–" if math.isnan(value) else fmt.format(value)


def summary_table(first_header: str, lines: dict, metrics=SUMMARY) -> str:
    """``lines``: label -> rows; one markdown row of per-clip means per label."""
    header = f"| {first_header} | clips | " + " | ".join(METRICS[m][0] for m in metrics) + " |"
    body = [f"| {label} | {len({r['clip'] for r in rows})} | "
            + " | ".join(_cell(mean(rows, m), METRICS[m][1]) for m in metrics) + " |"
            for label, rows in lines.items()]
    return "\n".join([header, "|" + "---|" * (len(metrics) + 2), *body])


def difference_cell(a: list[dict], b: list[dict], metric: str) -> str:
    d = paired_difference(per_clip(a, metric), per_clip(b, metric))
    if d.clips == 0:
        return "–"
    scale, unit = (100, " pt") if metric == "edit_acc" else (1, "")
    text = f"{d.mean * scale:+.2f} [{d.low * scale:+.2f}, {d.high * scale:+.2f}]{unit}"
    return f"**{text}**" if d.significant else text


def difference_table(first_header: str, pairs: dict, metrics=COMPARED) -> str:
    """``pairs``: label -> (rows A, rows B); cells are A − B paired over clips, bold where the interval excludes 0."""
    header = f"| {first_header} | clips | " + " | ".join(METRICS[m][0] for m in metrics) + " |"
    body = []
    for label, (a, b) in pairs.items():
        clips = len({r["clip"] for r in a} & {r["clip"] for r in b})
        body.append(f"| {label} | {clips} | " + " | ".join(difference_cell(a, b, m) for m in metrics) + " |")
    return "\n".join([header, "|" + "---|" * (len(metrics) + 2), *body])


def render_report(rows: list[dict], plan: Plan, weights_note: str, core_hours: float) -> str:
    s = plan.settings
    subset = {clip.name for clip in plan.clips[:plan.subset]}

    def main(config, **variant):
        return select(rows, config, s, **variant)

    def on_subset(selected):
        return [r for r in selected if r["clip"] in subset]

    present = [c for c in MAIN + ABLATIONS if main(c)]
    parts = [
        BEGIN,
        "## Toy-world edit benchmark (`python -m benchmarks.toyworld benchmark`)",
        "",
        f"{weights_note}; {len({r['clip'] for r in rows})} source clips of {plan.frames} frames (32×32) from "
        "`clips.py`'s family (diagonals, lines, arcs, zig-zags, slow drifts, starts at an edge; every shape, colour, "
        f"background and the smallest and largest sizes), one edit of each kind (colour, shape, background) per clip. "
        f"The workflows' path: one-shot tuning {s.tune_steps} steps at lr {s.learning_rate:g} ({s.train}, query deltas), "
        f"DDIM {s.ddim_steps} steps, {s.inversion}-prompt inversion, each configuration's workflow CFG "
        f"({', '.join(f'{c} {CONFIGS[c][2]:g}' for c in present)}), seed {s.seed}; the jobs took {core_hours:.1f} h "
        "of one CPU core (one worker process per core). "
        "Per clip, then over clips: edit acc — frames whose colour, shape and background all match the prompt (analytic "
        "scorer); centroid err — against the source frame, all edits; mask IoU and area ratio (edited area / source "
        "area) — colour and background edits; flips — frame-to-frame changes of the read attributes; jitter — centroid "
        "acceleration minus the source's; inverted noise std — std of (x_T − x0)/σ_max of the inversion (Gaussian "
        "noise: 1); recon — the inversion sampled back with its own prompt, no CFG. "
        f"The ablations and sweeps run on the first {plan.subset} clips.",
        "",
        summary_table("configuration", {c: main(c) for c in present}),
        "",
        *[f"Inverted noise std per clip ({c}, {s.inversion}-prompt inversion): " + _spread(per_clip(main(c), "noise_std"))
          + "." for c in present[:1]],
        "",
        "Paired differences over clips, mean [95 % bootstrap interval]; **bold**: the interval excludes 0 "
        f"(called only from {MIN_CLIPS} clips on); edit acc in percentage points.",
        "",
        difference_table("comparison", {
            "EI² − Tune-A-Video": (main("EI²"), main("Tune-A-Video")),
            "EI² − per-frame": (main("EI²"), main("per-frame")),
            "FFAM + vanilla − EI²": (main("FFAM + vanilla"), on_subset(main("EI²"))),
            "sparse-causal + STAM − Tune-A-Video": (main("sparse-causal + STAM"), on_subset(main("Tune-A-Video"))),
        }),
    ]
    swept = [c for c in SWEPT if on_subset(main(c))]
    if swept and plan.budgets:
        parts += ["", "Budget curve (the sweep clips; the shorter budgets are checkpoints of the "
                  f"{s.tune_steps}-step run, 0 = inflated, not tuned), and other learning rates at {plan.lr_steps} steps; "
                  f"differences against {s.tune_steps} steps at lr {s.learning_rate:g}:", ""]
        runs = [(c, f"{c}, {steps} steps", on_subset(main(c, steps=steps)))
                for c in swept for steps in sorted({*plan.budgets, s.tune_steps})]
        runs += [(c, f"{c}, lr {lr:g} × {plan.lr_steps}", main(c, steps=plan.lr_steps, learning_rate=lr))
                 for c in swept for lr in plan.learning_rates]
        parts.append(summary_table("run", {label: r for _, label, r in runs if r},
                                   ("edit_acc", "centroid_error", "mask_iou", "area_ratio", "flips", "noise_std")))
        parts += ["", difference_table("run − full budget", {
            label: (r, on_subset(main(c))) for c, label, r in runs if r and r != on_subset(main(c))})]
    if swept and plan.guidances:
        parts += ["", f"Guidance sweep (the sweep clips, {s.tune_steps} steps), differences against each "
                  "configuration's workflow CFG:", ""]
        runs = [(c, f"{c}, CFG {g:g}", on_subset(main(c, guidance=g)))
                for c in swept for g in sorted({*plan.guidances, CONFIGS[c][2]})]
        parts.append(summary_table("run", {label: r for _, label, r in runs if r},
                                   ("edit_acc", "colour_edit", "shape_edit", "background_edit", "centroid_error",
                                    "mask_iou", "area_ratio", "flips")))
        parts += ["", difference_table("run − workflow CFG", {
            label: (r, on_subset(main(c))) for c, label, r in runs if r and r != on_subset(main(c))})]
    other = "source" if s.inversion == "empty" else "empty"
    inversions = {f"{c}, {inv}-prompt inversion": on_subset(main(c, inversion=inv)) for c in swept for inv in (s.inversion, other)}
    inversions = {label: r for label, r in inversions.items() if r}
    if len(inversions) > len(swept):
        parts += ["", "Inversion prompt (the sweep clips): the workflows invert with the empty prompt, "
                  "Tune-A-Video's paper setting; the source prompt is the option:", "",
                  summary_table("run", inversions, ("noise_std", "recon_psnr", "recon_acc", "edit_acc", "centroid_error",
                                                    "mask_iou", "area_ratio")),
                  "", difference_table(f"{other} − {s.inversion}", {
                      c: (main(c, inversion=other), on_subset(main(c))) for c in swept if main(c, inversion=other)})]
    parts += _structure_section(plan, main)
    parts.append(END)
    return "\n".join(parts) + "\n"


STRUCTURE = ("edit_acc", "colour_edit", "shape_edit", "background_edit", "mask_iou", "centroid_kept", "centroid_shape",
             "area_ratio", "flips")


def _structure_section(plan: Plan, main) -> list[str]:
    """Structure reuse against today's EI² (no reuse), paired over the clips that have both."""
    runs = {}
    for reuse in plan.structure_reuse:
        runs[f"EI² + reuse {reuse:g}"] = main("EI²", structure_reuse=reuse)
        runs[f"quick edit (EI², not tuned) + reuse {reuse:g}"] = main("EI²", structure_reuse=reuse, steps=0)
        runs[f"Tune-A-Video + reuse {reuse:g}"] = main("Tune-A-Video", structure_reuse=reuse)
    runs = {label: r for label, r in runs.items() if r}
    if not runs:
        return []
    lines = {"EI² (no reuse)": main("EI²"), **runs, "Tune-A-Video (no reuse)": main("Tune-A-Video")}
    seconds = {label: [r["sample_seconds"] for r in rows if "sample_seconds" in r] for label, rows in runs.items()}
    return ["", "Structure reuse (EI2Sample's `structure_reuse`: the first part of the steps take the source pass's "
            "decoder self-attention queries/keys and coarse ResBlock residual; `ei2/structure_reuse.py`). Centroid "
            "error split by edit kind: a colour or background edit should keep the shape where it was, a shape edit "
            "should put the new shape there. The quick edit samples the inflated, untuned model (no EI2OneShotTune).",
            "", summary_table("run", lines, STRUCTURE),
            "", difference_table("run − EI² (no reuse)", {label: (r, main("EI²")) for label, r in runs.items()},
                                 ("edit_acc", "mask_iou", "centroid_kept", "centroid_shape", "area_ratio", "flips")),
            "", "Sampling time with reuse (one CPU core, three edits per clip): "
            + "; ".join(f"{label} {np.mean(s):.1f} s per edit" for label, s in seconds.items() if s) + "."]


def write_section(path: Path, section: str, before_marker: str | None = None) -> None:
    """Replace the toyworld section of ``path`` (or insert it before ``before_marker``, else append)."""
    path = Path(path)
    text = path.read_text() if path.exists() else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section.rstrip("\n") + rest.split(END, 1)[1]
    elif before_marker and before_marker in text:
        head, tail = text.split(before_marker, 1)
        text = head + section + "\n" + before_marker + tail
    else:
        text = text + ("\n" if text and not text.endswith("\n") else "") + section
    path.write_text(text)
