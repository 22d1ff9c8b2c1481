"""EI2SaveTuned / EI2LoadTuned: keep the result of one-shot tuning and edit again without re-tuning.

Files are safetensors (no pickle) holding only what tuning changed: the temporal modules and the
query-projection deltas, plus metadata (inflation options, base-model fingerprint, frames, steps,
learning rate). They are written to ``output/ei2_tuned/`` and listed from there and from
``models/ei2_tuned/``.
"""
from __future__ import annotations

import os

from . import adapter

FOLDER = "ei2_tuned"


def register_folder() -> None:
    """Make ``ei2_tuned`` a model folder: models/ei2_tuned and output/ei2_tuned."""
    import folder_paths

    if FOLDER not in folder_paths.folder_names_and_paths:
        folder_paths.folder_names_and_paths[FOLDER] = ([os.path.join(folder_paths.models_dir, FOLDER)], {".safetensors"})
    folder_paths.add_model_folder_path(FOLDER, os.path.join(folder_paths.get_output_directory(), FOLDER))


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
        import folder_paths
        from safetensors.torch import save_file

        tensors, metadata = adapter.tuned_state(model)
        output = folder_paths.get_output_directory()
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, output)
        filename = f"{name}_{counter:05}_.safetensors"
        save_file(tensors, os.path.join(folder, filename), metadata=metadata)
        return {"ui": {"text": [os.path.join(subfolder, filename)]}}


class EI2LoadTuned:
    CATEGORY = "EI²"
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("tuned_model",)
    OUTPUT_TOOLTIPS = ("A copy of the video model with the saved tuning applied.",)
    FUNCTION = "load"
    DESCRIPTION = "Applies tuned weights saved by EI2SaveTuned, so a clip can be edited again without re-tuning."

    @classmethod
    def INPUT_TYPES(cls):
        import folder_paths

        register_folder()
        return {"required": {
            "model": ("MODEL", {"tooltip": "The video model from EI2InflateUNet, with the options used when tuning."}),
            "tuned_weights": (folder_paths.get_filename_list(FOLDER), {"tooltip":
                f"A file saved by EI2SaveTuned (from output/{FOLDER} or models/{FOLDER})."}),
        }}

    def load(self, model, tuned_weights):
        import folder_paths
        from safetensors import safe_open

        register_folder()
        path = folder_paths.get_full_path_or_raise(FOLDER, tuned_weights)
        with safe_open(path, framework="pt") as file:
            metadata = file.metadata() or {}
            tensors = {key: file.get_tensor(key) for key in file.keys()}
        return (adapter.apply_tuned_state(model, tensors, metadata, source=tuned_weights),)


NODE_CLASS_MAPPINGS = {"EI2SaveTuned": EI2SaveTuned, "EI2LoadTuned": EI2LoadTuned}
NODE_DISPLAY_NAME_MAPPINGS = {"EI2SaveTuned": "EI² Save Tuned Weights", "EI2LoadTuned": "EI² Load Tuned Weights"}
