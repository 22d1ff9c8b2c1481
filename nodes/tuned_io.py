"""EI2SaveTuned / EI2LoadTuned: keep the result of one-shot tuning and edit again without re-tuning.

Files are safetensors (no pickle) holding only what tuning changed: the temporal modules and the
query-projection deltas, plus metadata (inflation options, base-model fingerprint, frames, steps,
learning rate). They are written to ``output/ei2_tuned/`` and listed from there and from
``models/ei2_tuned/``.
"""
from __future__ import annotations

from .adapter import tuned_state
from .adapter.tuned_state import FOLDER


class EI2SaveTuned:
    CATEGORY = "EI²"
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save"
    DESCRIPTION = "Saves what EI2OneShotTune learned (a few MB to a few hundred MB) so EI2LoadTuned can reuse it."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "The tuned model from EI2OneShotTune."}),
            "filename_prefix": ("STRING", {"default": f"{FOLDER}/clip", "tooltip":
                f"File name prefix inside the output folder. Files under {FOLDER}/ are listed by EI2LoadTuned."}),
        }}

    def save(self, model, filename_prefix):
        return {"ui": {"text": [tuned_state.save(model, filename_prefix)]}}


class EI2LoadTuned:
    CATEGORY = "EI²"
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("tuned_model",)
    OUTPUT_TOOLTIPS = ("A copy of the video model with the saved tuning applied.",)
    FUNCTION = "load"
    DESCRIPTION = "Applies tuned weights saved by EI2SaveTuned, so a clip can be edited again without re-tuning."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "The video model from EI2InflateUNet, with the options used when tuning."}),
            "tuned_weights": (tuned_state.saved_files(), {"tooltip":
                f"A file saved by EI2SaveTuned (from output/{FOLDER} or models/{FOLDER})."}),
        }}

    def load(self, model, tuned_weights):
        return (tuned_state.load(model, tuned_weights),)


NODE_CLASS_MAPPINGS = {"EI2SaveTuned": EI2SaveTuned, "EI2LoadTuned": EI2LoadTuned}
NODE_DISPLAY_NAME_MAPPINGS = {"EI2SaveTuned": "EI² Save Tuned Weights", "EI2LoadTuned": "EI² Load Tuned Weights"}
