"""What tuning changed: query deltas as ordinary weight patches on the MODEL, and the file EI2SaveTuned writes."""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict

import torch

from ...ei2.inflation import InflateOptions
from ...ei2.tuning import TRAIN_SETS
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


def check_fits(model, metadata: dict[str, str], shapes: dict[str, tuple[int, ...]], source: str = "file") -> dict:
    """Refuse saved tuned weights that do not fit ``model``, from their metadata and tensor names and shapes alone;
    returns the tuning info they record. :func:`load` runs it on the file's header before reading any tensor."""
    options = inflation_options(model)
    if options is None:
        raise ValueError("EI2LoadTuned needs an inflated MODEL: add EI2InflateUNet (with the options the weights were tuned with) first.")
    if TUNED_KEY in model.model_options:
        raise ValueError("This MODEL already carries tuned weights; connect the EI2InflateUNet output to EI2LoadTuned.")
    version = metadata.get("ei2_format")
    if version is None:
        raise ValueError(f"{source} is not an EI² tuned-weights file: choose one saved by EI2SaveTuned.")
    if version != TUNED_FORMAT:
        raise ValueError(f"{source} was saved by another version of this pack (format {str(version)[:20]}, "
                         f"this one reads {TUNED_FORMAT}) whose temporal modules differ; tune the clip again.")
    saved = _saved_options(metadata, options, source)
    mismatched = {k: (saved[k], v) for k, v in asdict(options).items() if k != "seed" and saved[k] != v}
    if mismatched:
        detail = ", ".join(f"{k}: file {a!r} vs model {b!r}" for k, (a, b) in mismatched.items())
        raise ValueError(f"{source} was tuned with other EI2InflateUNet options ({detail}); set EI2InflateUNet to match.")
    info = _tuning_info(metadata, source)
    _check_names_and_shapes(_expected_entries(model), shapes, source)
    return info


def _saved_options(metadata: dict[str, str], options, source: str) -> dict:
    """The EI2InflateUNet options a file records: the fields, types and choices EI2SaveTuned writes, or an error."""
    expected = asdict(options)
    try:
        saved = json.loads(metadata["inflation"])
        if saved.keys() != expected.keys() or any(type(saved[k]) is not type(v) for k, v in expected.items()):
            raise TypeError("other fields or types")
        InflateOptions(**saved)  # raises on choices EI2InflateUNet does not offer
    except (KeyError, AttributeError, TypeError, ValueError, RecursionError):
        raise ValueError(f"{source} has missing or damaged EI2InflateUNet options in its metadata ('inflation'); "
                         "the file was changed after EI2SaveTuned wrote it: tune the clip again.") from None
    return saved


# What EI2OneShotTune records (training.tune) and the values it can record; sampling and re-tuning read them.
_INFO_CHECKS = {
    "frames": lambda v: type(v) is int and v > 0,
    "steps": lambda v: type(v) is int and v >= 0,
    "learning_rate": lambda v: type(v) in (int, float) and math.isfinite(v) and v >= 0,
    "train": lambda v: v in TRAIN_SETS,
    "seed": lambda v: type(v) is int,
}


def _tuning_info(metadata: dict[str, str], source: str) -> dict:
    info = {}
    for key, valid in _INFO_CHECKS.items():
        if key not in metadata:
            continue  # nothing needs them: sampling skips its frames check, re-tuning counts from 0 steps
        try:
            value = json.loads(metadata[key])
        except (TypeError, ValueError, RecursionError):  # ValueError: bad JSON, or an int of thousands of digits
            value = None
        if not valid(value):
            raise ValueError(f"{source} has a damaged '{key}' in its metadata ({str(metadata[key])[:30]!r}); "
                             "the file was changed after EI2SaveTuned wrote it: tune the clip again.")
        info[key] = value
    return info


