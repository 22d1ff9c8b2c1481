"""Whole-UNet forward and forward+backward per step, per attention type × temporal type, and cost growth.

    python -m benchmarks.unet [--quick] [--device cpu|cuda] [--dtype float32|float16|bfloat16]

An SD1.5-shaped UNet (4 levels, 2 res blocks, 16 transformer blocks, 8 heads, context 768) with
random weights, inflated by the pack's own ``inflate``; one clip of F frames, one prompt (no CFG
batch). Forward+backward: gradients flow to the input latents and the temporal modules (the UNet's
weights are frozen, as in tuning), loss = mean square of the output. Every configuration runs in a
fresh process; times and peaks are reported as ratios to per_frame/none (the image model) measured
in the same run, absolute values only on CUDA.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402

ATTENTIONS = (("per_frame", "per_frame", 1), ("ffam s=2", "ffam", 2), ("ffam s=4", "ffam", 4),
              ("sparse_causal", "sparse_causal", 1), ("full", "full", 1))
TEMPORALS = ("none", "stam", "vanilla")
BASELINE = ("per_frame", "none")
GROWTH = (("per_frame", "none"), ("ffam s=2", "stam"), ("full", "none"))
ATTENTION = {label: (kind, stride) for label, kind, stride in ATTENTIONS}


def plan(quick: bool, device: str):
    """(width, grid, growth, notes): grid configs (res, F, attention, temporal) run fwd and fwd+bwd, one
    process each; growth configs (attention, temporal, F values at the base res, resolutions at F=8) run
    forward only, all in one process."""
    everything = [(a, t) for a, *_ in ATTENTIONS for t in TEMPORALS]
    notes = []
    if device == "cuda":
        width = 320
        resolutions, frames = ((512,), (8,)) if quick else ((256, 512), (8, 16, 24))
        grid = [(r, f, a, t) for r in resolutions for f in frames for a, t in everything]
        growth = ((8, 16, 24), 512, (256, 384, 512))
        if quick:
            notes.append("--quick on cuda: grid at 512², F=8 only")
        return width, grid, growth, notes
    # 2 CPU cores: a full-width SD1.5 UNet takes ~50 s per forward of 8 frames at 256² and minutes per
    # backward, so CPU runs the SD1.5 topology (4 levels, 16 transformer blocks, 8 heads) at 1/5 width.
    width = 64
    notes.append("cpu: SD1.5 topology at model_channels=64 (1/5 of 320): a full-width step takes minutes on "
                 "2 cores. Narrow channels make attention a larger share of the cost than in the real UNet, "
                 "so the attention ratios here overstate the full-width differences.")
    if quick:
        grid = [(128, 8, a, t) for a, t in everything]
        growth = ((4, 8, 16), 128, (96, 128, 192))
        notes += ["cpu --quick: grid at 128², F=8 only; 256²/512² and F=16/24 skipped (minutes per config here); growth fits over F ∈ {4, 8, 16} and 96²–192²",
                  ]
    else:
        grid = [(256, 8, a, t) for a, t in everything] + [(256, 16, a, t) for a, t in GROWTH]
        growth = ((4, 8, 16), 256, (128, 192, 256))
        notes.append("cpu: 512² and F=24 skipped (run with --device cuda for the full grid)")
    return width, grid, growth, notes


def _setup(device, dtype_name, width, attention, temporal):
    import torch

    comfy, pack = common.comfyui(device)
    adapter = pack.nodes.adapter
    dtype = getattr(torch, dtype_name)
    kind, stride = ATTENTION[attention]
    model = common.sd15_model(device, dtype, inference=False, model_channels=width)
    model.model.diffusion_model.requires_grad_(False)
    inflated = adapter.patching.inflate(model, adapter.patching.InflateOptions(attention_type=kind, coarse_stride=stride, temporal_type=temporal))
    import comfy.model_management  # importable once ComfyUI is

    # Loading applies the inflated model's patches (its temporal modules run after each block's feed-forward).
    comfy.model_management.load_models_gpu([inflated, *inflated.get_nested_additional_models()])

    def inputs(f, side):
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(f, 4, side, side, generator=generator).to(device, dtype)
        context = torch.randn(1, 77, 768, generator=generator).to(device, dtype).expand(f, -1, -1)
        return x, torch.full((f,), 3.0, device=device), context

    def step(f, side, with_backward):
        x, sigma, context = inputs(f, side)
        options = {**inflated.model_options["transformer_options"], "cond_or_uncond": [0]}
        if not with_backward:
            with torch.no_grad():
                inflated.model.apply_model(x, sigma, c_crossattn=context, transformer_options=options)
            return
        x.requires_grad_(True)
        out = inflated.model.apply_model(x, sigma, c_crossattn=context, transformer_options=options)
        out.float().square().mean().backward()

    return step


def measure(device, dtype_name, width, resolution, frames, attention, temporal, repeats):
    """Median seconds and peak bytes of the forward and of the forward+backward of one configuration."""
    step = _setup(device, dtype_name, width, attention, temporal)
    latent = resolution // 8
    # Warm-up: at the real shape on CUDA (kernel choice and the allocator depend on it); tiny on CPU.
    warm = (frames, latent) if device == "cuda" else (2, 8)
    step(*warm, True)
    return {"fwd": common.timed(lambda: step(frames, latent, False), repeats, device),
            "fwdbwd": common.timed(lambda: step(frames, latent, True), repeats, device)}


def measure_growth(device, dtype_name, width, attention, temporal, frame_counts, base_res, resolutions, repeats):
    """Forward seconds against F (at ``base_res``) and against resolution (at F=8), in one process."""
    step = _setup(device, dtype_name, width, attention, temporal)
    step(2, 8, False)
    points = [(base_res, f) for f in frame_counts] + [(r, 8) for r in resolutions]
    times = {}
    for resolution, frames in dict.fromkeys(points):
        if device == "cuda":
            step(frames, resolution // 8, False)
        times[resolution, frames] = common.timed(lambda: step(frames, resolution // 8, False), repeats, device)[0]
    return times


def run(device="cpu", dtype="float32", quick=False, repeats=None, log=print):
    repeats = repeats or 3
    width, grid, growth, notes = plan(quick, device)
    results, growth_times = {}, {}
    for config in grid:
        results[config] = common.run_isolated(measure, device, dtype, width, *config, repeats)
        log(f"  unet {config[0]}² F={config[1]} {config[2]}/{config[3]}: "
            + ", ".join(f"{k} {v[0]:.2f} s" for k, v in results[config].items()))
    frame_counts, base_res, resolutions = growth
    for attention, temporal in GROWTH:
        growth_times[attention, temporal] = common.run_isolated(
            measure_growth, device, dtype, width, attention, temporal, frame_counts, base_res, resolutions, repeats)
        log(f"  growth {attention}/{temporal}: {growth_times[attention, temporal]}")
    return report(device, dtype, width, grid, growth, notes, results, growth_times, repeats)


def report(device, dtype, width, grid, growth, notes, results, growth_times, repeats):
    lines = [f"SD1.5-shaped UNet (random weights), model_channels={width}, {dtype}, 1 clip × 1 prompt, median of "
             f"{repeats}; time and peak memory as ratios to per_frame/none (the image model) at the same "
             "resolution and F, each configuration in a fresh process.", ""]
    lines += [f"- {note}" for note in notes] + ([""] if notes else [])
    absolute = device == "cuda"
    header = ["res", "F", "attention", "temporal", "fwd time ×", "fwd peak ×", "fwd+bwd time ×", "fwd+bwd peak ×"]
    if absolute:
        header += ["fwd ms", "fwd+bwd ms", "fwd+bwd peak MiB"]
    rows = []
    for config in grid:
        r, base = results[config], results[(*config[:2], *BASELINE)]
        row = [f"{config[0]}²", config[1], config[2], config[3],
               common.ratio(r["fwd"][0], base["fwd"][0]), common.ratio(r["fwd"][1], base["fwd"][1]),
               common.ratio(r["fwdbwd"][0], base["fwdbwd"][0]), common.ratio(r["fwdbwd"][1], base["fwdbwd"][1])]
        if absolute:
            row += [f"{r['fwd'][0] * 1e3:.0f}", f"{r['fwdbwd'][0] * 1e3:.0f}", common.mib(r["fwdbwd"][1])]
        rows.append(row)
    lines.append(common.table(header, rows))
    if not absolute:
        lines += ["", "Baseline (per_frame/none) on this machine, for scale only: " + "; ".join(
            f"{c[0]}² F={c[1]}: fwd {results[c]['fwd'][0]:.2f} s / {common.mib(results[c]['fwd'][1])} MiB, "
            f"fwd+bwd {results[c]['fwdbwd'][0]:.2f} s / {common.mib(results[c]['fwdbwd'][1])} MiB"
            for c in grid if c[2:] == BASELINE)]

    frame_counts, base_res, resolutions = growth
    lines += ["", f"Cost growth of the forward (time ∝ x^k, least squares in log-log; F at {base_res}², "
              "resolution at F=8; each row measured in one process):", ""]
    growth_rows = []
    for (attention, temporal), times in growth_times.items():
        by_f = [(f, times[base_res, f]) for f in frame_counts]
        by_r = [(r, times[r, 8]) for r in resolutions]
        k_f, k_r = common.fit_exponent(*zip(*by_f)), common.fit_exponent(*zip(*by_r))
        growth_rows.append([f"{attention}/{temporal}",
                            " ".join(f"{f}:{t:.2f}" for f, t in by_f), f"{k_f:.2f}",
                            " ".join(f"{r}²:{t:.2f}" for r, t in by_r), f"{k_r:.2f}", f"{k_r / 2:.2f}"])
    lines.append(common.table(["config", "F:seconds", "k in F^k", "res:seconds", "k in side^k",
                               "k in tokens^k"], growth_rows))
    return "\n".join(lines)


def main():
    common.script_main(run, __doc__, cuda_dtype="bfloat16")


if __name__ == "__main__":
    main()
