"""One-shot tuning on ComfyUI's loaded UNet (the loop itself is ``ei2.tuning``)."""
from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch
import torch.utils.checkpoint

from ...ei2.inflation import check_train, finish_tuning, tuning_parameters
from ...ei2.tuning import one_shot_tune, window_length
from .patching import attach_temporal_modules, check_latent, copy_of_temporal_modules, inflation_options, query_weight_keys
from .tuned_state import set_query_deltas


def _use_training_copies(trainer, deltas: dict[str, torch.Tensor]) -> list:
    """Hand every UNet op an explicit copy of its weight, made for training (plus its query delta).

    Autograd then saves only these copies, never the resident parameters, however ComfyUI holds
    them: inference tensors (what loading under inference mode makes), weights cast without a copy,
    or streamed by dynamic VRAM. They go in as ComfyUI weight wrappers, which every kind of load
    applies (setting ``weight_function`` by hand would not survive a dynamic load). Returns them,
    for :func:`_remove_weight_functions`.
    """
    added = []
    for name, module in trainer.model.diffusion_model.named_modules():
        if not hasattr(module, "weight_function"):
            continue
        for kind in ("weight", "bias"):
            key = f"diffusion_model.{name}.{kind}"
            if getattr(module, kind, None) is not None:
                function = _adding(deltas[key]) if key in deltas else _training_copy
                trainer.add_weight_wrapper(key, function)
                added.append(function)
    return added


def _training_copy(weight):
    return weight.clone()


def _adding(delta):
    return lambda weight: weight + delta.to(weight.dtype)  # a new tensor: the resident weight is not saved


def _remove_weight_functions(diffusion_model, added: list) -> None:
    """Take the training wrappers off the shared UNet's modules (a full load leaves them on when unloaded)."""
    ours = {id(function) for function in added}
    for module in diffusion_model.modules():
        if hasattr(module, "weight_function"):
            module.weight_function = [f for f in module.weight_function if id(f) not in ours]
            module.bias_function = [f for f in module.bias_function if id(f) not in ours]


@contextmanager
def _frozen(parameters):
    """No gradients to ``parameters`` while training; their ``requires_grad`` flags are restored afterwards."""
    frozen = [p for p in parameters if p.requires_grad]
    try:
        for p in frozen:
            p.requires_grad_(False)
        yield
    finally:
        with torch.inference_mode():  # weights loaded by ComfyUI are inference tensors: only settable here
            for p in frozen:
                p.requires_grad_(True)


@contextmanager
def _gradient_checkpointing(diffusion_model):
    """Recompute each ResBlock and SpatialTransformer in the backward pass instead of storing activations.

    The UNet mutates ``transformer_options`` while it runs (which block it is in); each checkpointed
    call gets its own snapshot so that the recomputation sees the same block as the first pass.
    """
    from comfy.ldm.modules.attention import SpatialTransformer
    from comfy.ldm.modules.diffusionmodules.openaimodel import ResBlock

    def checkpointed(original):
        def forward(*args, **kwargs):
            if not torch.is_grad_enabled():
                return original(*args, **kwargs)
            args = [dict(a) if isinstance(a, dict) else a for a in args]
            kwargs = {k: dict(v) if isinstance(v, dict) else v for k, v in kwargs.items()}
            return torch.utils.checkpoint.checkpoint(lambda *a: original(*a, **kwargs), *args, use_reentrant=False)
        return forward

    patched = [m for m in diffusion_model.modules() if isinstance(m, (ResBlock, SpatialTransformer))]
    try:
        for m in patched:
            m.forward = checkpointed(m.forward)  # an instance attribute shadows the class method
        yield
    finally:
        for m in patched:
            m.__dict__.pop("forward", None)


def _unload(patcher) -> None:
    """Take a patcher out of ComfyUI's loaded models (restores weights it patched in place)."""
    import comfy.model_management

    loaded = comfy.model_management.current_loaded_models
    for index, entry in enumerate(loaded):
        if entry.model is patcher:
            loaded.pop(index).model_unload()
            return


