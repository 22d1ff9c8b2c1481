"""DDIM inversion and sampling (``ei2.ddim``) on ComfyUI's sampling machinery: conds, CFG, model loading,
previews, the progress bar and cancel behave as in ComfyUI's own samplers.

A clip longer than ``context_frames`` runs in context windows (``ei2.context_windows``): every model
call is split into windows, each a clip of its own to ComfyUI (conds, CFG, batching), and ComfyUI
plans its memory (how much of the model to load) for one window, not for the whole clip.
"""
from __future__ import annotations

import logging

import torch

from ...ei2.context_windows import DEFAULT_CONTEXT, ContextWindows  # noqa: F401 (the nodes' defaults)
from ...ei2.ddim import ddim_invert, ddim_sample, ddim_sigmas
from ...ei2.structure_reuse import StructureReuse, TrajectoryRecorder, reused_steps
from .patching import check_latent
from .runtime import stop_if_cancelled
from .structure_reuse import with_structure_reuse
from .tuned_state import tuned_frames

INVERSION_KEY = "ei2_inversion"  # in an inverted LATENT: how it was made, for EI2Sample
MAX_DDIM_STEPS = 250  # keeps the first σ below the schedule's σ_max, where ComfyUI would rescale the start
CONTEXT_KEY = "ei2_context_windows"


def ddim_sampler(eta: float):
    """A ComfyUI SAMPLER running ``ei2.ddim.ddim_sample``: plain DDIM on whatever sigmas it is given."""
    import comfy.samplers

    return comfy.samplers.KSAMPLER(ddim_sample, extra_options={"eta": eta})


def _check_steps(steps: int) -> None:
    if not 1 <= steps <= MAX_DDIM_STEPS:
        raise ValueError(f"steps must be between 1 and {MAX_DDIM_STEPS}, got {steps}.")


def _planned_for_one_window(model, frames: int, context: ContextWindows):
    """A clone of ``model`` for which ComfyUI sizes its memory for one window (with its anchor), not all frames."""
    import comfy.patcher_extension

    window = context.largest_call(frames)
    if window == frames:
        return model

    def prepare_sampling(executor, model, noise_shape, *args, **kwargs):
        return executor(model, [window, *noise_shape[1:]], *args, **kwargs)

    planned = model.clone()
    planned.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.PREPARE_SAMPLING, CONTEXT_KEY, prepare_sampling)
    return planned


def _run_sampler(model, sampler_function, context: ContextWindows, sigmas, latent, noise, positive, negative, cfg,
                 seed, reuse: StructureReuse | None = None, **extra_options):
    """Run ``sampler_function`` (k-diffusion signature, ``extra_options`` as keywords) in ``context``'s windows
    through ComfyUI (conds, CFG, model loading, previews, progress, cancel); ``seed`` seeds η-noise; ``reuse``
    learns each window's frames."""
    import comfy.sample
    import comfy.samplers
    import comfy.utils
    import latent_preview

    def before_window(frames):
        stop_if_cancelled()
        if reuse is not None:
            reuse.select_frames(frames)

    sampler = comfy.samplers.KSAMPLER(context.sampler(sampler_function, before_window=before_window),
                                      extra_options=extra_options)
    model = _planned_for_one_window(model, latent.shape[0], context)
    callback = latent_preview.prepare_callback(model, len(sigmas) - 1)
    return comfy.sample.sample_custom(model, noise, cfg, sampler, sigmas, positive, negative, latent,
                                      callback=callback, disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)


