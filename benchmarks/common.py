"""Shared helpers of the benchmarks: ComfyUI in-process, an SD1.5-shaped UNet, timing, peak memory.

Peak memory: CUDA reports ``torch.cuda.max_memory_allocated`` above what was allocated before; on
CPU the process's resident high-water mark is reset (Linux ``/proc/self/clear_refs``) before the
measured calls and ``VmHWM`` is read after, so the number is the real resident peak above what was
resident before. Every configuration runs in a fresh process (:func:`run_isolated`) so one
configuration's allocations cannot inflate another's peak.
"""
from __future__ import annotations

import math
import multiprocessing
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "tests"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from harness import checkpoint  # noqa: E402  (needs the path above)
from harness.checkpoint import random_conditioning  # noqa: E402,F401  (the benchmarks' prompts)
from harness.comfyui import find_comfyui, import_comfyui, load_pack  # noqa: E402

# --- ComfyUI in-process ----------------------------------------------------------------------------

_COMFY = None


def comfyui(device: str = "cpu"):
    """ComfyUI imported into this process (once) and this pack loaded: ``(comfy namespace, pack)``;
    with ``--cpu`` unless the device is CUDA."""
    global _COMFY
    if _COMFY is None:
        root = Path(tempfile.mkdtemp(prefix="ei2-bench-"))
        dirs = [root / name for name in ("output", "input", "temp")]
        for folder in dirs:
            folder.mkdir()
        namespace = import_comfyui(find_comfyui(), *dirs, cpu=device != "cuda")
        _COMFY = namespace, load_pack(namespace.nodes)
    return _COMFY


def sd15_model(device: str = "cpu", dtype=None, seed: int = 0, inference: bool = True, **unet_overrides):
    """An SD1.5-shaped MODEL with random weights (``harness.checkpoint.sd15_model``); ComfyUI must be imported."""
    import torch

    return checkpoint.sd15_model({**checkpoint.SD15_UNET, **unet_overrides}, seed, device=device,
                                 dtype=dtype or torch.float32, inference=inference)


# --- timing and memory -----------------------------------------------------------------------------

def _proc_status(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024


class PeakMemory:
    """Peak bytes above the start, of the GPU allocator (cuda) or of resident memory (cpu, Linux)."""

    def __init__(self, device: str):
        self.device = device

    def __enter__(self):
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.before = torch.cuda.memory_allocated()
        else:
            try:
                Path("/proc/self/clear_refs").write_text("5")
                self.before = _proc_status("VmRSS")
            except OSError:
                self.before = None
        self.peak = None
        return self

    def __exit__(self, *exc):
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.before
        elif self.before is not None:
            self.peak = _proc_status("VmHWM") - self.before
        return False


def sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def timed(fn, repeats: int, device: str, warmup: int = 0):
    """Median seconds of ``fn()`` over ``repeats`` calls, and the peak memory of those calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    seconds = []
    with PeakMemory(device) as memory:
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            sync(device)
            seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), memory.peak


THREADS = None  # torch threads in the worker processes (None: torch's default)


def _set_threads(threads):
    if threads:
        import torch

        torch.set_num_threads(threads)


def run_isolated(function, *args, **kwargs):
    """``function(*args, **kwargs)`` in a fresh spawned process; returns its result."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=_set_threads,
                             initargs=(THREADS,)) as pool:
        return pool.submit(function, *args, **kwargs).result()


# --- reporting -------------------------------------------------------------------------------------

def ratio(a, b, digits: int = 2) -> str:
    return "n/a" if a is None or b is None or b == 0 else f"{a / b:.{digits}f}"


def mib(value) -> str:
    return "n/a" if value is None else f"{value / 2**20:.0f}"


def fit_exponent(xs, ys) -> float:
    """Least-squares slope of log y against log x: y ∝ x^k."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def machine(device: str) -> str:
    import torch

    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        total = int(re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text()).group(1))
        memory = f", {total / 2**20:.0f} GiB RAM"
    except (OSError, AttributeError):
        pass
    threads = THREADS or torch.get_num_threads()
    text = (f"{cpu}, {os.cpu_count()} logical cores ({threads} torch thread{'s' if threads > 1 else ''}){memory}; "
            f"Python {platform.python_version()}, torch {torch.__version__}; device {device}")
    if device == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        text += f" = {props.name}, {props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}"
    return text


def script_main(run, doc: str, cuda_dtype: str = "float16") -> None:
    """The command line each benchmark script shares: --device and --quick, plus --dtype and --repeats
    where its ``run`` takes them; the result goes to stdout, progress to stderr."""
    import argparse
    import inspect

    takes = inspect.signature(run).parameters
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--quick", action="store_true")
    if "dtype" in takes:
        parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16"))
    if "repeats" in takes:
        parser.add_argument("--repeats", type=int)
    args = parser.parse_args()
    options = {"repeats": args.repeats} if "repeats" in takes else {}
    if "dtype" in takes:
        options["dtype"] = args.dtype or (cuda_dtype if args.device == "cuda" else "float32")
    print(run(device=args.device, quick=args.quick, log=lambda m: print(m, file=sys.stderr, flush=True), **options))
