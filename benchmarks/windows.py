"""Context windows: a long clip against a one-window clip, for tuning steps and for sampling.

    python -m benchmarks.windows [--device cpu|cuda] [--quick]

The pack's own adapter (the code behind EI2OneShotTune and EI2Sample) on an inflated SD1.5-shaped UNet
(ffam s=2 + STAM). Targets (ratios against the 16-frame clip measured in the same run):

- tuning: ``adapter.training.tune`` of a 96-frame clip with ``frames_per_step=16`` costs what tuning a
  16-frame clip costs, per step (≈ 1.0×) and in peak memory (≤ 1.2×); the 96-frame clip tuned whole
  is there for contrast;
- sampling: ``adapter.sampling.sample`` (DDIM, CFG 7.5) of 96 frames in windows of (16, 4) has the peak
  memory of 16 frames (≤ 1.2×) and a time that the window count predicts: every window holds 16 frames,
  plus the anchor (frame 0) in every window but the first.

Every configuration runs in a fresh process (``common.run_isolated``), in ``rounds`` interleaved
passes (the machine is shared: each configuration keeps its fastest pass); tuning times are the median
step after the first (optimizer state, warm-up); sampling runs a 1-step warm-up call on 2 frames
(model load, graphs) and reports the median of the measured calls; peak memory covers the measured call(s). On CPU the sampling workers run with glibc's mmap threshold
at 64 KiB, so every tensor-sized block goes back to the system when freed and the resident peak follows
the live tensors instead of the heap's reuse of freed blocks (without it, one run showed 1.37× for what
is 1.11×); the tuning workers do not (it made a tuning step 4× slower, and their peaks, hundreds of
MiB, were steady without it).
"""
from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common, tuning as tuning_benchmark  # noqa: E402
from ei2.context_windows import DEFAULT_CONTEXT, ContextWindows, context_windows  # noqa: E402

SHORT, LONG = 16, 96
CONTEXT = (DEFAULT_CONTEXT.frames, DEFAULT_CONTEXT.overlap)  # the pack's default
MEMORY_TARGET = 1.2
CFG = 7.5


def _video_model(device, dtype_name, width):
    import torch

    comfy, pack = common.comfyui(device)
    adapter = pack.nodes.adapter
    model = common.sd15_model(device, getattr(torch, dtype_name), model_channels=width)
    options = adapter.patching.InflateOptions(attention_type="ffam", coarse_stride=2, temporal_type="stam")
    return adapter, adapter.patching.inflate(model, options)


def measure_sampling(device, dtype_name, width, resolution, frames, anchor, steps, repeats):
    """Median seconds of ``adapter.sampling.sample`` (``steps`` DDIM steps, CFG), its peak memory and the
    UNet calls per step."""
    import torch

    adapter, video = _video_model(device, dtype_name, width)
    positive, negative = common.random_conditioning(1), common.random_conditioning(2)
    noise = torch.randn(frames, 4, resolution // 8, resolution // 8, generator=torch.Generator().manual_seed(0))

    def run(samples, count):
        # EI2Sample takes EI2DDIMInvert's LATENT; the inversion record is written here, so only sampling is timed.
        record = {"steps": count, "frames": len(samples)}
        inverted = {"samples": samples, adapter.sampling.INVERSION_KEY: record}
        return adapter.sampling.sample(video, positive, negative, inverted, steps=count, cfg=CFG, eta=0.0, seed=0,
                                       context=ContextWindows(*CONTEXT, anchor=anchor))

    # Warm-up on 2 frames: loads the model and builds the graphs, but leaves no activation-sized memory
    # behind for the measured call to reuse (its peak would then hide below the warm-up's).
    run(noise[:2], 1)
    calls = [0]
    video.model.diffusion_model.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    seconds = []
    with common.PeakMemory(device) as memory:
        for _ in range(repeats):
            common.sync(device)
            start = time.perf_counter()
            run(noise, steps)
            common.sync(device)
            seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), memory.peak, calls[0] / (repeats * steps)


def window_frames(frames: int, anchor: bool) -> int:
    """UNet frames per sampling step: every window's frames, plus the anchor in each window after the first."""
    windows = context_windows(frames, *CONTEXT)
    return sum(len(w) for w in windows) + (anchor and len(windows) - 1)


@contextlib.contextmanager
def tensor_sized_mmap(device):
    """glibc serves and frees every block ≥ 64 KiB by mmap in the workers started inside (cpu only)."""
    before = os.environ.get("MALLOC_MMAP_THRESHOLD_")
    if device != "cuda":
        os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("MALLOC_MMAP_THRESHOLD_", None)
        else:
            os.environ["MALLOC_MMAP_THRESHOLD_"] = before


def fastest(results):
    """Per configuration, over rounds: the fastest time and the smallest peak (interference only adds)."""
    peaks = [r[1] for r in results if r[1] is not None]
    return (min(r[0] for r in results), min(peaks) if peaks else None, *results[0][2:])


def plan(device, quick):
    if device == "cuda":
        return dict(width=320, resolution=512, tune_steps=4, sample_steps=3, repeats=1 if quick else 3,
                    whole_long=not quick, rounds=1)
    # cpu: SD1.5 topology at 1/5 width and 128², as the other benchmarks (a 96-frame step takes seconds).
    return dict(width=64, resolution=128, tune_steps=4, sample_steps=2, repeats=1,
                whole_long=not quick, rounds=1 if quick else 2)


