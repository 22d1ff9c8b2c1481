"""What tuning changed: query deltas as ordinary weight patches on the MODEL, and the file EI2SaveTuned writes."""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict

import torch

from .patching import attach_temporal_modules, copy_of_temporal_modules, inflation_options, query_weight_keys, temporal_modules

TUNED_KEY = "ei2_tuned"  # in model_options: the TunedQueries of a tuned MODEL
# Version 2: clipped STAM with its norm estimates, Tune-A-Video's vanilla init, temporal_placement.
TUNED_FORMAT = "2"
FOLDER = "ei2_tuned"  # output/ei2_tuned (written) and models/ei2_tuned (read too)


class TunedQueries:
    """Query-projection deltas of a tuned MODEL plus how it was tuned.

    Kept in ``model_options`` so it follows the MODEL through clones; ``__deepcopy__`` returns
    itself because ComfyUI deep-copies model_options on every clone and these tensors never change.
    """

    def __init__(self, deltas: dict[str, torch.Tensor], info: dict):
        self.deltas, self.info = deltas, info

    def __deepcopy__(self, memo):
        return self


def set_query_deltas(model, deltas: dict[str, torch.Tensor], info: dict) -> None:
    """Apply ``deltas`` as ordinary ComfyUI weight patches (``diff``) and remember them.

    Tuning an already tuned MODEL adds to its deltas: what is remembered (and saved) is the sum.
    """
    if deltas:
        model.add_patches({key: (delta,) for key, delta in deltas.items()})
    previous = model.model_options.get(TUNED_KEY)
    if previous is not None:
        deltas = {k: previous.deltas.get(k, 0) + deltas.get(k, 0) for k in previous.deltas.keys() | deltas.keys()}
        info = {**info, "steps": previous.info.get("steps", 0) + info.get("steps", 0)}
    model.model_options[TUNED_KEY] = TunedQueries(deltas, info)


def base_fingerprint(model) -> str:
    """A short hash of the base UNet's query weights (as loaded, before any patch), to recognise its base model."""
    import hashlib

    digest = hashlib.sha256()
    for key in query_weight_keys(model):
        backup = model.backup.get(key)  # ComfyUI keeps the unpatched weight here while patches are applied
        weight = backup.weight if backup is not None else dict(model.model.named_parameters())[key]
        digest.update(weight.detach().float().cpu().flatten()[:4096].numpy().tobytes())
    return digest.hexdigest()[:16]