def _expected_entries(model) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Name -> (shape, dtype) of every tensor EI2SaveTuned writes for ``model``: all temporal modules, query deltas."""
    modules = temporal_modules(model)
    entries = {f"temporal.{k}": (tuple(v.shape), v.dtype) for k, v in modules.state_dict().items()} if modules is not None else {}
    weights = dict(model.model.named_parameters())
    # Deltas are always fp32 (ei2.inflation.tuning_parameters), whatever the UNet's dtype.
    entries.update({f"delta.{k}": (tuple(weights[k].shape), torch.float32) for k in query_weight_keys(model)})
    return entries


def _check_names_and_shapes(expected: dict, shapes: dict[str, tuple[int, ...]], source: str) -> None:
    others = [k for k in shapes if not k.startswith(("temporal.", "delta."))]
    if others:
        raise ValueError(f"{source} holds tensors EI2SaveTuned never writes ({sorted(others)[:3]}); "
                         "choose a file saved by EI2SaveTuned.")

    def named(prefix, keys):
        return {k for k in keys if k.startswith(prefix)}

    def listed(keys):  # the first three, as the model names them
        return sorted(k.split(".", 1)[1] for k in keys)[:3]

    temporal, saved_temporal = named("temporal.", expected), named("temporal.", shapes)
    problems = {"missing": temporal - saved_temporal, "unexpected": saved_temporal - temporal,
                "shaped differently": {k for k in temporal & saved_temporal if tuple(shapes[k]) != expected[k][0]}}
    if any(problems.values()):
        detail = ", ".join(f"{what} {listed(keys)}" for what, keys in problems.items() if keys)
        raise ValueError(f"{source} does not fit this model's temporal modules ({detail}); "
                         "was it tuned on another model? Load it with that model, or tune the clip again.")
    queries, saved_deltas = named("delta.", expected), named("delta.", shapes)
    wrong = {k for k in saved_deltas if k not in queries or tuple(shapes[k]) != expected[k][0]}
    if wrong:
        # Tuning only ever changes the attn1/attn2 query projections of this UNet.
        raise ValueError(f"{source} holds weights that are not this UNet's tuned query projections ({listed(wrong)}); "
                         "was it made for another model? Load it with the model it was tuned on.")
    if saved_deltas and saved_deltas != queries:
        # Tuning the queries changes every one of them (training.tune): a file with only some is incomplete.
        raise ValueError(f"{source} holds {len(saved_deltas)} of this UNet's {len(queries)} tuned query projections "
                         f"(missing {listed(queries - saved_deltas)}); it is incomplete: tune the clip again.")


def apply_tuned_state(model, tensors: dict[str, torch.Tensor], metadata: dict[str, str], source: str = "file"):
    """A clone of an inflated ``model`` carrying saved tuned weights; clear errors when they do not fit."""
    info = check_fits(model, metadata, {k: tuple(v.shape) for k, v in tensors.items()}, source)
    if metadata.get("base_fingerprint") != base_fingerprint(model):
        # A warning, not an error: applying tuned weights to a fine-tune of the same base is legitimate.
        logging.warning("EI²: %s was tuned on another base model; the result may differ from the tuned one.", source)
    expected = _expected_entries(model)
    converted = sorted(k for k, v in tensors.items() if v.dtype != expected[k][1])
    if converted:
        key = converted[0]
        raise ValueError(f"{source} stores {len(converted)} tensor(s) in another type than EI2SaveTuned writes "
                         f"({key}: {tensors[key].dtype}, not {expected[key][1]}); it was converted or damaged: "
                         "tune the clip again.")
    broken = [k for k, v in tensors.items() if not torch.isfinite(v).all()]
    if broken:
        raise ValueError(f"{source} holds NaN or infinite values ({sorted(broken)[:3]}); it is damaged: tune again.")
    loaded = model.clone()
    with torch.inference_mode(False):
        modules = copy_of_temporal_modules(model)
        # strict: names and shapes were checked above, so this copies every temporal tensor and nothing else.
        modules.load_state_dict({k[len("temporal."):]: v for k, v in tensors.items() if k.startswith("temporal.")})
        attach_temporal_modules(loaded, modules)
    deltas = {k[len("delta."):]: v for k, v in tensors.items() if k.startswith("delta.")}
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
    from safetensors import SafetensorError, safe_open

    register_folder()
    path = folder_paths.get_full_path_or_raise(FOLDER, name)
    try:
        with safe_open(path, framework="pt") as file:
            metadata = file.metadata() or {}
            # The header's names and shapes first: a damaged header is refused before anything is read or allocated.
            check_fits(model, metadata, {key: tuple(file.get_slice(key).get_shape()) for key in file.keys()}, name)
            tensors = {key: file.get_tensor(key) for key in file.keys()}
    except (SafetensorError, OSError) as error:
        reason = str(error).removeprefix("Error while deserializing header: ")
        raise ValueError(f"{name} cannot be read as a safetensors file ({reason}); it is damaged or incomplete: "
                         "save the tuned model again with EI2SaveTuned, or tune the clip again.") from error
    return apply_tuned_state(model, tensors, metadata, source=name)
