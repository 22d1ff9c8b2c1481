"""Markdown tables of the edit benchmark (``benchmark.run_plan``'s rows), and writing them into a document."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

BEGIN, END = "<!-- toyworld:begin -->", "<!-- toyworld:end -->"
KINDS = ("colour", "shape", "background")


def _mean(values):
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(values)) if values else math.nan


def summarise(rows: list[dict]) -> dict:
    """One line of numbers for a set of rows (reconstruction rows and edit rows mixed)."""
    edits = [r for r in rows if r["edit"] in KINDS]
    recon = [r for r in rows if r["edit"] == "reconstruction"]
    summary = {"edit_acc": _mean([r["edit_acc"] for r in edits])}
    for kind in KINDS:
        summary[f"{kind}_edit"] = _mean([r["edit_acc"] for r in edits if r["edit"] == kind])
    summary.update(
        centroid_error=_mean([r["centroid_error"] for r in edits]),
        # A shape edit changes the mask by design: IoU is about colour and background edits.
        mask_iou=_mean([r["mask_iou"] for r in edits if r["edit"] != "shape"]),
        flips=_mean([r["flips"] for r in edits]),
        jitter=_mean([r["jitter"] for r in edits]),
        recon_psnr=_mean([min(r["recon_psnr"], 99.0) for r in recon]),
        recon_acc=_mean([r["recon_acc"] for r in recon]),
        final_loss=_mean([r["final_loss"] for r in recon]),
        seconds=sum(r["seconds"] for r in rows),
    )
    return summary


COLUMNS = (("edit_acc", "edit acc", "{:.0%}"), ("colour_edit", "colour", "{:.0%}"), ("shape_edit", "shape", "{:.0%}"),
           ("background_edit", "background", "{:.0%}"), ("centroid_error", "centroid err px", "{:.2f}"),
           ("mask_iou", "mask IoU", "{:.2f}"), ("flips", "flips/clip", "{:.2f}"), ("jitter", "jitter px", "{:+.2f}"),
           ("recon_psnr", "recon PSNR dB", "{:.1f}"), ("recon_acc", "recon attrs", "{:.0%}"),
           ("final_loss", "tune loss", "{:.3f}"), ("seconds", "wall s", "{:.0f}"))


def table(first_header: str, lines: dict) -> str:
    """``lines``: label -> rows; one markdown row per label."""
    header = f"| {first_header} | " + " | ".join(title for _, title, _ in COLUMNS) + " |"
    rule = "|" + "---|" * (len(COLUMNS) + 1)
    body = []
    for label, rows in lines.items():
        s = summarise(rows)
        cells = ["–" if math.isnan(s[key]) else fmt.format(s[key]) for key, _, fmt in COLUMNS]
        body.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join([header, rule, *body])


def render_report(results: dict, plan, weights_note: str, minutes: float) -> str:
    s = plan.settings
    parts = [
        BEGIN,
        "## Toy-world edit benchmark (`python -m benchmarks.toyworld benchmark`)",
        "",
        f"{weights_note}; {len(plan.clips)} source clips of {plan.frames} frames (32×32), "
        f"edits of colour, shape and background; one-shot tuning {s.tune_steps} steps at lr {s.learning_rate:g} "
        f"({s.train}), DDIM {s.ddim_steps} steps, CFG {s.guidance:g}, seed {s.seed}; total {minutes:.1f} min on CPU. "
        "Edit acc: frames whose colour, shape and background all match the prompt (by the analytic scorer); "
        "centroid err and mask IoU: against the source frame (IoU over colour and background edits); "
        "flips: frame-to-frame changes of the read attributes; jitter: centroid acceleration minus the source's; "
        "recon: the source sampled back from its inversion with the source prompt.",
        "",
        table("configuration", results["main"]),
    ]
    if results["stride"]:
        parts += ["", "EI² (FFAM + STAM), coarse_stride sweep (all clips):", "",
                  table("coarse_stride", {str(k): v for k, v in results["stride"].items()})]
    if results["tuning"]:
        parts += ["", f"EI², tuning learning rate × steps (clip “{plan.clips[0].name}”):", "",
                  table("lr × steps", {f"{lr:g} × {steps}": v for (lr, steps), v in results["tuning"].items()})]
    parts.append(END)
    return "\n".join(parts) + "\n"


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
