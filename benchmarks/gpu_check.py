"""The GPU check: the whole edit on a CUDA machine, per weight-holding mode and half precision.

    python -m benchmarks.gpu_check [--device cuda|cpu] [--size 512] [--frames 8] [--tune-steps 20] [--steps 10]

Runs inflate → tune → invert → sample → decode → save (the bundled ``ei2_video_edit.json`` through the
CLI's graph builder) on the tiny checkpoint, in a fresh ComfyUI server per configuration:
dynamic VRAM on and off (``--disable-dynamic-vram``; ComfyUI before dynamic VRAM has only "off") ×
fp16 and bf16 UNets (``--fp16-unet`` / ``--bf16-unet``). Prints, per configuration, whether it ran,
the wall time of the prompt and the peak VRAM in use while it ran (from ``/system_stats``, polled
every 0.1 s). ``--device cpu`` runs one fp32 configuration: the same plumbing, for CI.

On a lent GPU machine: ``EI2_COMFYUI=0.33.0 bash .ci/setup.sh`` then
``.venv-comfyui-0.33.0/bin/python -m benchmarks.gpu_check``.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ei2.cli import edit as cli, runner  # noqa: E402


def configurations(device: str, comfyui: Path) -> list[tuple[str, list[str]]]:
    if device == "cpu":
        return [("cpu, fp32", [])]
    dynamic = "--disable-dynamic-vram" in (comfyui / "comfy" / "cli_args.py").read_text()
    modes = [("dynamic VRAM", []), ("dynamic VRAM off", ["--disable-dynamic-vram"])] if dynamic \
        else [("no dynamic VRAM in this ComfyUI", [])]
    return [(f"{mode}, {dtype}", flags + [f"--{dtype}-unet"]) for mode, flags in modes for dtype in ("fp16", "bf16")]


def _peak_vram(server: runner.ComfyServer, stop: threading.Event, peak: list) -> None:
    while not stop.is_set():
        try:
            device = server.get("/system_stats")["devices"][0]
            peak[0] = max(peak[0], device["vram_total"] - device["vram_free"])
        except Exception:  # a poll that fails (server busy) is just skipped
            pass
        stop.wait(0.1)


def run_one(comfyui: Path, device: str, flags: list[str], settings: cli.EditSettings, checkpoint: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="ei2-gpu-check-") as root:
        server = runner.ComfyServer(comfyui, Path(root), cpu=device == "cpu", args=flags)
        shutil.copy(checkpoint, server.checkpoints_dir / checkpoint.name)
        server.start()
        stop, peak = threading.Event(), [0]
        poller = threading.Thread(target=_peak_vram, args=(server, stop, peak), daemon=True)
        try:
            graph = cli.build_graph(server.get("/object_info"), settings, server.upload(settings.video), checkpoint.name)
            poller.start()
            started = time.monotonic()
            entry = server.run(graph, timeout=3600)
            seconds = time.monotonic() - started
            videos = server.output_files(entry)
            return {"ok": bool(videos), "seconds": seconds, "peak_vram": peak[0] or None}
        except runner.PromptFailed as error:
            return {"ok": False, "error": cli.describe_failure(error)}
        finally:
            stop.set()
            server.stop()


def run(device="cuda", size=512, frames=8, tune_steps=20, steps=10, log=print) -> list[tuple[str, dict]]:
    comfyui = runner.find_comfyui()
    checkpoint = cli.tiny_checkpoint(comfyui)
    clip = cli.sample_clip(cli.DEMO_DIR / f"gpu_check_{frames}x{size}.mp4", frames=frames, size=size)
    settings = cli.EditSettings(video=clip,
                                source_prompt="a red square moving right", prompt="a blue ball moving right",
                                frames=frames, size=size, steps=steps, tune_steps=tune_steps)
    results = []
    for label, flags in configurations(device, comfyui):
        log(f"== {label}: {' '.join(flags) or '(default flags)'}")
        result = run_one(comfyui, device, flags, settings, checkpoint)
        log(f"   {result}")
        results.append((label, result))
    return results


def report(results, size, frames, tune_steps, steps) -> str:
    lines = [f"Tiny checkpoint, {frames} frames at {size}², tune {tune_steps} steps, invert + sample {steps} steps "
             "each (ffam + STAM, the bundled edit workflow).", "",
             "| configuration | ran | seconds | peak VRAM in use (MiB) |", "|---|---|---|---|"]
    for label, result in results:
        peak = result.get("peak_vram")
        lines.append(f"| {label} | {'yes' if result['ok'] else 'NO: ' + result.get('error', 'no video written')} | "
                     f"{result.get('seconds', float('nan')):.1f} | {'-' if peak is None else f'{peak / 2**20:.0f}'} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--tune-steps", type=int, default=20)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    results = run(args.device, args.size, args.frames, args.tune_steps, args.steps,
                  log=lambda message: print(message, file=sys.stderr, flush=True))
    print(report(results, args.size, args.frames, args.tune_steps, args.steps))
    sys.exit(0 if all(result["ok"] for _, result in results) else 1)


if __name__ == "__main__":
    main()
