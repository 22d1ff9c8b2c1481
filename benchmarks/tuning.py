"""One-shot tuning: seconds per step and peak memory, with and without gradient checkpointing.

    python -m benchmarks.tuning [--device cpu|cuda] [--quick]

The pack's own ``adapter.training.tune`` (the code behind EI2OneShotTune) on an inflated SD1.5-shaped UNet
(ffam s=2 + STAM, train = temporal_and_queries, Tune-A-Video's learning rate 3e-5) for one clip of
F ∈ {8, 24} frames. Each configuration runs in a fresh process: the first step (optimizer state,
warm-up) is excluded, the later steps' median is reported, and the peak memory covers the whole
``tune`` call. On CUDA it also projects Tune-A-Video's reference job (24 frames, 512², 500 steps;
its README quotes 10–15 min on one A100).
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402

REFERENCE_STEPS = 500


def measure(device, dtype_name, width, resolution, frames, checkpointing, steps, frames_per_step=None):
    """Median seconds per step (the first excluded) and the peak memory of the whole ``tune`` call."""
    import torch

    comfy, pack = common.comfyui(device)
    adapter = pack.nodes.adapter
    model = common.sd15_model(device, getattr(torch, dtype_name), model_channels=width)
    video = adapter.patching.inflate(model, adapter.patching.InflateOptions(attention_type="ffam", coarse_stride=2, temporal_type="stam"))
    latents = torch.randn(frames, 4, resolution // 8, resolution // 8, generator=torch.Generator().manual_seed(0))
    stamps = []

    def on_step(step, loss):
        common.sync(device)
        stamps.append(time.perf_counter())

    with common.PeakMemory(device) as memory:
        start = time.perf_counter()
        adapter.training.tune(video, latents, common.random_conditioning(0), steps=steps, learning_rate=3e-5,
                              train="temporal_and_queries", seed=0, gradient_checkpointing=checkpointing,
                              frames_per_step=frames_per_step, on_step=on_step)
    per_step = [b - a for a, b in zip(stamps, stamps[1:])] or [stamps[0] - start]
    return statistics.median(per_step), memory.peak


def run(device="cpu", dtype="float32", quick=False, log=print):
    if device == "cuda":
        width, resolution, steps = 320, 512, 4 if quick else 6
    else:
        width, resolution, steps = 64, 128, 3
    results = {}
    for frames in (8, 24):
        for checkpointing in (False, True):
            results[frames, checkpointing] = common.run_isolated(measure, device, dtype, width, resolution, frames,
                                                                 checkpointing, steps)
            log(f"  tuning F={frames} checkpointing={checkpointing}: {results[frames, checkpointing]}")
    lines = [f"adapter.training.tune (EI2OneShotTune) on an SD1.5-shaped UNet, model_channels={width}, {resolution}², {dtype}, "
             f"ffam s=2 + STAM, train=temporal_and_queries; {steps} steps per run, the first excluded "
             "(median of the rest); peak memory over the whole call; each run in a fresh process.", ""]
    if device != "cuda":
        lines.append("- cpu: SD1.5 topology at 1/5 width and 128² (a full-width 512² step takes many minutes on 2 cores)\n")
    rows = []
    for frames in (8, 24):
        plain, ckpt = results[frames, False], results[frames, True]
        row = [frames, f"{plain[0]:.2f}", f"{ckpt[0]:.2f}", common.ratio(ckpt[0], plain[0]),
               common.mib(plain[1]), common.mib(ckpt[1]), common.ratio(ckpt[1], plain[1])]
        rows.append(row)
    lines.append(common.table(["F", "s/step plain", "s/step checkpointed", "time ×", "peak MiB plain",
                               "peak MiB checkpointed", "peak ×"], rows))
    if device == "cuda":
        for checkpointing in (False, True):
            seconds = results[24, checkpointing][0] * REFERENCE_STEPS
            lines.append(f"\nProjected Tune-A-Video reference job (24 frames, 512², {REFERENCE_STEPS} steps), "
                         f"checkpointing={checkpointing}: {seconds / 60:.1f} min on this GPU "
                         "(Tune-A-Video README: 10–15 min on one A100).")
    return "\n".join(lines)


def main():
    common.script_main(run, __doc__, cuda_dtype="float16")


if __name__ == "__main__":
    main()
