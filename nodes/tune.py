"""EI2OneShotTune: tune an inflated MODEL on the source clip, inside the graph."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..ei2.tuning import TRAIN_SETS, LossNotFinite
from .adapter import training
from .adapter.sampling import DEFAULT_CONTEXT
from .adapter.runtime import Progress


class EI2OneShotTune:
    CATEGORY = "EI²"
    RETURN_TYPES = ("MODEL", "IMAGE")
    RETURN_NAMES = ("tuned_model", "loss_plot")
    OUTPUT_TOOLTIPS = ("A copy of the video model fitted to the clip (the input MODEL is unchanged).",
                       "The training loss per step; connect a Preview Image to look at it.")
    FUNCTION = "tune"
    DESCRIPTION = (
        "One-shot tuning (Tune-A-Video / EI²): fits the video model to your source clip and its prompt so "
        "that editing keeps the clip's motion and layout. 500 steps at 512×512 take minutes on a GPU."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "The video model from EI2InflateUNet."}),
            "latent": ("LATENT", {"tooltip": "The source clip's frames, encoded with VAEEncode (one batch = one clip)."}),
            "conditioning": ("CONDITIONING", {"tooltip": "The source prompt: what the clip shows now (CLIPTextEncode)."}),
            "steps": ("INT", {"default": 500, "min": 0, "max": 10000, "tooltip":
                "Training steps (Tune-A-Video: 500). 0 returns the model unchanged."}),
            "learning_rate": ("FLOAT", {"default": 3e-5, "min": 1e-8, "max": 1e-2, "step": 1e-6, "round": False,
                                        "tooltip": "AdamW learning rate (Tune-A-Video: 3e-5)."}),
            "train": (TRAIN_SETS, {"default": "temporal_and_queries", "tooltip":
                "What is tuned. temporal_and_queries (Tune-A-Video's choice): the temporal modules and the "
                "query projections of both attentions. temporal: only the temporal modules. queries: only "
                "the query projections."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "tooltip":
                "Seed for the noise and timesteps drawn while tuning."}),
            "gradient_checkpointing": ("BOOLEAN", {"default": True, "tooltip":
                "Recompute activations in the backward pass: much less memory, about a third slower."}),
        }, "optional": {
            "frames_per_step": ("INT", {"default": DEFAULT_CONTEXT.frames, "min": 1, "max": 4096, "tooltip":
                "Frames in each training step (Tune-A-Video's n_sample_frames): every step tunes on a window of "
                "this many frames from a random place in the clip, so memory follows the window, not the clip. "
                "A clip up to this long is used whole. Match EI2DDIMInvert's and EI2Sample's context_frames."}),
            "frame_stride": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip":
                "Take every n-th frame into a window (Tune-A-Video's sample_frame_rate): 2 tunes on faster "
                "motion over a longer stretch of the clip."}),
        }}

    def tune(self, model, latent, conditioning, steps, learning_rate, train, seed, gradient_checkpointing,
             frames_per_step=DEFAULT_CONTEXT.frames, frame_stride=1):
        progress = Progress(steps, console="EI² tuning")
        try:
            tuned, losses = training.tune(
                model, latent["samples"], conditioning, steps=steps, learning_rate=learning_rate, train=train,
                seed=seed, gradient_checkpointing=gradient_checkpointing, frames_per_step=frames_per_step,
                frame_stride=frame_stride,
                on_step=lambda step, loss: progress.step(loss=f"{loss:.4f}"))
        except LossNotFinite as error:
            raise ValueError(f"Tuning stopped: {error}. Lower learning_rate (e.g. 1e-5) and check that the LATENT "
                             "comes from VAEEncode of the source frames. The input MODEL is unchanged.") from None
        finally:
            progress.close()
        return tuned, loss_plot(losses)


def loss_plot(losses, width=512, height=256) -> torch.Tensor:
    """The loss curve as an IMAGE ``[1, H, W, 3]``: raw losses in grey, a running mean in blue."""
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    margin = 24
    draw.rectangle([margin, margin, width - margin, height - margin], outline=(160, 160, 160))
    if losses:
        values = np.asarray(losses, dtype=np.float64)
        window = max(1, len(values) // 20)
        smooth = np.convolve(values, np.ones(window) / window, mode="valid")
        low, high = float(values.min()), float(values.max())
        span = (high - low) or 1.0

        def points(series, offset):
            count = max(len(values) - 1, 1)
            return [(margin + (i + offset) / count * (width - 2 * margin),
                     height - margin - (v - low) / span * (height - 2 * margin)) for i, v in enumerate(series)]

        draw.line(points(values, 0), fill=(170, 170, 170), width=1)
        draw.line(points(smooth, (window - 1) / 2), fill=(30, 90, 200), width=2)
        draw.text((margin, 4), f"loss  first {values[0]:.4f}  last {values[-1]:.4f}  steps {len(values)}", fill="black")
    else:
        draw.text((margin, 4), "no tuning steps", fill="black")
    return torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255.0)[None]


NODE_CLASS_MAPPINGS = {"EI2OneShotTune": EI2OneShotTune}
NODE_DISPLAY_NAME_MAPPINGS = {"EI2OneShotTune": "EI² One-Shot Tune"}
