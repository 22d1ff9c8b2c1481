"""EI2InflateUNet: an SD 1.x MODEL becomes a frame-aware EI² video model (a clone; the input is untouched)."""
from __future__ import annotations

from ..ei2.ffam import ATTENTION_TYPES, COARSE_TYPES
from ..ei2.inflation import TEMPORAL_PLACEMENTS, InflateOptions
from ..ei2.stam import CENTERING_TYPES, MAPPING_TYPES
from ..ei2.temporal import TEMPORAL_TYPES
from .adapter.patching import inflate


class EI2InflateUNet:
    CATEGORY = "EI²"
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("video_model",)
    OUTPUT_TOOLTIPS = ("A copy of the model that treats the LATENT batch as the frames of one clip.",)
    FUNCTION = "inflate"
    DESCRIPTION = (
        "Turns a Stable Diffusion 1.x model into a video model (EI², NeurIPS 2023): frames attend to each "
        "other and every transformer block gains a temporal attention module. Feed the frames of one clip "
        "as one LATENT batch. The original MODEL is not changed."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "A Stable Diffusion 1.x model (SD 1.4/1.5 or a fine-tune)."}),
            "attention_type": (ATTENTION_TYPES, {"default": "ffam", "tooltip":
                "How each frame looks at the others. ffam (EI²): every detail of its own frame plus a "
                "down-sampled view of all other frames. sparse_causal (Tune-A-Video): the first and the "
                "previous frame. full: every detail of every frame (slow, memory-hungry). per_frame: no "
                "cross-frame attention (the image model)."}),
            "coarse_stride": ("INT", {"default": 2, "min": 1, "max": 8, "tooltip":
                "ffam only: how much the other frames are down-sampled (2 = half width and height). "
                "Larger is faster and uses less memory, but sees less detail of other frames; 1 = full."}),
            "coarse_type": (COARSE_TYPES, {"default": "avg", "tooltip":
                "ffam only: avg averages each block of tokens; stride keeps one token per block."}),
            "temporal_type": (TEMPORAL_TYPES, {"default": "stam", "tooltip":
                "The temporal attention added to every block. stam (EI²): centred, variance-bounded, keeps "
                "the image model's feature statistics. vanilla: Tune-A-Video's LayerNorm attention "
                "(the baseline). none: no temporal module. stam starts as an exact no-op until tuned; "
                "vanilla starts like Tune-A-Video's (zero output weight, random output bias)."}),
            "temporal_placement": (TEMPORAL_PLACEMENTS, {"default": "after_feedforward", "tooltip":
                "Where the temporal module runs in each transformer block. after_feedforward: at the end "
                "of the block, as in Tune-A-Video and EI². after_self_attention: between self- and "
                "cross-attention (the placement of earlier versions of this pack, for comparison)."}),
            "centering_type": (CENTERING_TYPES, {"default": "frames", "tooltip":
                "stam only: what instance centering removes. frames: each position's mean over the "
                "frames (default). channels: each token's mean over channels (ablation)."}),
            "mapping_type": (MAPPING_TYPES, {"default": "spectral", "tooltip":
                "stam only: spectral bounds the temporal branch's variance by its input's (EI²'s "
                "normalized mapping). none: plain softmax attention (ablation)."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "tooltip":
                "Seed for the new temporal modules' initial weights."}),
        }}

    def inflate(self, model, **options):
        return (inflate(model, InflateOptions(**options)),)


NODE_CLASS_MAPPINGS = {"EI2InflateUNet": EI2InflateUNet}
NODE_DISPLAY_NAME_MAPPINGS = {"EI2InflateUNet": "EI² Inflate UNet (video)"}
