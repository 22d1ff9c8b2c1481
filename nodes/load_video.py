"""LoadVideoFrames: a video file from ComfyUI's input folder becomes an IMAGE batch of frames and their sound.

The work is done in ``nodes/video/``: which files may be read (``paths``), the settings' limits
(``settings``), sizes (``resize``: final sizes are rounded down to a multiple of 8 for the VAE),
free RAM (``memory``), the decoding loop (``decode``) and the sound of the selected frames (``audio``).
Problems are ``ValueError`` messages a user can act on. The audio output comes last, so links saved by
earlier versions (by output index) keep their meaning.
"""
from __future__ import annotations

from .video.decode import load_video_frames
from .video.paths import file_fingerprint, list_videos, resolve_video_path
from .video.settings import MAX_FRAMES, MAX_SIDE, RESIZE_MODES, check_settings

SIZE_TOOLTIP = (" Final sizes are rounded down to a multiple of 8 (minimum 8) for the VAE, e.g. 90 → 88; crop and "
                "fit cut those few pixels evenly from the edges, stretch scales them away.")


class LoadVideoFrames:
    """Loads frames of a video from ComfyUI's input folder as an IMAGE batch."""

    CATEGORY = "EI²"
    RETURN_TYPES = ("IMAGE", "INT", "FLOAT", "AUDIO")
    RETURN_NAMES = ("frames", "frame_count", "fps", "audio")
    OUTPUT_TOOLTIPS = (
        "The selected frames in order as one IMAGE batch [frames, height, width, 3]: RGB, 0..1.",
        "How many frames were loaded (the frames that really decoded, not the file's claimed count).",
        "Frame rate of the loaded frames: the video's frame rate divided by select_every_nth.",
        "The sound of the loaded frames, for CreateVideo's audio input: from the first loaded frame to the end of "
        "the last (frame_count / fps seconds), at the video's sample rate; more than 2 channels are mixed down to "
        "stereo. Where the video's sound is shorter, the rest is silence (a warning in the log); a video without "
        "sound gives silence.",
    )
    FUNCTION = "load"
    DESCRIPTION = (
        "Loads a video (mp4, webm, mov, mkv, avi, gif) from ComfyUI's input folder as a batch of frames, "
        "ready for VAE Encode. Pick frames with skip_first_frames, select_every_nth and frame_load_cap, and "
        "resize with width/height. Sizes are rounded down to multiples of 8. The audio output is the sound of "
        "the loaded frames, as long as they last. Refuses, with a message, "
        "selections that would not fit into free RAM and files outside the input folder."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "video": (list_videos(), {"video_upload": True, "tooltip":
                "A video in ComfyUI's input folder (mp4, webm, mov, mkv, avi, gif). Upload one with the button "
                "or put it into the input folder. Files outside the input folder are refused."}),
            "frame_load_cap": ("INT", {"default": 0, "min": 0, "max": MAX_FRAMES, "step": 1, "tooltip":
                "The most frames to load; 0 loads all selected frames. A cap beyond the video's length "
                "loads all available frames."}),
            "skip_first_frames": ("INT", {"default": 0, "min": 0, "max": MAX_FRAMES, "step": 1, "tooltip":
                "Frames to skip at the start of the video before the first loaded frame."}),
            "select_every_nth": ("INT", {"default": 1, "min": 1, "max": MAX_FRAMES, "step": 1, "tooltip":
                "Load every n-th frame after the skipped ones: 1 = every frame, 2 = every other frame (the "
                "fps output is divided by n)."}),
            "width": ("INT", {"default": 0, "min": 0, "max": MAX_SIDE, "step": 8, "tooltip":
                "Width of the loaded frames; 0 keeps the source width (or follows the aspect ratio when "
                "height is set)." + SIZE_TOOLTIP}),
            "height": ("INT", {"default": 0, "min": 0, "max": MAX_SIDE, "step": 8, "tooltip":
                "Height of the loaded frames; 0 keeps the source height (or follows the aspect ratio when "
                "width is set)." + SIZE_TOOLTIP}),
            "resize": (list(RESIZE_MODES), {"default": "crop", "tooltip":
                "How frames reach width × height. crop: scale to cover the box, cut the overhang evenly "
                "(output is exactly width × height). fit: scale to fit inside the box keeping the aspect "
                "ratio, no padding (one side may come out smaller than asked). stretch: scale to exactly "
                "width × height, aspect ratio ignored." + SIZE_TOOLTIP}),
        }}

    def load(self, video, frame_load_cap, skip_first_frames, select_every_nth, width, height, resize):
        return load_video_frames(video, frame_load_cap, skip_first_frames, select_every_nth, width, height, resize)

    @classmethod
    def IS_CHANGED(cls, video, **_settings):
        try:
            return file_fingerprint(video)
        except (ValueError, OSError):
            return float("nan")  # never equal: the run reports the problem

    @classmethod
    def VALIDATE_INPUTS(cls, video, frame_load_cap, skip_first_frames, select_every_nth, width, height):
        try:
            if video is not None:
                resolve_video_path(video)
            check_settings(frame_load_cap, skip_first_frames, select_every_nth, width, height)
        except ValueError as error:
            return str(error)
        return True


NODE_CLASS_MAPPINGS = {"LoadVideoFrames": LoadVideoFrames}
NODE_DISPLAY_NAME_MAPPINGS = {"LoadVideoFrames": "Load Video Frames (EI²)"}
