"""The decoding loop: a video file becomes an IMAGE batch of the selected frames (and, through ``audio``, their sound).

Decoding uses OpenCV (``cv2.VideoCapture``) and streams: frames that are not selected are only
grabbed, never converted or kept. Header frame counts can be wrong (truncated files, some
containers), so the output always holds the frames that really decoded.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch

from ..adapter.runtime import Progress
from .audio import load_audio
from .memory import check_memory, check_memory_while_decoding
from .paths import looks_like_text, resolve_video_path
from .resize import output_size, plan_resize, resize_frame, to_rgb, to_uint8
from .settings import check_settings

FALLBACK_FPS = 24.0


def open_capture(path: Path, name: str):
    """An opened ``cv2.VideoCapture`` of ``path``, or ``ValueError`` saying why it is not a video."""
    import cv2

    backend = cv2.CAP_FFMPEG if cv2.videoio_registry.hasBackend(cv2.CAP_FFMPEG) else cv2.CAP_ANY
    capture = cv2.VideoCapture(str(path), backend)
    if capture.isOpened():
        return capture
    capture.release()
    if looks_like_text(path):
        raise ValueError(f"'{name}' contains text, not video data; it is not a video despite its name.")
    raise ValueError(
        f"'{name}' could not be opened as a video: the file may be truncated (an incomplete upload or copy), "
        "damaged, not a video, or in a format OpenCV cannot decode. Re-export or upload it again."
    )


def header_frame_count(capture) -> int:
    """The frame count the container claims (unreliable; 0 when unknown)."""
    import cv2

    count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
    return int(count) if math.isfinite(count) and count > 0 else 0


def header_size(capture) -> tuple[int, int]:
    """(width, height) the container claims; 0 where unknown."""
    import cv2

    return int(capture.get(cv2.CAP_PROP_FRAME_WIDTH) or 0), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)


def source_fps(capture, name: str) -> float:
    import cv2

    fps = capture.get(cv2.CAP_PROP_FPS)
    if not math.isfinite(fps) or fps <= 0 or fps > 1000:
        logging.warning("LoadVideoFrames: '%s' reports no usable frame rate (%r); assuming %s fps.", name, fps,
                        FALLBACK_FPS)
        return FALLBACK_FPS
    return float(fps)


def selected_count(total: int, skip: int, every_nth: int, cap: int) -> int:
    """How many frames the settings select from a video of ``total`` frames."""
    count = math.ceil(max(0, total - skip) / every_nth)
    return min(count, cap) if cap else count


def load_video_frames(name: str, frame_load_cap: int = 0, skip_first_frames: int = 0, select_every_nth: int = 1,
                      width: int = 0, height: int = 0, resize: str = "crop") -> tuple[torch.Tensor, int, float, dict]:
    """Decode the selected frames of ``name``: (IMAGE [F, H, W, 3] float32 0..1 RGB, F, fps / select_every_nth,
    AUDIO of those frames' time span)."""
    check_settings(frame_load_cap, skip_first_frames, select_every_nth, width, height, resize)
    path = resolve_video_path(name)
    capture = open_capture(path, name)
    progress = None
    try:
        header_total = header_frame_count(capture)
        fps = source_fps(capture, name)
        planned = selected_count(header_total, skip_first_frames, select_every_nth, frame_load_cap) \
            if header_total else frame_load_cap
        header_width, header_height = header_size(capture)
        memory_checked = not planned  # with no frame count to go by, RAM is watched while decoding instead
        if not memory_checked and header_width > 0 and header_height > 0:
            check_memory(planned, *output_size(header_width, header_height, width, height, resize))
            memory_checked = True
        # Progress counts every decoded frame, skipped ones too (decoding them is the work).
        to_decode = min(header_total, skip_first_frames + (planned - 1) * select_every_nth + 1) if planned else 0
        progress = Progress(to_decode or header_total)

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
                frame = to_rgb(to_uint8(frame))
                if plan is None:
                    plan = plan_resize(frame.shape[1], frame.shape[0], width, height, resize)
                    if not memory_checked:  # the header gave no frame size
                        check_memory(planned, *plan.final)
                if len(kept) >= planned:  # more frames than the header announced: check RAM as we go
                    check_memory_while_decoding(len(kept) + 1, plan.final, header_total)
                kept.append(np.ascontiguousarray(resize_frame(frame, plan)))
            progress.step(done=decoded)  # grows the total past the header's count, then checks for cancel
    finally:
        capture.release()
        if progress is not None:
            progress.close()

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
    # The sound follows the frames that really decoded (header counts can be wrong), after the capture is closed.
    audio = load_audio(path, name, skip_first_frames, select_every_nth, len(kept), fps)
    return _stack(kept), len(kept), fps / select_every_nth, audio


def _stack(frames: list[np.ndarray]) -> torch.Tensor:
    height, width = frames[0].shape[:2]
    out = torch.empty((len(frames), height, width, 3), dtype=torch.float32)
    for i in range(len(frames)):
        out[i] = torch.from_numpy(frames[i]).to(torch.float32).div_(255.0)
        frames[i] = None  # give the 8-bit copy back as soon as it is converted
    return out
