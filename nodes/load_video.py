"""LoadVideoFrames: a video file from ComfyUI's input directory becomes an IMAGE batch of frames.

Everything except the node class is a plain function that raises ``ValueError`` with a message a
user can act on. Decoding uses OpenCV (``cv2.VideoCapture``) and streams: frames that are not
selected are only grabbed, never converted or kept.

Sizes. ``width``/``height`` of 0 keep the source size. With one of them set, the other follows the
source's aspect ratio. The final width and height are always rounded **down to a multiple of 8**
(minimum 8), because the VAE works on 8×8 pixel blocks; e.g. a 90×70 video loads as 88×64.
``resize`` says how frames reach that size:

* ``crop`` — scale (keeping the aspect ratio) until the frame covers width × height, then cut the
  overhang evenly from both sides. The output is exactly the (rounded) width × height.
* ``fit`` — scale (keeping the aspect ratio, up or down) until the whole frame fits inside
  width × height. Nothing is padded: the output is the fitted size, rounded down to multiples of
  8, so one side can come out smaller than asked.
* ``stretch`` — scale to exactly the (rounded) width × height; the aspect ratio is ignored and
  nothing is cut.

With crop and fit, the few pixels that the rounding to 8 removes are cut evenly from the edges
(at the source size nothing is resampled: 90×70 → the centre 88×64 pixels); with stretch they are
absorbed by the scaling.

Memory. Before decoding, the frames the settings select (counted from the file's header) are
priced at ``frames × H × W × 3 × 5`` bytes: 4 for the float32 output plus 1 for the 8-bit frame
held while decoding. Loading is refused when that exceeds the RAM that is free. Header frame
counts can be wrong (truncated files, some containers), so the output always holds the frames that
really decoded; when more frames decode than the header announced, free RAM is checked again
before each further frame.
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif")
RESIZE_MODES = ("crop", "fit", "stretch")
MAX_SIDE = 16384  # ComfyUI's MAX_RESOLUTION
MAX_FRAMES = 1_000_000
BYTES_PER_VALUE = 5  # float32 output + the uint8 frame held while decoding
FALLBACK_FPS = 24.0
TEXT_SNIFF_BYTES = 4096

_NOT_INPUT_ANNOTATIONS = (" [output]", " [temp]")


# --- files -----------------------------------------------------------------------------------

def input_directory() -> Path:
    """ComfyUI's input directory, with symlinks resolved."""
    import folder_paths  # ComfyUI's; imported late so that importing this module never needs ComfyUI

    return Path(os.path.realpath(folder_paths.get_input_directory()))


def _inside(base: Path, path: Path) -> bool:
    return path != base and os.path.commonpath([str(base), str(path)]) == str(base)


def list_videos(directory: str | os.PathLike | None = None) -> list[str]:
    """Sorted names of the video files directly inside the input directory.

    Only names with a video extension (case-insensitive) whose real path stays inside the directory
    are listed: a symlink that points outside it is left out.
    """
    base = Path(os.path.realpath(directory)) if directory is not None else input_directory()
    try:
        names = os.listdir(base)
    except OSError:
        return []
    videos = []
    for name in names:
        if not name.lower().endswith(VIDEO_EXTENSIONS):
            continue
        real = Path(os.path.realpath(base / name))
        if _inside(base, real) and real.is_file():
            videos.append(name)
    return sorted(videos)


