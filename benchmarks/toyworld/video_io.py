"""Toy clips as video files: frames are 32×32 RGB; files hold them upscaled (nearest) so codecs keep them sharp."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .world import IMAGE_SIZE

FILE_SCALE = 8  # 32×32 frames are stored as 256×256: codecs blur and subsample tiny frames


def write_clip(path: Path, frames: np.ndarray, fps: int = 8) -> None:
    """Write ``(F, H, W, 3)`` uint8 RGB frames; ``.mp4`` (mp4v) or ``.avi`` (lossless FFV1), or ``.png`` (a strip)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    big = frames.repeat(FILE_SCALE, axis=1).repeat(FILE_SCALE, axis=2)
    if path.suffix == ".png":
        cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(list(big), axis=1), cv2.COLOR_RGB2BGR))
        return
    codec = "FFV1" if path.suffix == ".avi" else "mp4v"
    height, width = big.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, (width, height))
    if not writer.isOpened():
        raise ValueError(f"cannot write {path}: no {codec} encoder in this OpenCV build")
    for frame in big:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def read_clip(path: Path, image_size: int = IMAGE_SIZE, max_frames: int | None = None) -> np.ndarray:
    """``(F, image_size, image_size, 3)`` uint8 RGB frames of a video file, area-resized to the toy size."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ValueError(f"cannot read video {path}")
    frames = []
    while max_frames is None or len(frames) < max_frames:
        ok, frame = capture.read()
        if not ok:
            break
        small = cv2.resize(frame, (image_size, image_size), interpolation=cv2.INTER_AREA)
        frames.append(cv2.cvtColor(small, cv2.COLOR_BGR2RGB))
    capture.release()
    if not frames:
        raise ValueError(f"{path} holds no frames")
    return np.stack(frames)
