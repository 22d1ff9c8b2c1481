"""Small synthetic video clips whose frames are known exactly, written with OpenCV (GIFs with Pillow).

Every frame (RGB) has four quadrants:

* top-left: pure red, top-right: pure blue (a swapped channel order shows at once);
* bottom-left: the frame index, encoded as ``(16 * (i // 16) + 8, 16 * (i % 16) + 8, 200)`` — steps of 16
  survive lossy codecs (MJPG, mp4v) inside the large solid block;
* bottom-right: black with a white 8×8 square that moves 3 px right per frame.

FFV1 (lossless in this OpenCV build) decodes back to exactly these pixels.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

RED = (255, 0, 0)
BLUE = (0, 0, 255)
SQUARE = 8


def index_colour(index: int) -> tuple[int, int, int]:
    return (16 * (index // 16) + 8, 16 * (index % 16) + 8, 200)


def decode_index(rgb) -> int:
    """The frame index from an (r, g, b) sample of the bottom-left block, 0..255 values (lossy-tolerant)."""
    r, g = float(rgb[0]), float(rgb[1])
    return 16 * round((r - 8) / 16) + round((g - 8) / 16)


def square_left(index: int, width: int) -> int:
    half = width // 2
    return half + 2 + (3 * index) % max(1, width - half - SQUARE - 4)


def frame_rgb(index: int, width: int = 90, height: int = 70) -> np.ndarray:
    """Frame ``index`` of a clip (H, W, 3) uint8 RGB."""
    frame = np.zeros((height, width, 3), np.uint8)
    half_w, half_h = width // 2, height // 2
    frame[:half_h, :half_w] = RED
    frame[:half_h, half_w:] = BLUE
    frame[half_h:, :half_w] = index_colour(index)
    top = half_h + (height - half_h - SQUARE) // 2
    left = square_left(index, width)
    frame[top: top + SQUARE, left: left + SQUARE] = 255
    return frame


def write_clip(path: Path, frames: int = 12, width: int = 90, height: int = 70, fps: float = 30.0,
               fourcc: str = "FFV1", grey: bool = False) -> list[np.ndarray]:
    """Write ``frames`` frames with OpenCV; returns the RGB frames written (grey: (H, W) uint8 frames)."""
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height), not grey)
    if not writer.isOpened():
        raise RuntimeError(f"this OpenCV build cannot write {fourcc} to {path.suffix}")
    written = []
    for index in range(frames):
        rgb = frame_rgb(index, width, height)
        if grey:
            rgb = rgb.mean(axis=2).astype(np.uint8)
            writer.write(rgb)
        else:
            writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        written.append(rgb)
    writer.release()
    return written


def write_gif(path: Path, frames: int = 6, width: int = 90, height: int = 70,
              duration_ms: int = 50) -> list[np.ndarray]:
    """An animated GIF written with Pillow (OpenCV cannot write GIF); returns the RGB frames written."""
    from PIL import Image

    written = [frame_rgb(index, width, height) for index in range(frames)]
    images = [Image.fromarray(frame) for frame in written]
    images[0].save(path, save_all=True, append_images=images[1:], duration=duration_ms, loop=0)
    return written


def write_rgba_clip(path: Path, frames: int = 4, width: int = 90, height: int = 70, fps: int = 30) -> list[np.ndarray]:
    """A video with an alpha channel (FFV1, bgra, in .mkv) written with PyAV; returns the RGBA frames written.

    Alpha is 0 on the left half and 128 on the right half, so dropping vs. keeping it is visible.
    """
    import av

    written = []
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "bgra"
        for index in range(frames):
            rgba = np.empty((height, width, 4), np.uint8)
            rgba[..., :3] = frame_rgb(index, width, height)
            rgba[:, : width // 2, 3] = 0
            rgba[:, width // 2:, 3] = 128
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgba, format="rgba")):
                container.mux(packet)
            written.append(rgba)
        for packet in stream.encode():
            container.mux(packet)
    return written
