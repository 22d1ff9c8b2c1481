"""EI2SaveTuned / EI2LoadTuned: save → load reproduces the tuned model exactly; mismatches are explained."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from harness.checkpoint import random_conditioning, small_sd15_model
from harness.graphs import INFLATE_DEFAULTS

FRAMES = 4


def inflate(pack, model=None, **options):
    with torch.inference_mode():
        return pack.NODE_CLASS_MAPPINGS["EI2InflateUNet"]().inflate(model or small_sd15_model(), **{**INFLATE_DEFAULTS, **options})[0]


def tune(pack, model, steps=4, seed=0):
    latent = {"samples": torch.randn(FRAMES, 4, 4, 4, generator=torch.Generator().manual_seed(3))}
    with torch.inference_mode():
        return pack.NODE_CLASS_MAPPINGS["EI2OneShotTune"]().tune(
            model, latent, random_conditioning(5), steps, 1e-3, "temporal_and_queries", seed, False)[0]


def save(pack, model, prefix="ei2_tuned/test") -> Path:
    import folder_paths

    with torch.inference_mode():
        ui = pack.NODE_CLASS_MAPPINGS["EI2SaveTuned"]().save(model, prefix)
    return Path(folder_paths.get_output_directory()) / ui["ui"]["text"][0]


def load(pack, model, path: Path):
    with torch.inference_mode():
        return pack.NODE_CLASS_MAPPINGS["EI2LoadTuned"]().load(model, path.name)[0]


def prediction(model) -> torch.Tensor:
    """The MODEL's ε-prediction for a fixed noisy clip, through ComfyUI's own loading and patching."""
    import comfy.model_management

    comfy.model_management.load_models_gpu([model, *model.get_nested_additional_models()])
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(FRAMES, 4, 4, 4, generator=generator) * 3
    sigma = torch.full((FRAMES,), 3.0)
    with torch.inference_mode():
        return model.model.apply_model(x, sigma, c_crossattn=random_conditioning(5)[0][0].expand(FRAMES, -1, -1),
                                       transformer_options={**model.model_options["transformer_options"],
                                                            "cond_or_uncond": [0]}).clone()


@pytest.fixture(scope="module")
def base():
    return small_sd15_model()


def test_save_then_load_reproduces_the_tuned_prediction_exactly(pack, base):
    tuned = tune(pack, inflate(pack, base))
    path = save(pack, tuned)
    assert path.parent.name == "ei2_tuned" and path.suffix == ".safetensors"
    with safe_open(str(path), framework="pt") as file:
        metadata, keys = file.metadata(), list(file.keys())
    assert json.loads(metadata["inflation"])["attention_type"] == "ffam"
    assert json.loads(metadata["steps"]) == 4 and json.loads(metadata["frames"]) == FRAMES
    assert json.loads(metadata["learning_rate"]) == 1e-3 and len(metadata["base_fingerprint"]) == 16
    assert sum(k.startswith("delta.") for k in keys) == 14 and any(k.startswith("temporal.") for k in keys)
    # Nothing but tuned parameters: no UNet weights.
    assert all(k.startswith(("delta.", "temporal.")) for k in keys)

    fresh = inflate(pack, base)
    loaded = load(pack, fresh, path)
    assert torch.equal(prediction(loaded), prediction(tuned))
    assert not torch.equal(prediction(fresh), prediction(tuned))  # the file really carries the tuning


def test_files_are_numbered_and_listed_for_the_loader(pack, base):
    tuned = tune(pack, inflate(pack, base), steps=1)
    first, second = save(pack, tuned, "ei2_tuned/numbered"), save(pack, tuned, "ei2_tuned/numbered")
    assert first != second and first.name.startswith("numbered_") and second.exists()
    options = pack.NODE_CLASS_MAPPINGS["EI2LoadTuned"].INPUT_TYPES()["required"]["tuned_weights"][0]
    assert first.name in options and second.name in options


def test_tuning_twice_saves_the_sum_of_both_tunings(pack, base):
    twice = tune(pack, tune(pack, inflate(pack, base), steps=2), steps=2, seed=1)
    path = save(pack, twice, "ei2_tuned/twice")
    with safe_open(str(path), framework="pt") as file:
        assert json.loads(file.metadata()["steps"]) == 4
    assert torch.allclose(prediction(load(pack, inflate(pack, base), path)), prediction(twice), atol=1e-5)


def test_mismatches_are_explained(pack, base, caplog):
    path = save(pack, tune(pack, inflate(pack, base), steps=1), "ei2_tuned/mismatch")
    with pytest.raises(ValueError, match="other EI2InflateUNet options .*temporal_type: file 'stam' vs model 'vanilla'"):
        load(pack, inflate(pack, base, temporal_type="vanilla"), path)
    with pytest.raises(ValueError, match="temporal_placement: file 'after_feedforward' vs model 'after_self_attention'"):
        load(pack, inflate(pack, base, temporal_placement="after_self_attention"), path)
    with safe_open(str(path), framework="pt") as file:
        tensors, metadata = {k: file.get_tensor(k) for k in file.keys()}, file.metadata()
    older = path.with_name("older_format.safetensors")
    save_file(tensors, str(older), metadata={**metadata, "ei2_format": "1"})  # gated STAM, before clipping
    with pytest.raises(ValueError, match="saved by another version of this pack .*format 1.*tune the clip again"):
        load(pack, inflate(pack, base), older)
    with pytest.raises(ValueError, match="needs an inflated MODEL"):
        load(pack, base, path)
    query = next(k for k in tensors if k.endswith("attn1.to_q.weight"))
    for name, changed in [("not_a_query", {query.replace("to_q", "to_k"): tensors[query].clone()}),  # same shape, not tunable
                          ("nan", {query: torch.full_like(tensors[query], float("nan"))})]:
        save_file({**tensors, **changed}, str(path.with_name(f"{name}.safetensors")), metadata=metadata)
    with pytest.raises(ValueError, match=r"not this UNet's tuned query projections \(\['diffusion_model\..*attn1\.to_k"):
        load(pack, inflate(pack, base), path.with_name("not_a_query.safetensors"))
    with pytest.raises(ValueError, match="holds NaN or infinite values .*attn1.to_q.weight.*tune again"):
        load(pack, inflate(pack, base), path.with_name("nan.safetensors"))
    with pytest.raises(ValueError, match="already carries tuned weights"):
        load(pack, load(pack, inflate(pack, base), path), path)
    with pytest.raises(ValueError, match="no tuned weights to save"):
        save(pack, inflate(pack, base))
    other_base = small_sd15_model(seed=99)
    with caplog.at_level(logging.WARNING):
        loaded = load(pack, inflate(pack, other_base), path)
    assert "tuned on another base model" in caplog.text
    assert not torch.equal(prediction(loaded), prediction(inflate(pack, other_base)))  # the tuning is applied anyway


def test_input_models_are_not_changed_by_loading(pack, base):
    path = save(pack, tune(pack, inflate(pack, base), steps=1), "ei2_tuned/untouched")
    fresh = inflate(pack, base)
    before = prediction(fresh)
    load(pack, fresh, path)
    assert torch.equal(prediction(fresh), before) and not fresh.patches
