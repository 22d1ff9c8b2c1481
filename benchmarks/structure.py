"""Structure reuse: what EI2Sample's ``structure_reuse`` costs, against the same sampling without it.

    python -m benchmarks.structure [--device cpu|cuda] [--quick]

The pack's adapter (the code behind EI2DDIMInvert and EI2Sample) on an inflated SD1.5-shaped UNet (ffam s=2 +
STAM), one 16-frame clip inverted once, then sampled (DDIM, CFG 7.5) with reuse off and at the node's default.
Each reused step adds one source pass of one clip to the edit's cond + uncond batch, so the time should grow by
about half the reused share of the steps; what is kept for a step (the decoder's self-attention q/k and one
ResBlock's residual, for one clip) is small beside the activations of the edit's batch. Targets: ≤ 1.6× the
time and ≤ 1.2× the peak memory. Each configuration runs in a fresh process, in interleaved rounds (fastest time,
smallest peak), with tensor-sized blocks mmapped on the CPU (see ``windows.py``).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402
from benchmarks.windows import CFG, _video_model, fastest, tensor_sized_mmap  # noqa: E402
from ei2.structure_reuse import DEFAULT_STRUCTURE_REUSE  # noqa: E402

FRAMES = 16
TIME_TARGET, MEMORY_TARGET = 1.6, 1.2


def measure(device, dtype_name, width, resolution, steps, structure_reuse, repeats):
    """Median seconds of ``adapter.sampling.sample`` with ``structure_reuse``, its peak memory, UNet calls per step."""
    import torch

    adapter, video = _video_model(device, dtype_name, width)
    positive, negative = common.random_conditioning(1), common.random_conditioning(2)
    clip = {"samples": torch.randn(FRAMES, 4, resolution // 8, resolution // 8, generator=torch.Generator().manual_seed(0))}
    inverted = adapter.sampling.invert(video, clip, common.random_conditioning(3), steps)
    short = adapter.sampling.invert(video, {"samples": clip["samples"][:2]}, common.random_conditioning(3), 1)

    def run(latent, count):
        return adapter.sampling.sample(video, positive, negative, latent, steps=count, cfg=CFG, eta=0.0, seed=0,
                                       structure_reuse=structure_reuse)

    run(short, 1)  # warm-up on 2 frames: the graphs, not activation-sized memory (see windows.py)
    calls = [0]
    video.model.diffusion_model.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    seconds, peak = common.timed(lambda: run(inverted, steps), repeats, device)
    return seconds, peak, calls[0] / (repeats * steps)


def run(device="cpu", dtype="float32", quick=False, log=print):
    if device == "cuda":
        width, resolution, steps, repeats, rounds = 320, 512, 10, 1 if quick else 3, 1
    else:  # SD1.5 topology at 1/5 width and 128², as the other benchmarks
        width, resolution, steps, repeats, rounds = 64, 128, 5 if quick else 10, 1, 1 if quick else 2
    reuses = {"off": 0.0, f"structure_reuse {DEFAULT_STRUCTURE_REUSE:g} (default)": DEFAULT_STRUCTURE_REUSE}
    results = {name: [] for name in reuses}
    with tensor_sized_mmap(device):
        for _ in range(rounds):
            for name, reuse in reuses.items():
                results[name].append(common.run_isolated(measure, device, dtype, width, resolution, steps, reuse, repeats))
                log(f"  structure reuse {name}: {results[name][-1]}")
    results = {name: fastest(values) for name, values in results.items()}
    (base_time, base_peak, _), (time_, peak, _) = results.values()
    rows = [[name, f"{t:.2f}", common.ratio(t, base_time), common.mib(p), common.ratio(p, base_peak), f"{c:.1f}"]
            for name, (t, p, c) in results.items()]
    time_ok = time_ / base_time <= TIME_TARGET
    memory_ok = peak is None or base_peak is None or peak / base_peak <= MEMORY_TARGET
    return "\n".join([
        f"EI2Sample ({steps} DDIM steps, CFG {CFG}) of a {FRAMES}-frame clip at {resolution}², SD1.5-shaped UNet "
        f"model_channels={width}, {dtype}, ffam s=2 + STAM, inverted once by EI2DDIMInvert; fastest of {rounds} "
        "round(s) in fresh processes; peak memory over the measured call.", "",
        common.table(["sampling", "seconds", "time ×", "peak MiB", "peak ×", "UNet calls per step"], rows), "",
        f"**{'PASS' if time_ok and memory_ok else 'FAIL'}**: with reuse {time_ / base_time:.2f}× the time (target ≤ "
        f"{TIME_TARGET}×) and {common.ratio(peak, base_peak)} the peak memory (target ≤ {MEMORY_TARGET}×)."])


def main():
    common.script_main(run, __doc__, cuda_dtype="float16")


if __name__ == "__main__":
    main()