def tuned_state(model) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Everything tuning changed, as flat tensors + string metadata (for safetensors)."""
    options = inflation_options(model)
    tuned = model.model_options.get(TUNED_KEY)
    if options is None or tuned is None:
        raise ValueError("This MODEL has no tuned weights to save: connect the output of EI2OneShotTune or EI2LoadTuned.")
    tensors = {f"temporal.{k}": v.detach().cpu().contiguous() for k, v in temporal_modules(model).state_dict().items()} \
        if temporal_modules(model) is not None else {}
    tensors.update({f"delta.{k}": v.contiguous() for k, v in tuned.deltas.items()})
    metadata = {"ei2_format": TUNED_FORMAT, "inflation": json.dumps(asdict(options)), "base_fingerprint": base_fingerprint(model),
                **{k: json.dumps(v) for k, v in tuned.info.items()}}
    return tensors, metadata


def apply_tuned_state(model, tensors: dict[str, torch.Tensor], metadata: dict[str, str], source: str = "file"):
    """A clone of an inflated ``model`` carrying saved tuned weights; clear errors when they do not fit."""
    options = inflation_options(model)
    if options is None:
        raise ValueError("EI2LoadTuned needs an inflated MODEL: add EI2InflateUNet (with the options the weights were tuned with) first.")
    if TUNED_KEY in model.model_options:
        raise ValueError("This MODEL already carries tuned weights; connect the EI2InflateUNet output to EI2LoadTuned.")
    if metadata.get("ei2_format") is None:
        raise ValueError(f"{source} is not an EI² tuned-weights file (made by EI2SaveTuned).")
    if metadata["ei2_format"] != TUNED_FORMAT:
        raise ValueError(f"{source} was saved by another version of this pack (format {metadata['ei2_format']}, "
                         f"this one reads {TUNED_FORMAT}) whose temporal modules differ; tune the clip again.")
    saved = json.loads(metadata["inflation"])
    mismatched = {k: (saved.get(k), v) for k, v in asdict(options).items() if k != "seed" and saved.get(k) != v}
    if mismatched:
        detail = ", ".join(f"{k}: file {a!r} vs model {b!r}" for k, (a, b) in mismatched.items())
        raise ValueError(f"{source} was tuned with other EI2InflateUNet options ({detail}); set EI2InflateUNet to match.")
    if metadata.get("base_fingerprint") != base_fingerprint(model):
        # A warning, not an error: applying tuned weights to a fine-tune of the same base is legitimate.
        logging.warning("EI²: %s was tuned on another base model; the result may differ from the tuned one.", source)

    broken = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:
        raise ValueError(f"{source} holds NaN or infinite values ({sorted(broken)[:3]}); it is damaged: tune again.")
    loaded = model.clone()
    with torch.inference_mode(False):
        modules = copy_of_temporal_modules(model)
        temporal = {k[len("temporal."):]: v for k, v in tensors.items() if k.startswith("temporal.")}
        missing, unexpected = modules.load_state_dict(temporal, strict=False)
        if missing or unexpected:
            raise ValueError(f"{source} does not fit this model's temporal modules "
                             f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}).")
        attach_temporal_modules(loaded, modules)
    deltas = {k[len("delta."):]: v for k, v in tensors.items() if k.startswith("delta.")}
    shapes, queries = dict(model.model.named_parameters()), set(query_weight_keys(model))
    wrong = [k for k, v in deltas.items() if k not in queries or shapes[k].shape != v.shape]
    if wrong:
        # Tuning only ever changes the attn1/attn2 query projections of this UNet.
        raise ValueError(f"{source} holds weights that are not this UNet's tuned query projections ({sorted(wrong)[:3]}); "
                         "was it made for another model?")
    info = {k: json.loads(metadata[k]) for k in ("frames", "steps", "learning_rate", "train", "seed") if k in metadata}
    set_query_deltas(loaded, deltas, info)
    return loaded


def tuned_frames(model):
    tuned = model.model_options.get(TUNED_KEY)
    return None if tuned is None else tuned.info.get("frames")


# --- files -------------------------------------------------------------------------------------------

def register_folder() -> None:
    """Make ``ei2_tuned`` a model folder: models/ei2_tuned and output/ei2_tuned."""
    import folder_paths

    if FOLDER not in folder_paths.folder_names_and_paths:
        folder_paths.folder_names_and_paths[FOLDER] = ([os.path.join(folder_paths.models_dir, FOLDER)], {".safetensors"})
    folder_paths.add_model_folder_path(FOLDER, os.path.join(folder_paths.get_output_directory(), FOLDER))


def saved_files() -> list[str]:
    import folder_paths

    register_folder()
    return folder_paths.get_filename_list(FOLDER)


def save(model, filename_prefix: str) -> str:
    """Write the tuned state of ``model`` as a numbered safetensors file in the output folder; its relative path."""
    import folder_paths
    from safetensors.torch import save_file

    tensors, metadata = tuned_state(model)
    folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, folder_paths.get_output_directory())
    filename = f"{name}_{counter:05}_.safetensors"
    save_file(tensors, os.path.join(folder, filename), metadata=metadata)
    return os.path.join(subfolder, filename)


def load(model, name: str):
    """A clone of ``model`` with the tuned weights saved as ``name`` (see :func:`saved_files`)."""
    import folder_paths
    from safetensors import safe_open

    register_folder()
    with safe_open(folder_paths.get_full_path_or_raise(FOLDER, name), framework="pt") as file:
        metadata = file.metadata() or {}
        tensors = {key: file.get_tensor(key) for key in file.keys()}
    return apply_tuned_state(model, tensors, metadata, source=name)