def run(device="cpu", dtype="float32", quick=False, log=print):
    p = plan(device, quick)
    shape = (device, dtype, p["width"], p["resolution"])
    tuning = {"16 frames, whole clip": (SHORT, None), f"{LONG} frames, frames_per_step=16": (LONG, SHORT)}
    if p["whole_long"]:
        tuning[f"{LONG} frames, whole clip"] = (LONG, None)
    sampling = {(SHORT, True): "16 frames (one window)", (LONG, True): f"{LONG} frames, context {CONTEXT}, anchor",
                (LONG, False): f"{LONG} frames, context {CONTEXT}, no anchor"}
    tuned, sampled = {name: [] for name in tuning}, {key: [] for key in sampling}
    for _ in range(p["rounds"]):
        for name, (frames, per_step) in tuning.items():
            tuned[name].append(common.run_isolated(tuning_benchmark.measure, *shape, frames, True, p["tune_steps"], per_step))
            log(f"  windows tuning {name}: {tuned[name][-1]}")
        with tensor_sized_mmap(device):
            for key in sampling:
                sampled[key].append(common.run_isolated(measure_sampling, *shape, *key, p["sample_steps"], p["repeats"]))
                log(f"  windows sampling {sampling[key]}: {sampled[key][-1]}")
    tuned = {name: fastest(runs) for name, runs in tuned.items()}
    sampled = {key: fastest(runs) for key, runs in sampled.items()}

    base_step, base_peak = tuned["16 frames, whole clip"]
    rows = [[name, frames, per_step or frames, f"{t:.2f}", common.ratio(t, base_step), common.mib(peak),
             common.ratio(peak, base_peak)] for (name, (t, peak)), (frames, per_step) in zip(tuned.items(), tuning.values())]
    lines = [f"SD1.5-shaped UNet, model_channels={p['width']}, {p['resolution']}², {dtype}, ffam s=2 + STAM; "
             f"each configuration in a fresh process, {p['rounds']} interleaved round(s), the fastest kept.", ""]
    if device != "cuda":
        lines += ["- cpu: SD1.5 topology at 1/5 width and 128² (a full-width 512² step takes minutes on 2 cores); "
                  "peak memory is the resident high-water mark (for sampling with tensor-sized blocks mmapped, see "
                  "benchmarks/windows.py); "
                  "a sampling window's activations are tens of MiB here, so a few MiB of noise moves its ratio."
                  + ("" if p["whole_long"] else f" --quick: one round, and the {LONG}-frame clip tuned whole is "
                     "skipped (minutes per step here)."), ""]
    lines += [f"**Tuning** (`adapter.training.tune`, gradient checkpointing on, train=temporal_and_queries): "
              f"{p['tune_steps']} steps, the median step after the first; peak memory over the whole call.", "",
              common.table(["clip", "frames", "frames per step", "s/step", "time ×", "peak MiB", "peak ×"], rows), ""]

    base_time, base_mem, _ = sampled[SHORT, True]
    rows = []
    for (frames, anchor), name in sampling.items():
        seconds, peak, calls = sampled[frames, anchor]
        windows = len(context_windows(frames, *CONTEXT))
        predicted = window_frames(frames, anchor) / window_frames(SHORT, True)
        rows.append([name, windows, f"{calls:g}", f"{seconds:.2f}", common.ratio(seconds, base_time),
                     f"{frames / SHORT:.2f}", f"{predicted:.2f}", common.mib(peak), common.ratio(peak, base_mem)])
    lines += [f"**Sampling** (`adapter.sampling.sample`, {p['sample_steps']} DDIM steps, CFG {CFG:g}, η 0): median of "
              f"{p['repeats']} call(s) after a 2-frame warm-up; predicted × = UNet frames per step (every window's "
              "frames, plus frame 0 in each window after the first when anchored) over 16.", "",
              common.table(["run", "windows", "UNet calls per step", "seconds", "time ×", "frames ×", "predicted ×",
                            "peak MiB", "peak ×"], rows), ""]

    checks = [("tuning peak, 96 frames in windows", tuned[f"{LONG} frames, frames_per_step=16"][1], base_peak),
              ("sampling peak, 96 frames in windows", sampled[LONG, True][1], base_mem)]
    verdicts = []
    for label, peak, base in checks:
        if peak is None or not base:
            verdicts.append(f"{label}: n/a")
        else:
            verdicts.append(f"{label} {peak / base:.2f}× ({'PASS' if peak / base <= MEMORY_TARGET else 'FAIL'})")
    long_time = sampled[LONG, True][0] / base_time
    lines.append(f"Memory target ≤ {MEMORY_TARGET}× the 16-frame clip: " + "; ".join(verdicts) + ". "
                 f"Tuning step with windows: {tuned[f'{LONG} frames, frames_per_step=16'][0] / base_step:.2f}× "
                 f"(expected ≈ 1). Sampling 96 frames: {long_time:.2f}× for {LONG / SHORT:.0f}× the frames, "
                 f"{window_frames(LONG, True) / window_frames(SHORT, True):.2f}× predicted by the windows.")
    return "\n".join(lines)


def main():
    common.script_main(run, __doc__, cuda_dtype="float16")


if __name__ == "__main__":
    main()
