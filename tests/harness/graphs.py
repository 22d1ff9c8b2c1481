"""API-format graphs the tests post to a real ComfyUI server."""
from __future__ import annotations


def stock_graph(checkpoint: str, frames: int) -> dict:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red car on a road", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": frames}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0],
            "seed": 0, "steps": 4, "cfg": 7.0, "sampler_name": "ddim", "scheduler": "ddim_uniform", "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "harness"}},
    }


# EI2InflateUNet's widgets in order, at their defaults (the node tests check the node against it).
INFLATE_DEFAULTS = dict(attention_type="ffam", coarse_stride=2, coarse_type="avg", temporal_type="stam",
                        temporal_placement="after_feedforward", centering_type="frames", mapping_type="spectral",
                        seed=0)


def inflate_node(model_link, **options) -> dict:
    return {"class_type": "EI2InflateUNet", "inputs": {"model": model_link, **INFLATE_DEFAULTS, **options}}


def edit_graph(checkpoint: str, video: str, *, frames: int = 4, size: int = 64, tune_steps: int = 2,
               steps: int = 4, invert_steps: int | None = None, cfg: float = 7.5, prefix: str = "edit") -> dict:
    """The whole recipe: load → encode → inflate → tune → invert → sample → decode → save."""
    text = lambda prompt: {"class_type": "CLIPTextEncode", "inputs": {"text": prompt, "clip": ["1", 1]}}  # noqa: E731
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "2": {"class_type": "LoadVideoFrames", "inputs": {
            "video": video, "frame_load_cap": frames, "skip_first_frames": 0, "select_every_nth": 1,
            "width": size, "height": size, "resize": "crop"}},
        "3": {"class_type": "VAEEncode", "inputs": {"pixels": ["2", 0], "vae": ["1", 2]}},
        "4": inflate_node(["1", 0]),
        "5": text("a red square moving right"),
        "6": text("a blue ball moving right"),
        "7": text(""),
        "8": {"class_type": "EI2OneShotTune", "inputs": {
            "model": ["4", 0], "latent": ["3", 0], "conditioning": ["5", 0], "steps": tune_steps,
            "learning_rate": 3e-5, "train": "temporal_and_queries", "seed": 0, "gradient_checkpointing": True}},
        "9": {"class_type": "EI2DDIMInvert", "inputs": {
            "model": ["8", 0], "latent": ["3", 0], "conditioning": ["7", 0], "steps": invert_steps or steps}},
        "10": {"class_type": "EI2Sample", "inputs": {
            "model": ["8", 0], "positive": ["6", 0], "negative": ["7", 0], "latent": ["9", 0],
            "steps": steps, "cfg": cfg, "eta": 0.0, "seed": 0}},
        "11": {"class_type": "VAEDecode", "inputs": {"samples": ["10", 0], "vae": ["1", 2]}},
        "12": {"class_type": "SaveImage", "inputs": {"images": ["11", 0], "filename_prefix": prefix}},
    }


def save_video_choices(save_video_info: dict) -> dict:
    """SaveVideo's format and codec at auto, as this ComfyUI names them (0.33.0 nests codec under format)."""
    nested = save_video_info["input"]["required"]["format"][0] == "COMFY_DYNAMICCOMBO_V3"
    return {"format": "auto", ("format.codec" if nested else "codec"): "auto"}


def sound_graph(video: str, save_video_info: dict, prefix: str, **settings) -> dict:
    """LoadVideoFrames → CreateVideo (its frames, fps and audio) → SaveVideo: the clip saved again, with its sound."""
    inputs = dict(video=video, frame_load_cap=0, skip_first_frames=0, select_every_nth=1, width=0, height=0,
                  resize="crop")
    return {
        "1": {"class_type": "LoadVideoFrames", "inputs": {**inputs, **settings}},
        "2": {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": ["1", 2], "audio": ["1", 3]}},
        "3": {"class_type": "SaveVideo", "inputs": {"video": ["2", 0], "filename_prefix": prefix,
                                                    **save_video_choices(save_video_info)}},
    }
