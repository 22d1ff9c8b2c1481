"""A test-only ComfyUI custom node (loaded by the cancel test's own server, never shipped with the pack).

EI2TestHoldSampling returns its MODEL with a UNet wrapper that stops at one UNet call until the user
cancels, so a cancel lands mid-sampling however fast the machine samples.
"""
import time

import comfy.model_management


class EI2TestHoldSampling:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "hold_at_call": ("INT", {"default": 3, "min": 1}),
                             "timeout": ("FLOAT", {"default": 120.0, "min": 1.0})}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "hold"
    CATEGORY = "testing"

    def hold(self, model, hold_at_call, timeout):
        calls = 0

        def wrapper(apply_model, args):
            nonlocal calls
            calls += 1
            if calls == hold_at_call:
                deadline = time.monotonic() + timeout
                # Only reads the flag: ComfyUI itself raises the interruption in the call below.
                while not comfy.model_management.processing_interrupted():
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"EI2TestHoldSampling: no cancel within {timeout:.0f} s")
                    time.sleep(0.02)
            return apply_model(args["input"], args["timestep"], **args["c"])

        held = model.clone()
        held.set_model_unet_function_wrapper(wrapper)
        return (held,)


NODE_CLASS_MAPPINGS = {"EI2TestHoldSampling": EI2TestHoldSampling}
