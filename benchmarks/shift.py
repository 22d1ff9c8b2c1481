"""Covariate-shift probe: how far inflation and tuning move each transformer block's output distribution.

    python -m benchmarks.shift [--quick] [--device cpu|cuda]

The paper's thesis: temporal modules added to an image model shift its feature distribution (and
so erode the edit prompt's effect); STAM restrains that shift. Here, with :mod:`ei2.diagnostics`:

* reference = the image model; the probe records per-channel mean/variance of every
  ``BasicTransformerBlock`` output (the block's hidden state after self-attention, the temporal
  module, cross-attention and feed-forward);
* held-out inputs: the clip noised at three timesteps with fixed noise, under three held-out
  "prompts" that are random conditionings with fixed seeds (no text encoder is needed or used);
* models: the inflated model before tuning (its temporal modules are exact identities at init,
  so per_frame + STAM untuned must show exactly zero shift, and ffam / sparse_causal untuned show
  the shift of the attention change alone), and the inflated model after one-shot tuning for
  temporal_type ∈ {stam, vanilla} × attention_type ∈ {ffam, sparse_causal}, all on the same clip
  with the same budget (steps, learning rate, seed, train=temporal so only the temporal modules
  move).

The UNet is SD1.5-shaped with random weights, reduced in width so the whole probe runs in minutes
on a CPU; the clip is a synthetic moving texture in latent space. The learning rate is far above
Tune-A-Video's 3e-5 so that a few dozen steps actually move the zero-initialised modules.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402

HELD_OUT_SEEDS = (1001, 1002, 1003)
PROBE_TIMESTEPS = (200, 500, 800)
CONFIGS = (("ffam", "stam"), ("ffam", "vanilla"), ("sparse_causal", "stam"), ("sparse_causal", "vanilla"))


def moving_clip(frames: int, side: int, seed: int = 0):
    """A smooth random latent texture that translates one latent pixel per frame (unit-scale latents / 0.18215)."""
    import torch
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(seed)
    field = torch.randn(1, 4, side // 4 + 2, side // 4 + 2, generator=generator)
    field = F.interpolate(field, size=(side + frames, side + frames), mode="bicubic", align_corners=False)[0]
    clip = torch.stack([field[:, i:i + side, i:i + side] for i in range(frames)])
    return clip / clip.std() * 0.8 / 0.18215  # SD latents have std ≈ 0.8 after scaling


def measure(device, width, resolution, frames, steps, learning_rate, per_frame_rows):
    import torch

    from ei2.diagnostics import record_statistics, shift

    comfy, pack = common.comfyui(device)
    adapter = pack.nodes.adapter
    image = common.sd15_model(device, torch.float32, model_channels=width)
    diffusion_model = image.model.diffusion_model
    blocks = {adapter.block_name(b[:2], b[2]): m for b, m in adapter.transformer_blocks(diffusion_model)}
    clip = moving_clip(frames, resolution // 8)
    x0 = image.model.process_latent_in(clip.clone())
    sigmas = image.get_model_object("model_sampling").sigmas
    generator = torch.Generator().manual_seed(7)
    noises = [torch.randn(x0.shape, generator=generator) for _ in PROBE_TIMESTEPS]
    prompts = [common.random_conditioning(seed)[0][0].expand(frames, -1, -1) for seed in HELD_OUT_SEEDS]

    def probe(model):
        options = model.model_options.get("transformer_options", {})

        def run():
            with torch.inference_mode():
                for t, noise in zip(PROBE_TIMESTEPS, noises):
                    sigma = sigmas[t].expand(frames)
                    for context in prompts:
                        model.model.apply_model((x0 + noise * sigmas[t]).to(device), sigma.to(device),
                                                c_crossattn=context.to(device),
                                                transformer_options={**options, "cond_or_uncond": [0]})
        return record_statistics(run, blocks)

    reference = probe(image)
    rows, per_block = [], {}

    def inflate(attention, temporal):
        return adapter.inflate(image, adapter.InflateOptions(attention_type=attention, temporal_type=temporal))

    def add_row(label, stats, untuned_stats=None, loss=None):
        vs_image = shift(reference, stats)
        vs_untuned = shift(untuned_stats, stats) if untuned_stats is not None else None
        rows.append((label, vs_image, vs_untuned, loss))
        return vs_image

    add_row("per_frame + stam, untuned (sanity: must be 0)", probe(inflate("per_frame", "stam")))
    attentions = (["per_frame"] if per_frame_rows else []) + ["ffam", "sparse_causal"]
    untuned = {}
    for attention in attentions:
        untuned[attention] = probe(inflate(attention, "stam"))
        if attention != "per_frame":
            add_row(f"{attention}, untuned (attention change only)", untuned[attention])
    configs = ([("per_frame", "stam"), ("per_frame", "vanilla")] if per_frame_rows else []) + list(CONFIGS)
    for attention, temporal in configs:
        tuned, losses = adapter.tune(inflate(attention, temporal), clip, common.random_conditioning(0), steps=steps,
                                     learning_rate=learning_rate, train="temporal", seed=0, gradient_checkpointing=False)
        label = f"{attention} + {temporal}, tuned"
        table = add_row(label, probe(tuned), untuned[attention],
                        (losses[0], sum(losses[-5:]) / len(losses[-5:])))
        per_block[label] = {name: (b.mean_shift, b.var_ratio) for name, b in table.blocks.items()}
    summary = [(label, (a.mean_shift, a.max_mean_shift, a.var_ratio, a.max_abs_log_var_ratio),
                None if b is None else (b.mean_shift, b.max_mean_shift, b.var_ratio, b.max_abs_log_var_ratio), loss)
               for label, a, b, loss in rows]
    return summary, per_block, list(blocks)


def run(device="cpu", quick=False, log=print):
    width, resolution, frames = (320, 512, 8) if device == "cuda" else (32, 64, 8)
    steps = 60 if device == "cuda" else (40 if quick else 60)
    learning_rate = 1e-2
    per_frame_rows = True
    summary, per_block, names = common.run_isolated(measure, device, width, resolution, frames, steps,
                                                    learning_rate, per_frame_rows)
    for row in summary:
        log(f"  shift {row}")

    def fmt(values):
        return ["-"] * 4 if values is None else [f"{values[0]:.4f}", f"{values[1]:.4f}", f"{values[2]:.4f}",
                                                 f"{math.exp(values[3]):.3f}"]

    lines = [f"SD1.5-shaped UNet (random weights), model_channels={width}, {len(names)} transformer blocks; clip: "
             f"{frames} frames at {resolution}² (synthetic moving latent texture). Held-out inputs: the clip noised "
             f"at t ∈ {PROBE_TIMESTEPS} (fixed noise) × {len(HELD_OUT_SEEDS)} held-out prompts = random "
             f"conditionings with seeds {HELD_OUT_SEEDS} (no text encoder). Tuning: adapter.tune, train=temporal, "
             f"{steps} steps, lr {learning_rate:g} (AdamW; ≫ Tune-A-Video's 3e-5 so that the zero-initialised "
             "modules move on this budget), seed 0, same clip and prompt (seed 0) for every row.", "",
             "Columns: mean / max over blocks of mean_c |Δμ_c|/σ_ref,c; geometric mean over blocks of the "
             "per-block variance ratio (itself a geometric mean over channels) and the worst block's ratio "
             "(as max(r, 1/r)). “vs image” compares with the image model; “vs untuned” with the same inflated "
             "model before tuning (the temporal modules' own share).", ""]
    header = ["model", "vs image: mean \\|Δμ\\|/σ", "max", "var ratio", "worst var ×",
              "vs untuned: mean \\|Δμ\\|/σ", "max", "var ratio", "worst var ×", "loss: step 1 → mean of last 5"]
    rows = [[label, *fmt(a), *fmt(b), "-" if loss is None else f"{loss[0]:.4f} → {loss[1]:.4f}"] for label, a, b, loss in summary]
    lines.append(common.table(header, rows))
    lines += ["", "Per block, vs image model: mean |Δμ|/σ (var ratio):", ""]
    labels = list(per_block)
    lines.append(common.table(["block", *labels], [
        [name, *(f"{per_block[label][name][0]:.4f} ({per_block[label][name][1]:.3f})" for label in labels)]
        for name in names]))
    return "\n".join(lines)


def main():
    common.script_main(run, __doc__)


if __name__ == "__main__":
    main()