def resolve_video_path(name, directory: str | os.PathLike | None = None) -> Path:
    """The real path of the video ``name`` (relative to the input directory), or ``ValueError``.

    Refused: an empty name, absolute paths, names whose real path (``..`` and symlinks resolved)
    leaves the input directory, files that do not exist, are not regular files, are empty, or do
    not have a video extension.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError("No video selected: upload a video or put one into ComfyUI's input folder and pick it.")
    if name.endswith(" [input]"):
        name = name[: -len(" [input]")]
    for annotation in _NOT_INPUT_ANNOTATIONS:
        if name.endswith(annotation):
            folder = annotation.strip(" []")
            raise ValueError(
                f"'{name}' is in ComfyUI's {folder} folder; Load Video Frames only reads ComfyUI's input "
                "folder. Upload the video or copy it there."
            )
    base = Path(os.path.realpath(directory)) if directory is not None else input_directory()
    if os.path.isabs(name):
        raise ValueError(
            f"'{name}' is an absolute path; only files inside ComfyUI's input folder can be loaded. "
            "Give the name relative to that folder (upload the video or copy it there)."
        )
    try:
        real = Path(os.path.realpath(base / name))
    except (ValueError, OSError) as error:
        raise ValueError(f"'{name}' is not a usable file name ({error}).") from None
    if not _inside(base, real):
        raise ValueError(
            f"'{name}' points outside ComfyUI's input folder (through '..' or a symlink) and is refused. "
            "Upload the video or copy it into the input folder."
        )
    if not real.exists():
        raise ValueError(
            f"Video file not found: '{name}' is not in ComfyUI's input folder ({base}). "
            "Upload it again or pick another file (refresh the list with R)."
        )
    if not real.is_file():
        raise ValueError(f"'{name}' is a folder or a special file, not a video file.")
    if not name.lower().endswith(VIDEO_EXTENSIONS):
        raise ValueError(
            f"'{name}' does not have a video file extension; supported: {', '.join(VIDEO_EXTENSIONS)}."
        )
    if real.stat().st_size == 0:
        raise ValueError(f"'{name}' is empty (0 bytes); the upload or copy probably failed. Upload it again.")
    return real


def file_fingerprint(name) -> str:
    """What changes when the file changes: its real path, size and modification time (never its content)."""
    path = resolve_video_path(name)
    stat = path.stat()
    return f"{path}:{stat.st_size}:{stat.st_mtime_ns}"


def _looks_like_text(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(TEXT_SNIFF_BYTES)
    if not head or b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:  # a multi-byte character cut at the end is still text
        if error.start < len(head) - 4:
            return False
    return True


# --- numbers ---------------------------------------------------------------------------------

def _check_int(name: str, value, minimum: int, maximum: int, meaning: str) -> None:
    if value is None:  # connected to another node's output: checked when the node runs
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be a whole number, got {value!r}.")
    if value < minimum or value > maximum:
        raise ValueError(f"{name} must be between {minimum} and {maximum:,} ({meaning}); got {value}.")


def check_settings(frame_load_cap=None, skip_first_frames=None, select_every_nth=None, width=None,
                   height=None, resize=None) -> None:
    """``ValueError`` naming the first bad setting; ``None`` means "not known yet" and passes."""
    _check_int("frame_load_cap", frame_load_cap, 0, MAX_FRAMES, "0 loads all frames")
    _check_int("skip_first_frames", skip_first_frames, 0, MAX_FRAMES, "0 starts at the first frame")
    _check_int("select_every_nth", select_every_nth, 1, MAX_FRAMES, "1 = every frame, 2 = every other frame")
    _check_int("width", width, 0, MAX_SIDE, "0 keeps the source width")
    _check_int("height", height, 0, MAX_SIDE, "0 keeps the source height")
    if resize is not None and resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {', '.join(RESIZE_MODES)}; got {resize!r}.")


# --- sizes -----------------------------------------------------------------------------------

def round_to_8(value: float) -> int:
    """Round down to a multiple of 8, minimum 8."""
    return max(8, int(value) // 8 * 8)


class ResizePlan(NamedTuple):
    """How a source frame becomes an output frame: scale to ``scaled``, then cut ``final`` from the centre."""

    source: tuple[int, int]
    scaled: tuple[int, int]
    final: tuple[int, int]


def plan_resize(source_width: int, source_height: int, width: int, height: int, resize: str) -> ResizePlan:
    """The sizes (width, height) for one source size; see the module docstring for the rules."""
    if source_width <= 0 or source_height <= 0:
        raise ValueError(f"the video reports an invalid frame size {source_width}×{source_height}.")
    if width and height and resize == "fit":
        scale = min(width / source_width, height / source_height)
    elif width and height:
        scale = max(width / source_width, height / source_height)  # crop: cover the box
    elif width:
        scale = width / source_width
    elif height:
        scale = height / source_height
    else:
        scale = 1.0
    covering = (round(source_width * scale), round(source_height * scale))
    box = (width, height) if width and height and resize != "fit" else covering
    final = (round_to_8(box[0]), round_to_8(box[1]))
    scaled = final if resize == "stretch" else covering
    scaled = (max(scaled[0], final[0]), max(scaled[1], final[1]))  # only matters below 8 pixels
    return ResizePlan((source_width, source_height), scaled, final)


def output_size(source_width: int, source_height: int, width: int, height: int, resize: str) -> tuple[int, int]:
    """(width, height) of the loaded frames."""
    return plan_resize(source_width, source_height, width, height, resize).final


def resize_frame(frame: np.ndarray, plan: ResizePlan) -> np.ndarray:
    """``frame`` (H, W, C) scaled to ``plan.scaled``, then its centre ``plan.final`` cut out.

    With crop and fit, the cut removes only the overhang of the box and the rounding to multiples of
    8; at the source size (width = height = 0) no pixel is resampled.
    """
    import cv2

    def scale(image, size):
        shrinking = size[0] * size[1] < image.shape[1] * image.shape[0]
        return cv2.resize(image, size, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)

    if (frame.shape[1], frame.shape[0]) != plan.source:  # a frame of another size mid-stream
        frame = scale(frame, plan.source)
    if plan.scaled != plan.source:
        frame = scale(frame, plan.scaled)
    top = (plan.scaled[1] - plan.final[1]) // 2
    left = (plan.scaled[0] - plan.final[0]) // 2
    return frame[top: top + plan.final[1], left: left + plan.final[0]]


def to_rgb(frame: np.ndarray) -> np.ndarray:
    """OpenCV's BGR / grey / BGRA frame as RGB uint8 (alpha is dropped, colours kept as stored)."""
    import cv2

    if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 1):
        return cv2.cvtColor(frame.reshape(frame.shape[:2]), cv2.COLOR_GRAY2RGB)
    if frame.ndim == 3 and frame.shape[2] == 3:
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    if frame.ndim == 3 and frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    raise ValueError(f"the decoder returned frames of an unsupported shape {frame.shape}.")


