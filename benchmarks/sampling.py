"""Sampling overhead: one EI2Sample step against one stock KSampler step, through the real nodes.

    python -m benchmarks.sampling [--device cpu|cuda] [--quick]

Same inflated MODEL (ffam s=2 + STAM), same latent batch (the F frames of one clip), CFG 7.5 (so
both run the cond and uncond batch), 1 DDIM step each: ``EI2Sample`` (the pack's DDIM on ComfyUI's
sampler machinery) and ComfyUI's ``KSampler`` with sampler ``ddim`` / scheduler ``ddim_uniform``.
The plain image model's KSampler step is the baseline of what frame attention and temporal modules
cost. Calls alternate and the median is kept. Target: EI2Sample ≤ 1.3× KSampler on the same model.
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402

TARGET = 1.3


def measure(device, dtype_name, width, resolution, frames, repeats):
    import torch

    comfy, pack = common.comfyui(device)
    adapter = pack.nodes.adapter
    ksampler = comfy.nodes.NODE_CLASS_MAPPINGS["KSampler"]()
    ei2_sample = pack.NODE_CLASS_MAPPINGS["EI2Sample"]()
    image = common.sd15_model(device, getattr(torch, dtype_name), model_channels=width)
    video = adapter.patching.inflate(image, adapter.patching.InflateOptions(attention_type="ffam", coarse_stride=2, temporal_type="stam"))
    positive, negative = common.random_conditioning(1), common.random_conditioning(2)
    noise = torch.randn(frames, 4, resolution // 8, resolution // 8, generator=torch.Generator().manual_seed(0))
    # EI2Sample takes EI2DDIMInvert's LATENT; the inversion record is written here so that timing covers
    # the sampling step only (same 1-step schedule).
    inverted = {"samples": noise, adapter.sampling.INVERSION_KEY: {"steps": 1, "frames": frames}}
    latent = {"samples": torch.zeros_like(noise)}

    runs = {
        "KSampler, image model": lambda: ksampler.sample(image, 0, 1, 7.5, "ddim", "ddim_uniform", positive, negative, latent, 1.0),
        "KSampler, video model": lambda: ksampler.sample(video, 0, 1, 7.5, "ddim", "ddim_uniform", positive, negative, latent, 1.0),
        "EI2Sample, video model": lambda: ei2_sample.sample(video, positive, negative, inverted, 1, 7.5, 0.0, 0),
    }
    for run in runs.values():  # warm-up: loads the models, builds the graphs
        run()
    calls = [0]  # UNet evaluations per run: both must be exactly one (cond + uncond in one batch)
    image.model.diffusion_model.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    seconds = {name: [] for name in runs}
    counts = {name: set() for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            calls[0] = 0
            common.sync(device)
            start = time.perf_counter()
            run()
            common.sync(device)
            seconds[name].append(time.perf_counter() - start)
            counts[name].add(calls[0])
    return {name: (statistics.median(values), sorted(counts[name])) for name, values in seconds.items()}


def run(device="cpu", dtype="float32", quick=False, repeats=None, log=print):
    if device == "cuda":
        width, resolution, frames = 320, 512, 8 if quick else 24
    else:
        width, resolution, frames = 64, 128, 8
    repeats = repeats or 5
    times = common.run_isolated(measure, device, dtype, width, resolution, frames, repeats)
    log(f"  sampling: {times}")
    base = times["KSampler, image model"][0]
    rows = [[name, f"{t:.3f}" if device == "cuda" else "-", common.ratio(t, base), "/".join(map(str, n))]
            for name, (t, n) in times.items()]
    overhead = times["EI2Sample, video model"][0] / times["KSampler, video model"][0]
    verdict = "PASS" if overhead <= TARGET else "FAIL"
    lines = [f"1 DDIM step, CFG 7.5 (cond + uncond), {frames} frames at {resolution}², SD1.5-shaped UNet "
             f"model_channels={width}, {dtype}, video model = ffam s=2 + STAM; median of {repeats} alternating calls "
             f"after one warm-up each.", "",
             common.table(["run", "seconds" if device == "cuda" else "seconds (cuda only)", "× KSampler on image model",
                                 "UNet calls per run"], rows),
             "", f"**{verdict}**: EI2Sample step = {overhead:.2f}× the KSampler step on the same video model "
             f"(target ≤ {TARGET}×)."]
    if device != "cuda":
        lines[-1] += f" (absolute, for scale: KSampler on the image model {base:.2f} s on this CPU)"
    return "\n".join(lines)


def main():
    common.script_main(run, __doc__, cuda_dtype="float16")


if __name__ == "__main__":
    main()
