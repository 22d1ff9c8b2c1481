"""How a decoded frame becomes an output frame: the sizes, the scaling and cut, and RGB uint8.

``width``/``height`` of 0 keep the source size. With one of them set, the other follows the source's
aspect ratio. The final width and height are always rounded **down to a multiple of 8** (minimum 8),
because the VAE works on 8×8 pixel blocks; e.g. a 90×70 video loads as 88×64. ``resize`` says how
frames reach that size:

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
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


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


def to_uint8(frame: np.ndarray) -> np.ndarray:
    """The frame as 8 bits per value, whatever depth the decoder handed out."""
    if frame.dtype == np.uint8:
        return frame
    if frame.dtype == np.uint16:  # some backends hand out 16-bit frames for high bit-depth video
        return (frame >> 8).astype(np.uint8)
    return np.clip(frame, 0, 255).astype(np.uint8)
