"""Covariate-shift probe at Tune-A-Video's tuning budget: how far tuning moves each transformer block's output.

    python -m benchmarks.shift [--quick] [--device cpu|cuda]

The paper's thesis: temporal modules added to an image model shift its feature distribution (and
so erode the edit prompt's effect); STAM restrains that shift while fitting the clip comparably.
Here, with :mod:`ei2.diagnostics`:

* the probe records per-channel mean/variance of every ``BasicTransformerBlock`` output (what the
  following modules see, temporal module included wherever it is placed) on held-out inputs: the
  clip noised at three timesteps with fixed noise, under three held-out "prompts" that are random
  conditionings with fixed seeds (no text encoder is needed or used);
* reference = the untuned inflated model with the same frame attention and STAM (its temporal
  modules are exact identities), so the shift is the temporal modules' own; the image model's
  numbers are given too;
* models: ffam + {stam, vanilla} × temporal_placement {after_feedforward, after_self_attention},
  each tuned by ``adapter.training.tune`` at Tune-A-Video's settings (AdamW lr 3e-5, 500 steps, weight decay
  1e-2, clip 1.0), train=temporal (only the temporal modules move, so the shift is theirs), same
  clip, prompt and seed. Fit = drop of the ε-MSE on fixed draws of the training clip and prompt;
  shorter runs with the same seed are exact prefixes of the 500-step run (no schedule, same draws),
  which gives each model's shift as a function of its fit, and so the shift at matched fit.

The UNet is SD1.5-shaped with random weights, reduced in width so the probe runs on a CPU; the clip
is a synthetic moving texture in latent space.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402

HELD_OUT_SEEDS = (1001, 1002, 1003)
PROBE_TIMESTEPS = (200, 500, 800)
TEMPORALS = ("stam", "vanilla")
PLACEMENTS = ("after_feedforward", "after_self_attention")
LEARNING_RATE, STEPS = 3e-5, 500  # Tune-A-Video's


def moving_clip(frames: int, side: int, seed: int = 0):
    """A smooth random latent texture that translates one latent pixel per frame (unit-scale latents / 0.18215)."""
    import torch
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(seed)
    field = torch.randn(1, 4, side // 4 + 2, side // 4 + 2, generator=generator)
    field = F.interpolate(field, size=(side + frames, side + frames), mode="bicubic", align_corners=False)[0]
    clip = torch.stack([field[:, i:i + side, i:i + side] for i in range(frames)])
    return clip / clip.std() * 0.8 / 0.18215  # SD latents have std ≈ 0.8 after scaling


def measure(device, width, resolution, frames, checkpoints):
    """Per (temporal, placement): [(steps, fit, shift vs reference, shift vs image)] at each checkpoint."""
    import torch

    from ei2.diagnostics import record_statistics, shift

    comfy, pack = common.comfyui(device)
    import comfy.model_management  # importable once ComfyUI is

    adapter = pack.nodes.adapter
    image = common.sd15_model(device, torch.float32, model_channels=width)
    blocks = {adapter.patching.block_name(b[:2], b[2]): m for b, m in adapter.patching.transformer_blocks(image.model.diffusion_model)}
    clip = moving_clip(frames, resolution // 8)
    x0 = image.model.process_latent_in(clip.clone())
    sigmas = image.get_model_object("model_sampling").sigmas
    generator = torch.Generator().manual_seed(7)
    probe_noises = [torch.randn(x0.shape, generator=generator) for _ in PROBE_TIMESTEPS]
    fit_draws = [(int(torch.randint(len(sigmas), (1,), generator=generator)), torch.randn(x0.shape, generator=generator))
                 for _ in range(16)]
    prompts = [common.random_conditioning(seed)[0][0].expand(frames, -1, -1) for seed in HELD_OUT_SEEDS]
    training_prompt = common.random_conditioning(0)

    def predict(model, t, noise, context):
        comfy.model_management.load_models_gpu([model, *model.get_nested_additional_models()])  # applies its patches
        options = model.model_options.get("transformer_options", {})
        sigma = sigmas[t].expand(frames)
        return model.model.apply_model((x0 + noise * sigmas[t]).to(device), sigma.to(device), c_crossattn=context.to(device),
                                       transformer_options={**options, "cond_or_uncond": [0]})

    def probe(model):
        def run():
            with torch.inference_mode():
                for t, noise in zip(PROBE_TIMESTEPS, probe_noises):
                    for context in prompts:
                        predict(model, t, noise, context)
        return record_statistics(run, blocks)

    def loss(model):
        """ε-MSE on fixed draws of the training clip and prompt: the tuning objective without its noise."""
        context = training_prompt[0][0].expand(frames, -1, -1)
        with torch.inference_mode():
            return sum(torch.mean(((x0.to(device) + noise.to(device) * sigmas[t] - predict(model, t, noise, context))
                                   / sigmas[t] - noise.to(device)) ** 2).item() for t, noise in fit_draws) / len(fit_draws)

    def inflate(temporal, placement):
        return adapter.patching.inflate(image, adapter.patching.InflateOptions(temporal_type=temporal, temporal_placement=placement))

    image_stats = probe(image)
    reference_model = inflate("stam", PLACEMENTS[0])  # the frame attention alone: STAM starts as the identity
    reference, start_loss = probe(reference_model), loss(reference_model)
    curves, per_block = {}, {}
    for temporal in TEMPORALS:
        for placement in PLACEMENTS:
            untuned = inflate(temporal, placement)
            stats = probe(untuned)
            curve = [(0, start_loss - loss(untuned), shift(reference, stats), shift(image_stats, stats))]
            for steps in checkpoints:
                tuned, _ = adapter.training.tune(untuned, clip, training_prompt, steps=steps, learning_rate=LEARNING_RATE,
                                        train="temporal", seed=0, gradient_checkpointing=False)
                stats = probe(tuned)
                curve.append((steps, start_loss - loss(tuned), shift(reference, stats), shift(image_stats, stats)))
            curves[temporal, placement] = [(n, fit, _summary(vs_ref), _summary(vs_image)) for n, fit, vs_ref, vs_image in curve]
            per_block[temporal, placement] = {name: (b.mean_shift, b.var_ratio) for name, b in curve[-1][2].blocks.items()}
    untuned_shift = _summary(shift(image_stats, reference))
    return curves, per_block, list(blocks), start_loss, untuned_shift


def _summary(table):
    return table.mean_shift, table.max_mean_shift, table.var_ratio, table.max_abs_log_var_ratio


def shift_at_fit(curve, fit):
    """The mean |Δμ|/σ (vs reference) where the curve reaches ``fit``, linear between checkpoints; None if never."""
    points = [(f, summary[0]) for _, f, summary, _ in curve]
    for (f0, s0), (f1, s1) in zip(points, points[1:]):
        if min(f0, f1) <= fit <= max(f0, f1):
            return s0 if f1 == f0 else s0 + (s1 - s0) * (fit - f0) / (f1 - f0)
    return None


def run(device="cpu", quick=False, log=print):
    width, resolution, frames = (320, 512, 8) if device == "cuda" else (32, 64, 8)
    checkpoints = (100, 250, STEPS) if quick else (50, 100, 200, 350, STEPS)
    curves, per_block, names, start_loss, untuned_shift = common.run_isolated(
        measure, device, width, resolution, frames, checkpoints)
    for key, curve in curves.items():
        log(f"  shift {key}: {curve}")

    lines = [f"SD1.5-shaped UNet (random weights), model_channels={width}, {len(names)} transformer blocks, ffam s=2; "
             f"clip: {frames} frames at {resolution}² (synthetic moving latent texture). Tuning: adapter.training.tune, "
             f"train=temporal, AdamW lr {LEARNING_RATE:g}, {STEPS} steps, weight decay 1e-2, clip 1.0 (Tune-A-Video's "
             f"budget), seed 0; checkpoints {checkpoints} are exact prefixes of the {STEPS}-step run. Held-out inputs: "
             f"the clip noised at t ∈ {PROBE_TIMESTEPS} × {len(HELD_OUT_SEEDS)} random conditionings. Fit = drop of "
             f"the ε-MSE on 16 fixed draws of the training clip and prompt (untuned: {start_loss:.4f}).", "",
             "Shift columns: mean / max over blocks of mean_c |Δμ_c|/σ_c, geometric-mean variance ratio and the worst "
             "block's (as max(r, 1/r)), against the untuned ffam model (the temporal modules' own shift); the last "
             f"column against the image model (ffam alone shifts it by {untuned_shift[0]:.4f}).", ""]
    header = ["temporal", "placement", "steps", "fit (loss drop)", "mean \\|Δμ\\|/σ", "max", "var ratio",
              "worst var ×", "vs image: mean \\|Δμ\\|/σ"]
    rows = [[t, p, n, f"{fit:.5f}", f"{a[0]:.4f}", f"{a[1]:.4f}", f"{a[2]:.4f}", f"{math.exp(a[3]):.3f}", f"{b[0]:.4f}"]
            for (t, p), curve in curves.items() for n, fit, a, b in curve if n in (0, STEPS)]
    lines.append(common.table(header, rows))

    lines += ["", f"At {STEPS} steps, STAM against vanilla at the same placement (the paper's claim: STAM fits "
              "comparably, ≥ 0.8× vanilla's loss drop, with ≤ 0.5× its shift); at matched fit = both shifts read "
              "off their fit curves at the smaller of the two final fits:", ""]
    claim_rows = []
    for placement in PLACEMENTS:
        stam, vanilla = curves["stam", placement], curves["vanilla", placement]
        fit_ratio = common.ratio(stam[-1][1], vanilla[-1][1])
        shift_ratio = common.ratio(stam[-1][2][0], vanilla[-1][2][0], digits=3)
        matched = min(stam[-1][1], vanilla[-1][1])
        at_stam, at_vanilla = shift_at_fit(stam, matched), shift_at_fit(vanilla, matched)
        claim_rows.append([placement, fit_ratio, shift_ratio, f"{matched:.5f}",
                           "n/a" if at_stam is None else f"{at_stam:.4f}", "n/a" if at_vanilla is None else f"{at_vanilla:.4f}",
                           common.ratio(at_stam, at_vanilla, digits=3)])
    lines.append(common.table(["placement", "fit: STAM / vanilla", "shift: STAM / vanilla", "matched fit",
                               "STAM shift there", "vanilla shift there", "STAM / vanilla at matched fit"], claim_rows))

    lines += ["", f"Per block at {STEPS} steps, against the untuned ffam model: mean |Δμ|/σ (var ratio):", ""]
    keys = list(per_block)
    lines.append(common.table(["block", *(f"{t} {p}" for t, p in keys)], [
        [name, *(f"{per_block[key][name][0]:.4f} ({per_block[key][name][1]:.3f})" for key in keys)] for name in names]))
    return "\n".join(lines)


def main():
    common.script_main(run, __doc__)


if __name__ == "__main__":
    main()
