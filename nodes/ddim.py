"""EI2DDIMInvert and EI2Sample: invert the source clip to noise, then sample the edit from it; EI2DDIMSampler
offers the same DDIM to SamplerCustom."""
from __future__ import annotations

from ..ei2.structure_reuse import DEFAULT_STRUCTURE_REUSE
from .adapter import sampling

STEPS = ("INT", {"default": 50, "min": 1, "max": sampling.MAX_DDIM_STEPS, "tooltip":
                 "DDIM steps (Tune-A-Video: 50). Use the same number for EI2DDIMInvert and EI2Sample."})
CONTEXT = {
    "context_frames": ("INT", {"default": sampling.DEFAULT_CONTEXT.frames, "min": 1, "max": 4096, "tooltip":
        "Frames the model sees at once. A longer clip is processed in overlapping windows of this many frames, "
        "blended at every step, so memory follows the window, not the clip. A clip up to this long is one "
        "window, exactly as without windows. Use the same value for EI2DDIMInvert and EI2Sample, ideally "
        "EI2OneShotTune's frames_per_step."}),
    "context_overlap": ("INT", {"default": sampling.DEFAULT_CONTEXT.overlap, "min": 0, "max": 4095, "tooltip":
        "Frames shared by neighbouring windows (at least; the last window ends on the clip's last frame). "
        "More overlap: smoother seams, more windows to run. Must be smaller than context_frames."}),
    "context_anchor": ("BOOLEAN", {"default": sampling.DEFAULT_CONTEXT.anchor, "tooltip":
        "Also show every window the clip's first frame, as a shared reference (one frame more per window). "
        "It made no measurable difference in our benchmark (docs/benchmarks.md); try it where windows drift apart."}),
}

STRUCTURE_REUSE = ("FLOAT", {"default": DEFAULT_STRUCTURE_REUSE, "min": 0.0, "max": 1.0, "step": 0.05,
                             "tooltip":
    "The part of the steps (from the start) that keep the source's layout and motion: each such step first "
    "denoises the source at the same noise level and the edit takes its self-attention queries/keys and "
    "coarse decoder features (Plug-and-Play). 0 = off (as before); higher keeps shapes where they were, "
    "lower lets the edit change them more. Costs one extra model pass per reused step. Needs the same steps "
    "as EI2DDIMInvert."})


class EI2DDIMInvert:
    CATEGORY = "EI²"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("inverted_noise",)
    OUTPUT_TOOLTIPS = ("The clip's DDIM noise: connect it to EI2Sample (not to VAEDecode).",)
    FUNCTION = "invert"
    DESCRIPTION = ("Runs DDIM backwards (η = 0, no CFG) from the source frames to the noise they came from, so "
                   "EI2Sample can regenerate the clip under a new prompt while keeping its structure and motion.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "The video model, usually the tuned one from EI2OneShotTune. "
                                           "A plain MODEL works too (frames are then inverted independently)."}),
            "latent": ("LATENT", {"tooltip": "The source clip's frames from VAEEncode."}),
            "conditioning": ("CONDITIONING", {"tooltip": "The prompt to invert with. Tune-A-Video uses an empty "
                                                         "prompt; the source prompt often reconstructs better."}),
            "steps": STEPS,
        }, "optional": CONTEXT}

    def invert(self, model, latent, conditioning, steps, context_frames=sampling.DEFAULT_CONTEXT.frames,
               context_overlap=sampling.DEFAULT_CONTEXT.overlap, context_anchor=sampling.DEFAULT_CONTEXT.anchor):
        context = sampling.ContextWindows(context_frames, context_overlap, context_anchor)
        return (sampling.invert(model, latent, conditioning, steps, context=context),)


class EI2Sample:
    CATEGORY = "EI²"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("edited",)
    OUTPUT_TOOLTIPS = ("The edited frames; connect to VAEDecode.",)
    FUNCTION = "sample"
    DESCRIPTION = ("DDIM-samples the edited clip from EI2DDIMInvert's noise with the edit prompt, on the DDIM schedule of "
                   "its steps: the inversion's own schedule when both nodes have the same steps (it warns when they "
                   "differ; structure reuse needs them equal). structure_reuse keeps the source's layout and motion.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "The same video model used for the inversion."}),
            "positive": ("CONDITIONING", {"tooltip": "The edit prompt: what the clip should show."}),
            "negative": ("CONDITIONING", {"tooltip": "The negative prompt (often empty)."}),
            "latent": ("LATENT", {"tooltip": "inverted_noise from EI2DDIMInvert."}),
            "steps": STEPS,
            "cfg": ("FLOAT", {"default": 7.5, "min": 0.0, "max": 30.0, "step": 0.1, "round": 0.01, "tooltip":
                              "Classifier-free guidance: how strongly the edit prompt is followed. "
                              "Tune-A-Video uses 12.5; 1.0 with the source prompt reconstructs the clip."}),
            "eta": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip":
                              "0 = deterministic DDIM (keeps the source structure best). Above 0 adds fresh "
                              "noise each step, drawn from the seed."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "tooltip":
                             "Seed for the noise that eta > 0 adds; unused at eta 0."}),
        }, "optional": {**CONTEXT, "structure_reuse": STRUCTURE_REUSE}}

    def sample(self, model, positive, negative, latent, steps, cfg, eta, seed,
               context_frames=sampling.DEFAULT_CONTEXT.frames, context_overlap=sampling.DEFAULT_CONTEXT.overlap,
               context_anchor=sampling.DEFAULT_CONTEXT.anchor, structure_reuse=0.0):
        context = sampling.ContextWindows(context_frames, context_overlap, context_anchor)
        return (sampling.sample(model, positive, negative, latent, steps=steps, cfg=cfg, eta=eta, seed=seed,
                                context=context, structure_reuse=structure_reuse),)


class EI2DDIMSampler:
    CATEGORY = "EI²"
    RETURN_TYPES = ("SAMPLER",)
    OUTPUT_TOOLTIPS = ("EI²'s DDIM, for SamplerCustom / SamplerCustomAdvanced.",)
    FUNCTION = "get_sampler"
    DESCRIPTION = ("EI²'s DDIM as a SAMPLER for SamplerCustom / SamplerCustomAdvanced: plain DDIM on whatever sigmas "
                   "you connect. For an edit from EI2DDIMInvert use EI2Sample, which also samples on the "
                   "inversion's schedule and can reuse the source's structure.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "eta": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip":
                              "0 = deterministic DDIM. Above 0 adds fresh noise each step, drawn from the "
                              "sampler node's noise seed."}),
        }}

    def get_sampler(self, eta):
        return (sampling.ddim_sampler(eta),)


NODE_CLASS_MAPPINGS = {"EI2DDIMInvert": EI2DDIMInvert, "EI2Sample": EI2Sample, "EI2DDIMSampler": EI2DDIMSampler}
NODE_DISPLAY_NAME_MAPPINGS = {"EI2DDIMInvert": "EI² DDIM Invert", "EI2Sample": "EI² Sample (DDIM)",
                              "EI2DDIMSampler": "EI² DDIM Sampler"}