def _to_uint8(frame: np.ndarray) -> np.ndarray:
    if frame.dtype == np.uint8:
        return frame
    if frame.dtype == np.uint16:  # some backends hand out 16-bit frames for high bit-depth video
        return (frame >> 8).astype(np.uint8)
    return np.clip(frame, 0, 255).astype(np.uint8)


# --- memory ----------------------------------------------------------------------------------

def available_ram_bytes() -> int:
    """RAM free for new allocations (psutil's ``available``); tests monkeypatch this."""
    import psutil

    return int(psutil.virtual_memory().available)


def human_bytes(count: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            value = count / size
            return f"{value:.0f} {unit}" if value >= 10 else f"{value:.1f} {unit}"
    return f"{int(count)} bytes"


def needed_bytes(frames: int, width: int, height: int) -> int:
    return frames * height * width * 3 * BYTES_PER_VALUE


def check_memory(frames: int, width: int, height: int) -> None:
    """``ValueError`` when ``frames`` frames of width × height do not fit into the free RAM."""
    need = needed_bytes(frames, width, height)
    free = available_ram_bytes()
    if need > free:
        raise ValueError(
            f"{frames:,} frames at {width}×{height} need {human_bytes(need)} but {human_bytes(free)} are free; "
            "set frame_load_cap, a larger select_every_nth or a smaller width/height."
        )


def selected_count(total: int, skip: int, every_nth: int, cap: int) -> int:
    """How many frames the settings select from a video of ``total`` frames."""
    count = math.ceil(max(0, total - skip) / every_nth)
    return min(count, cap) if cap else count


# --- decoding --------------------------------------------------------------------------------

def _open_capture(path: Path, name: str):
    import cv2

    backend = cv2.CAP_FFMPEG if cv2.videoio_registry.hasBackend(cv2.CAP_FFMPEG) else cv2.CAP_ANY
    capture = cv2.VideoCapture(str(path), backend)
    if capture.isOpened():
        return capture
    capture.release()
    if _looks_like_text(path):
        raise ValueError(f"'{name}' contains text, not video data; it is not a video despite its name.")
    raise ValueError(
        f"'{name}' could not be opened as a video: the file may be truncated (an incomplete upload or copy), "
        "damaged, not a video, or in a format OpenCV cannot decode. Re-export or upload it again."
    )


def _header_frame_count(capture) -> int:
    """The frame count the container claims (unreliable; 0 when unknown)."""
    import cv2

    count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
    return int(count) if math.isfinite(count) and count > 0 else 0


def _header_size(capture) -> tuple[int, int]:
    import cv2

    return int(capture.get(cv2.CAP_PROP_FRAME_WIDTH) or 0), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)


def _source_fps(capture, name: str) -> float:
    import cv2

    fps = capture.get(cv2.CAP_PROP_FPS)
    if not math.isfinite(fps) or fps <= 0 or fps > 1000:
        logging.warning("LoadVideoFrames: '%s' reports no usable frame rate (%r); assuming %s fps.", name, fps,
                        FALLBACK_FPS)
        return FALLBACK_FPS
    return float(fps)


def _progress_bar(total: int):
    import comfy.utils  # lazily: only inside ComfyUI

    return comfy.utils.ProgressBar(max(1, total))


def _stop_if_cancelled() -> None:
    """Newer ComfyUI throttles the progress hook that used to check for cancel; check after every frame."""
    import comfy.model_management  # lazily: only inside ComfyUI

    comfy.model_management.throw_exception_if_processing_interrupted()


