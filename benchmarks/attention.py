"""Time and peak memory of each frame-attention type, as ratios to full attention over the clip.

    python benchmarks/attention.py [--device cpu|cuda] [--dtype float32|float16|bfloat16]
                                   [--repeats N] [--frames 8 16 24] [--grids 64 32] [--quick]

One clip, 8 heads × 40 dims (SD 1.x's first UNet level). Every measurement runs in a fresh
process so that one configuration's allocations cannot inflate another's peak.
Peak memory: CUDA reports ``torch.cuda.max_memory_allocated``; on CPU the script resets the
process's resident-memory high-water mark (Linux ``/proc/self/clear_refs``) before the timed
calls and reads ``VmHWM`` after, so it reports the real resident peak above what was resident
before. The ``scores`` column is analytic: the query·key pairs per clip, i.e. the attention
matrix a non-fused kernel would hold (the cost formula of docs/method.md).
"""

import argparse
import math
import multiprocessing
import re
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HEADS, HEAD_DIM = 8, 40
METHODS = (  # label, attention_type, coarse_stride
    ("full", "full", 1),
    ("ffam s=2", "ffam", 2),
    ("ffam s=4", "ffam", 4),
    ("sparse_causal", "sparse_causal", 1),
    ("per_frame", "per_frame", 1),
)
TARGET = dict(frames=8, grid=64)  # ffam s=2 here: ≤ 0.4× full and ≤ 1.5× sparse_causal time


def score_elements(attention_type, frames, grid, stride):
    """Query·key pairs per clip."""
    tokens = grid * grid
    keys_per_query = {
        "per_frame": tokens,
        "sparse_causal": 2 * tokens,
        "ffam": tokens + (frames - 1) * math.ceil(grid / stride) ** 2,
        "full": frames * tokens,
    }[attention_type]
    return frames * tokens * keys_per_query


def _proc_status(field):
    return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024


def _reset_cpu_peak():
    """Reset the resident high-water mark; returns the resident bytes now, or None off Linux."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _proc_status("VmRSS")
    except OSError:
        return None


def measure(device, dtype_name, frames, grid, attention_type, stride, repeats):
    """Median seconds and peak extra bytes (or None) of ``frame_attention`` on one clip."""
    import torch

    from ei2.ffam import frame_attention

    dtype = getattr(torch, dtype_name)
    options = dict(frames=frames, heads=HEADS, attention_type=attention_type, coarse_stride=stride)
    q, k, v = (torch.randn(frames, grid * grid, HEADS * HEAD_DIM, device=device, dtype=dtype) for _ in range(3))

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    with torch.no_grad():
        if device == "cuda":
            # Warm up at the real shape: kernel selection and the caching allocator depend on it.
            frame_attention(q, k, v, size=(grid, grid), **options)
            sync()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        else:
            # CPU kernels hold nothing shape-specific; a tiny call starts the thread pool and dispatch.
            frame_attention(q[:, :16], k[:, :16], v[:, :16], size=(4, 4), **options)
            before = _reset_cpu_peak()
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            out = frame_attention(q, k, v, size=(grid, grid), **options)
            sync()
            seconds.append(time.perf_counter() - start)
            del out
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - before
    else:
        peak = None if before is None else _proc_status("VmHWM") - before
    return statistics.median(seconds), peak


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32")
    parser.add_argument("--repeats", type=int, help="timed calls per configuration (default: 3 on cuda, 1 on cpu)")
    parser.add_argument("--frames", type=int, nargs="+", default=[8, 16, 24])
    parser.add_argument("--grids", type=int, nargs="+", default=[64, 32], help="latent side lengths")
    parser.add_argument("--quick", action="store_true", help="only F=8 (about a minute on 2 CPU cores)")
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.device == "cuda" else 1)
    frame_counts = [8] if args.quick else args.frames

    import torch

    print(f"# frame attention, {args.device} {args.dtype}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {HEADS} heads × {HEAD_DIM} dims, 1 clip, median of {repeats}\n")
    rows, results = [], {}
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn, max_tasks_per_child=1) as pool:
        for grid in args.grids:
            for frames in frame_counts:
                for label, attention_type, stride in METHODS:
                    job = (args.device, args.dtype, frames, grid, attention_type, stride, repeats)
                    seconds, peak = pool.submit(measure, *job).result()
                    results[grid, frames, label] = seconds, peak, score_elements(attention_type, frames, grid, stride)
                    print(f"  {grid}x{grid} F={frames} {label}: {seconds:.3f} s", file=sys.stderr, flush=True)
                    rows.append((grid, frames, label))

    def ratio(a, b):
        return "n/a" if a is None or b is None else f"{a / b:.2f}"

    def mib(value):
        return "n/a" if value is None else f"{value / 2**20:.0f}"

    print("| grid | F | attention | time s | time ×full | peak MiB | peak ×full | scores ×full |")
    print("|---|---|---|---|---|---|---|---|")
    for grid, frames, label in rows:
        seconds, peak, scores = results[grid, frames, label]
        full_seconds, full_peak, full_scores = results[grid, frames, "full"]
        print(f"| {grid}×{grid} | {frames} | {label} | {seconds:.3f} | {ratio(seconds, full_seconds)} | "
              f"{mib(peak)} | {ratio(peak, full_peak)} | {ratio(scores, full_scores)} |")

    target = (TARGET["grid"], TARGET["frames"])
    if (*target, "full") in results:
        ffam, full, sparse = (results[(*target, label)][0] for label in ("ffam s=2", "full", "sparse_causal"))
        where = f"F={TARGET['frames']}, {TARGET['grid']}×{TARGET['grid']}"
        print(f"\n{'PASS' if ffam <= 0.4 * full else 'FAIL'}: ffam s=2 time {ffam / full:.2f}× full (target ≤ 0.40) at {where}")
        print(f"{'PASS' if ffam <= 1.5 * sparse else 'FAIL'}: ffam s=2 time {ffam / sparse:.2f}× sparse_causal (target ≤ 1.50) at {where}")


if __name__ == "__main__":
    main()
