"""What STAM costs next to a plain (Tune-A-Video) temporal attention: per module and per UNet step.

    python -m benchmarks.temporal [--quick] [--device cpu|cuda] [--dtype float32|float16|bfloat16]

Per module: forward+backward of one temporal module (gradients to its parameters and its input, as
in tuning) at SD 1.5's channel widths C = 320 / 640 / 1280, 8 heads, F = 8 and 24, on the token
count of that UNet level. Per UNet step: forward+backward of the SD1.5-shaped UNet inflated with
ffam s=2 + STAM against the same with vanilla temporal attention (UNet weights frozen, gradients to
the temporal modules and the latents, as in tuning). STAM and vanilla alternate call by call in one
process, so machine noise hits both alike; ratios are of medians.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402

HEADS = 8
TEMPORALS = ("stam", "vanilla")


def plan(device: str):
    """(module configs (C, tokens, F), UNet (width, resolution, F), notes)."""
    frames = (8, 24)
    if device == "cuda":  # the token count of each SD 1.5 level at 512²
        return [(c, n, f) for c, n in ((320, 4096), (640, 1024), (1280, 256)) for f in frames], (320, 512, 8), []
    notes = ["cpu: fewer tokens at C = 320 / 640 (1024 / 512 instead of 4096 / 1024 at 512²; the ratio depends on "
             "C and F, the tokens only scale both) and the UNet at model_channels=64, 128² (a full-width step "
             "takes minutes on 2 cores)"]
    tokens = ((320, 1024), (640, 512), (1280, 256))
    return [(c, n, f) for c, n in tokens for f in frames], (64, 128, 8), notes


def _alternating(steps: dict, repeats: int, device: str, before: dict | None = None):
    """Median seconds of each step, calling them in turn so that noise falls on all alike;
    ``before[name]()`` runs untimed before each call of that step."""
    import statistics
    import time

    prepare = before or {}
    seconds = {name: [] for name in steps}
    for name, step in steps.items():  # warm-up
        prepare.get(name, lambda: None)()
        step()
    for _ in range(repeats):
        for name, step in steps.items():
            prepare.get(name, lambda: None)()
            common.sync(device)
            start = time.perf_counter()
            step()
            common.sync(device)
            seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in seconds.items()}


def measure_modules(device, dtype_name, configs, repeats):
    import torch

    from ei2.temporal import make_temporal

    results = {}
    for channels, tokens, frames in configs:
        torch.manual_seed(0)
        hidden = torch.randn(frames, tokens, channels, device=device, dtype=getattr(torch, dtype_name))
        steps = {}
        for temporal in TEMPORALS:
            module = make_temporal(temporal, channels, HEADS).to(device)
            with torch.no_grad():  # as after some tuning: the output map is no longer zero
                module.to_out.weight.normal_(0, 0.01)

            def step(module=module):
                x = hidden.detach().requires_grad_(True)
                module(x, frames).float().square().mean().backward()

            steps[temporal] = step
        results[channels, tokens, frames] = _alternating(steps, repeats, device)
    return results


def measure_unet(device, dtype_name, width, resolution, frames, repeats):
    import torch

    _, pack = common.comfyui(device)
    import comfy.model_management  # importable once ComfyUI is

    adapter = pack.nodes.adapter
    dtype = getattr(torch, dtype_name)
    model = common.sd15_model(device, dtype, inference=False, model_channels=width)
    model.model.diffusion_model.requires_grad_(False)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(frames, 4, resolution // 8, resolution // 8, generator=generator).to(device, dtype)
    context = torch.randn(1, 77, 768, generator=generator).to(device, dtype).expand(frames, -1, -1)
    sigma = torch.full((frames,), 3.0, device=device)
    steps, loads = {}, {}
    for temporal in TEMPORALS:
        inflated = adapter.patching.inflate(model, adapter.patching.InflateOptions(attention_type="ffam", temporal_type=temporal))
        # Loading swaps this model's temporal modules in (ComfyUI object patches): untimed, not a cost of the step.
        loads[temporal] = lambda inflated=inflated: comfy.model_management.load_models_gpu(
            [inflated, *inflated.get_nested_additional_models()])

        def step(inflated=inflated):
            options = {**inflated.model_options["transformer_options"], "cond_or_uncond": [0]}
            out = inflated.model.apply_model(x.detach().requires_grad_(True), sigma, c_crossattn=context,
                                             transformer_options=options)
            out.float().square().mean().backward()

        steps[temporal] = step
    return _alternating(steps, repeats, device, before=loads)


def run(device="cpu", dtype="float32", quick=False, repeats=None, log=print):
    repeats = repeats or (5 if quick else 9)
    module_configs, (width, resolution, frames), notes = plan(device)
    modules = common.run_isolated(measure_modules, device, dtype, module_configs, repeats)
    for config, times in modules.items():
        log(f"  temporal module C={config[0]} N={config[1]} F={config[2]}: {times}")
    unet = common.run_isolated(measure_unet, device, dtype, width, resolution, frames, repeats)
    log(f"  UNet step: {unet}")

    absolute = device == "cuda"
    lines = [f"Forward+backward, {dtype}, {HEADS} heads; median of {repeats} alternating calls after a warm-up.", ""]
    lines += [f"- {note}" for note in notes] + ([""] if notes else [])
    header = ["what", "C", "tokens", "F", "STAM / vanilla"] + (["STAM ms", "vanilla ms"] if absolute else [])
    rows = []
    for (channels, tokens, f), times in modules.items():
        rows.append(["one module", channels, tokens, f, common.ratio(times["stam"], times["vanilla"])]
                    + ([f"{times['stam'] * 1e3:.1f}", f"{times['vanilla'] * 1e3:.1f}"] if absolute else []))
    rows.append([f"UNet step (ffam s=2, model_channels={width}, {resolution}²)", "all", "all", frames,
                 common.ratio(unet["stam"], unet["vanilla"])]
                + ([f"{unet['stam'] * 1e3:.0f}", f"{unet['vanilla'] * 1e3:.0f}"] if absolute else []))
    lines.append(common.table(header, rows))
    at_1280 = [common.ratio(t["stam"], t["vanilla"]) for (c, _, f), t in modules.items() if c == 1280 and f == 8]
    lines += ["", f"Targets: one module at C = 1280, F = 8: {at_1280[0]}× (≤ 1.3); UNet step: "
              f"{common.ratio(unet['stam'], unet['vanilla'])}× (≤ 1.1)."]
    if not absolute:
        lines.append(f"For scale on this machine: UNet step with vanilla {unet['vanilla']:.2f} s.")
    return "\n".join(lines)


def main():
    common.script_main(run, __doc__)


if __name__ == "__main__":
    main()