def invert(model, latent: dict, conditioning, steps: int, context: ContextWindows = DEFAULT_CONTEXT) -> dict:
    """DDIM-invert a clip (η = 0, no CFG) to its starting noise, in ``context``'s windows.

    Returns a LATENT whose ``samples`` are that noise at unit scale (like a sampler's fresh noise)
    and whose ``ei2_inversion`` entry tells EI2Sample the schedule it came from, and holds what structure reuse
    needs: the inversion's trajectory (on the CPU: steps × the clip's latents) and its prompt.
    """
    import comfy.model_management

    samples = check_latent(latent, "latent")
    _check_steps(steps)
    sigmas = ddim_sigmas(model.get_model_object("model_sampling").sigmas, steps).flip(0).float()
    recorder = TrajectoryRecorder(store=lambda x: x.to(comfy.model_management.intermediate_device(), copy=True))

    def recording_inversion(model, x, sigmas, extra_args=None, callback=None, disable=None):
        recorder.callback = callback
        return ddim_invert(model, x, sigmas, extra_args, recorder, disable)

    with torch.inference_mode():
        # Starting at σ = 0, ComfyUI's noise scaling leaves the clean latent as it is.
        inverted = _run_sampler(model, recording_inversion, context, sigmas, samples, torch.zeros_like(samples),
                                conditioning, conditioning, 1.0, 0)
        inverted = model.model.process_latent_in(inverted)
    return {"samples": inverted / sigmas[-1], INVERSION_KEY: {
        "steps": steps, "frames": samples.shape[0], "trajectory": recorder.trajectory(inverted),
        "prompt": conditioning[0][0]}}


def sample(model, positive, negative, latent: dict, *, steps: int, cfg: float, eta: float, seed: int,
           context: ContextWindows = DEFAULT_CONTEXT, structure_reuse: float = 0.0) -> dict:
    """DDIM-sample the edit from an inverted LATENT (``samples`` are scaled to the first σ of the schedule), in
    ``context``'s windows; the first ``structure_reuse`` of the steps reuse the source's structure."""
    noise = check_latent(latent, "latent")
    _check_steps(steps)
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}.")
    inversion = latent.get(INVERSION_KEY)
    if inversion is None:
        raise ValueError("latent is not an inverted clip: connect the LATENT output of EI2DDIMInvert.")
    if inversion["frames"] != noise.shape[0]:
        raise ValueError(f"latent holds {noise.shape[0]} frames but EI2DDIMInvert inverted {inversion['frames']}: it was "
                         "cut or batched after the inversion. Connect EI2DDIMInvert's output to EI2Sample directly "
                         "(select frames before VAEEncode instead).")
    if inversion["steps"] != steps:
        logging.warning("EI²: sampling with %d steps from a %d-step inversion; the edit will follow the source "
                        "less closely. Use the same steps for both.", steps, inversion["steps"])
    frames, window = tuned_frames(model), min(noise.shape[0], context.frames)
    if frames is not None and frames != window:
        logging.warning("EI²: the model was tuned on %d frames at a time and samples %d; the temporal modules accept "
                        "any count, but the result is best when frames_per_step and context_frames agree.",
                        frames, window)
    sigmas = ddim_sigmas(model.get_model_object("model_sampling").sigmas, steps).float()
    reuse = None
    if reused_steps(steps, structure_reuse) > 0:
        reuse = StructureReuse(_source_trajectory(inversion, noise, steps), sigmas, reused_steps(steps, structure_reuse))
        model = with_structure_reuse(model, reuse, inversion["prompt"])
    with torch.inference_mode():
        edited = _run_sampler(model, ddim_sample, context, sigmas, torch.zeros_like(noise), noise, positive, negative,
                              cfg, seed, reuse, eta=eta)
    return {"samples": edited}


def _source_trajectory(inversion: dict, noise, steps: int):
    """The inversion's trajectory, refused (with what to do) unless it belongs to this clip and these steps."""
    trajectory = inversion.get("trajectory")
    if trajectory is None:
        raise ValueError("structure_reuse needs the inversion's trajectory, which this LATENT lacks (made by an older "
                         "EI2DDIMInvert?): run EI2DDIMInvert again, or set structure_reuse to 0.")
    if inversion["steps"] != steps:
        raise ValueError(f"structure_reuse: the latent was inverted with {inversion['steps']} steps and EI2Sample has "
                         f"{steps}; set both to the same number (or structure_reuse to 0).")
    if tuple(trajectory.shape[1:]) != tuple(noise.shape):
        raise ValueError(f"structure_reuse: the latent holds {tuple(noise.shape[1:])} per frame but was inverted as "
                         f"{tuple(trajectory.shape[2:])} (channels, height, width): it was changed after "
                         "EI2DDIMInvert. Connect EI2DDIMInvert's output to EI2Sample directly.")
    return trajectory