def tune(model, latents: torch.Tensor, conditioning, *, steps: int, learning_rate: float, train: str,
         seed: int, gradient_checkpointing: bool = True, frames_per_step: int | None = None, frame_stride: int = 1,
         on_step=None):
    """One-shot tune an inflated MODEL on one clip; returns ``(tuned clone, losses)``. ``model`` is not touched.

    Tuned temporal modules live in the clone's own module container; tuned query projections are
    stored as ordinary ComfyUI weight patches (``diff``), so the result loads, offloads and
    combines with LoRAs like any MODEL. Each step sees a window of ``frames_per_step`` frames
    (default: the whole clip), every ``frame_stride``-th (see ``ei2.tuning``).
    """
    import comfy.model_management

    if inflation_options(model) is None:
        raise ValueError("EI2OneShotTune needs an inflated MODEL: add EI2InflateUNet between the checkpoint loader and this node.")
    check_train(train)
    check_latent({"samples": latents}, "latent")
    window = window_length(latents.shape[0], frames_per_step or latents.shape[0], frame_stride)
    if len(conditioning) != 1:
        raise ValueError(f"conditioning holds {len(conditioning)} prompts; connect one CLIPTextEncode with the source prompt.")
    tuned = model.clone()
    if steps == 0:
        return tuned, []

    with torch.inference_mode(False):
        modules = copy_of_temporal_modules(model)
        attach_temporal_modules(tuned, modules)
        weights = dict(model.model.named_parameters())
        device = model.load_device
        # Frozen parts (vanilla's LayerNorm, as in Tune-A-Video) and, for train=queries, the whole
        # temporal modules get no gradient at all: nothing accumulates on the returned MODEL.
        tuning = tuning_parameters(modules, {key: weights[key] for key in query_weight_keys(model)}, train, device)

        trainer = tuned.clone()  # loaded for training only, then unloaded; never returned
        training_copies = _use_training_copies(trainer, tuning.deltas)
        loaded = [trainer, *trainer.get_nested_additional_models()]
        comfy.model_management.load_models_gpu(loaded, force_full_load=True)
        x0 = trainer.model.process_latent_in(latents.clone()).to(device)
        context = conditioning[0][0].clone().to(device)
        options = trainer.model_options["transformer_options"]

        def predict_eps(x, sigma):
            frames = x.shape[0]
            sigma = sigma.expand(frames)
            denoised = trainer.model.apply_model(x, sigma, c_crossattn=context.expand(frames, -1, -1),
                                                 transformer_options={**options, "cond_or_uncond": [0]})
            return (x - denoised) / sigma.view(-1, 1, 1, 1)

        checkpointing = _gradient_checkpointing(trainer.model.diffusion_model) if gradient_checkpointing else nullcontext()
        try:
            with _frozen([*trainer.model.diffusion_model.parameters(), *tuning.frozen]), checkpointing:
                losses = one_shot_tune(
                    predict_eps, x0, trainer.model.model_sampling.sigmas, tuning.params, steps=steps,
                    learning_rate=learning_rate, seed=seed, on_step=on_step, frames_per_step=window,
                    frame_stride=frame_stride,
                    loss_scaling=needs_loss_scaling(trainer.model, device))
        finally:
            for patcher in loaded:
                _unload(patcher)
            _remove_weight_functions(trainer.model.diffusion_model, training_copies)
        finish_tuning(modules, tuning)
        info = dict(frames=window, steps=steps, learning_rate=learning_rate, train=train, seed=seed)
        set_query_deltas(tuned, {key: delta.detach().cpu() for key, delta in tuning.deltas.items()}, info)
    return tuned, losses


def needs_loss_scaling(base_model, device) -> bool:
    """fp16 gradients need loss scaling: true where the UNet *computes* in fp16 on a GPU. That is ComfyUI's manual-cast
    dtype where it stores the weights in another (an fp8 checkpoint computes in fp16 or bf16), else their dtype."""
    compute_dtype = getattr(base_model, "manual_cast_dtype", None) or base_model.get_dtype()
    return torch.device(device).type == "cuda" and compute_dtype == torch.float16
