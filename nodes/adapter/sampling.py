"""DDIM inversion and sampling (``ei2.ddim``) on ComfyUI's sampling machinery: conds, CFG, model loading,
previews, the progress bar and cancel behave as in ComfyUI's own samplers."""
from __future__ import annotations

import logging

import torch

from ...ei2.ddim import ddim_invert, ddim_sample, ddim_sigmas
from .patching import check_latent
from .tuned_state import tuned_frames

INVERSION_KEY = "ei2_inversion"  # in an inverted LATENT: how it was made, for EI2Sample
MAX_DDIM_STEPS = 250  # keeps the first σ below the schedule's σ_max, where ComfyUI would rescale the start


def ddim_sampler(eta: float):
    """A ComfyUI SAMPLER running ``ei2.ddim.ddim_sample``: plain DDIM on whatever sigmas it is given."""
    import comfy.samplers

    return comfy.samplers.KSAMPLER(ddim_sample, extra_options={"eta": eta})


def _check_steps(steps: int) -> None:
    if not 1 <= steps <= MAX_DDIM_STEPS:
        raise ValueError(f"steps must be between 1 and {MAX_DDIM_STEPS}, got {steps}.")


def _run_sampler(model, sampler, sigmas, latent, noise, positive, negative, cfg, seed):
    """Run a SAMPLER through ComfyUI (conds, CFG, model loading, previews, progress, cancel); ``seed`` seeds η-noise."""
    import comfy.sample
    import comfy.utils
    import latent_preview

    callback = latent_preview.prepare_callback(model, len(sigmas) - 1)
    return comfy.sample.sample_custom(model, noise, cfg, sampler, sigmas, positive, negative, latent,
                                      callback=callback, disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)


def invert(model, latent: dict, conditioning, steps: int) -> dict:
    """DDIM-invert a clip (η = 0, no CFG) to its starting noise.

    Returns a LATENT whose ``samples`` are that noise at unit scale (like a sampler's fresh noise)
    and whose ``ei2_inversion`` entry tells EI2Sample the schedule it came from.
    """
    import comfy.samplers

    samples = check_latent(latent, "latent")
    _check_steps(steps)
    sigmas = ddim_sigmas(model.get_model_object("model_sampling").sigmas, steps).flip(0).float()
    with torch.inference_mode():
        # Starting at σ = 0, ComfyUI's noise scaling leaves the clean latent as it is.
        inverted = _run_sampler(model, comfy.samplers.KSAMPLER(ddim_invert), sigmas, samples, torch.zeros_like(samples),
                                conditioning, conditioning, 1.0, 0)
        noise = model.model.process_latent_in(inverted) / sigmas[-1]
    return {"samples": noise, INVERSION_KEY: {"steps": steps, "frames": samples.shape[0],
                                             "sigma": float(sigmas[-1]), "tuned_frames": tuned_frames(model)}}


def sample(model, positive, negative, latent: dict, *, steps: int, cfg: float, eta: float, seed: int) -> dict:
    """DDIM-sample the edit from an inverted LATENT: ``samples`` are scaled to the first σ of the schedule."""
    noise = check_latent(latent, "latent")
    _check_steps(steps)
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}.")
    inversion = latent.get(INVERSION_KEY)
    if inversion is None:
        raise ValueError("latent is not an inverted clip: connect the LATENT output of EI2DDIMInvert.")
    if inversion["steps"] != steps:
        logging.warning("EI²: sampling with %d steps from a %d-step inversion; the edit will follow the source "
                        "less closely. Use the same steps for both.", steps, inversion["steps"])
    frames = tuned_frames(model)
    if frames is not None and frames != noise.shape[0]:
        logging.warning("EI²: the model was tuned on %d frames and samples %d; the temporal modules accept any "
                        "count, but the result is best on the tuned clip.", frames, noise.shape[0])
    sigmas = ddim_sigmas(model.get_model_object("model_sampling").sigmas, steps).float()
    with torch.inference_mode():
        edited = _run_sampler(model, ddim_sampler(eta), sigmas, torch.zeros_like(noise), noise, positive, negative,
                              cfg, seed)
    return {"samples": edited}