def load_video_frames(name: str, frame_load_cap: int = 0, skip_first_frames: int = 0, select_every_nth: int = 1,
                      width: int = 0, height: int = 0, resize: str = "crop") -> tuple[torch.Tensor, int, float]:
    """Decode the selected frames of ``name``: (IMAGE [F, H, W, 3] float32 0..1 RGB, F, fps / select_every_nth)."""
    check_settings(frame_load_cap, skip_first_frames, select_every_nth, width, height, resize)
    path = resolve_video_path(name)
    capture = _open_capture(path, name)
    try:
        header_total = _header_frame_count(capture)
        fps = _source_fps(capture, name)
        planned = selected_count(header_total, skip_first_frames, select_every_nth, frame_load_cap) \
            if header_total else frame_load_cap
        header_width, header_height = _header_size(capture)
        memory_checked = not planned  # with no frame count to go by, RAM is watched while decoding instead
        if not memory_checked and header_width > 0 and header_height > 0:
            check_memory(planned, *output_size(header_width, header_height, width, height, resize))
            memory_checked = True
        # Progress counts every decoded frame, skipped ones too (decoding them is the work).
        to_decode = min(header_total, skip_first_frames + (planned - 1) * select_every_nth + 1) if planned else 0
        progress = _progress_bar(to_decode or header_total)

        kept: list[np.ndarray] = []
        plan = None
        decoded = 0
        unreadable = False
        while not frame_load_cap or len(kept) < frame_load_cap:
            if not capture.grab():
                break
            index = decoded
            decoded += 1
            selected = index >= skip_first_frames and (index - skip_first_frames) % select_every_nth == 0
            if selected:
                ok, frame = capture.retrieve()
                if not ok or frame is None:
                    unreadable = True
                    break
                frame = to_rgb(_to_uint8(frame))
                if plan is None:
                    plan = plan_resize(frame.shape[1], frame.shape[0], width, height, resize)
                    if not memory_checked:  # the header gave no frame size
                        check_memory(planned, *plan.final)
                if len(kept) >= planned:  # more frames than the header announced: check RAM as we go
                    _check_memory_while_decoding(len(kept) + 1, plan.final, header_total)
                kept.append(np.ascontiguousarray(resize_frame(frame, plan)))
            progress.update_absolute(decoded, max(progress.total, decoded))
            _stop_if_cancelled()
    finally:
        capture.release()

    if not kept:
        if decoded == 0 or unreadable:
            raise ValueError(
                f"No frames could be decoded from '{name}': the file may be damaged or use a codec OpenCV "
                "cannot decode. Re-export or upload it again."
            )
        raise ValueError(
            f"'{name}' has only {decoded:,} frames, so skip_first_frames={skip_first_frames:,} leaves nothing; "
            f"set skip_first_frames below {decoded:,}."
        )
    return _stack(kept), len(kept), fps / select_every_nth


def _check_memory_while_decoding(frames: int, size: tuple[int, int], header_total: int) -> None:
    frame_bytes = size[0] * size[1] * 3
    # Staged uint8 frames are already in use; still to come: this frame and the float32 output.
    need = frames * frame_bytes * 4 + frame_bytes
    free = available_ram_bytes()
    if need > free:
        said = f"its header said {header_total:,}" if header_total else "its header gives no frame count"
        raise ValueError(
            f"The video has more frames than expected ({said}); at frame {frames:,} of {size[0]}×{size[1]} the "
            f"output would need {human_bytes(need)} more but {human_bytes(free)} are free; set frame_load_cap, a "
            "larger select_every_nth or a smaller width/height."
        )


def _stack(frames: list[np.ndarray]) -> torch.Tensor:
    height, width = frames[0].shape[:2]
    out = torch.empty((len(frames), height, width, 3), dtype=torch.float32)
    for i in range(len(frames)):
        out[i] = torch.from_numpy(frames[i]).to(torch.float32).div_(255.0)
        frames[i] = None  # give the 8-bit copy back as soon as it is converted
    return out


# --- node ------------------------------------------------------------------------------------

SIZE_TOOLTIP = (" Final sizes are rounded down to a multiple of 8 (minimum 8) for the VAE, e.g. 90 → 88; crop and "
                "fit cut those few pixels evenly from the edges, stretch scales them away.")


class LoadVideoFrames:
    """Loads frames of a video from ComfyUI's input folder as an IMAGE batch (see the module docstring)."""

    CATEGORY = "EI²"
    RETURN_TYPES = ("IMAGE", "INT", "FLOAT")
    RETURN_NAMES = ("frames", "frame_count", "fps")
    OUTPUT_TOOLTIPS = (
        "The selected frames in order as one IMAGE batch [frames, height, width, 3]: RGB, 0..1.",
        "How many frames were loaded (the frames that really decoded, not the file's claimed count).",
        "Frame rate of the loaded frames: the video's frame rate divided by select_every_nth.",
    )
    FUNCTION = "load"
    DESCRIPTION = (
        "Loads a video (mp4, webm, mov, mkv, avi, gif) from ComfyUI's input folder as a batch of frames, "
        "ready for VAE Encode. Pick frames with skip_first_frames, select_every_nth and frame_load_cap, and "
        "resize with width/height. Sizes are rounded down to multiples of 8. Refuses, with a message, "
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
