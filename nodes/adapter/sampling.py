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

def _eps_of(denoiser, extra_args):
    """σ-space ε-prediction from a ComfyUI denoiser (which returns the CFG-combined x0 estimate)."""
    def eps(x, sigma):
        return (x - denoiser(x, sigma * x.new_ones(x.shape[0]), **extra_args)) / sigma
    return eps

def _k_callback(callback, sigmas):
    if callback is None:
        return None
    return lambda i, x, denoised: callback({"i": i, "x": x, "denoised": denoised, "sigma": sigmas[i], "sigma_hat": sigmas[i]})

def _ddim_sampler(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=0.0, noise_seed=0):
    return ddim_sample(_eps_of(model, extra_args or {}), x, sigmas, eta=eta,
                       generator=torch.Generator().manual_seed(noise_seed), callback=_k_callback(callback, sigmas))

def _ddim_inverse_sampler(model, x, sigmas, extra_args=None, callback=None, disable=None):
    return ddim_invert(_eps_of(model, extra_args or {}), x, sigmas, callback=_k_callback(callback, sigmas))

def _check_steps(steps: int) -> None:
    if not 1 <= steps <= MAX_DDIM_STEPS:
        raise ValueError(f"steps must be between 1 and {MAX_DDIM_STEPS}, got {steps}.")

def _run_sampler(model, sampler_function, sigmas, latent, noise, positive, negative, cfg, seed, **options):
    """Run a σ-space sampler through ComfyUI (conds, CFG, model loading, previews, progress, cancel)."""
    import comfy.sample
    import comfy.samplers
    import comfy.utils
    import latent_preview

    sampler = comfy.samplers.KSAMPLER(sampler_function, extra_options=options)
    callback = latent_preview.prepare_callback(model, len(sigmas) - 1)
    return comfy.sample.sample_custom(model, noise, cfg, sampler, sigmas, positive, negative, latent,
                                      callback=callback, disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)

def invert(model, latent: dict, conditioning, steps: int) -> dict:
    """DDIM-invert a clip (η = 0, no CFG) to its starting noise.

    Returns a LATENT whose ``samples`` are that noise at unit scale (like a sampler's fresh noise)
    and whose ``ei2_inversion`` entry tells EI2Sample the schedule it came from.
    """
    samples = check_latent(latent, "latent")
    _check_steps(steps)
    sigmas = ddim_sigmas(model.get_model_object("model_sampling").sigmas, steps).flip(0).float()
    with torch.inference_mode():
        # Starting at σ = 0, ComfyUI's noise scaling leaves the clean latent as it is.
        inverted = _run_sampler(model, _ddim_inverse_sampler, sigmas, samples, torch.zeros_like(samples),
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
        edited = _run_sampler(model, _ddim_sampler, sigmas, torch.zeros_like(noise), noise, positive, negative,
                              cfg, seed, eta=eta, noise_seed=seed)
    return {"samples": edited}
