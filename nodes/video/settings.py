"""The node's frame selection and size settings: their limits, and the check that names the first bad one."""
from __future__ import annotations

import numpy as np

RESIZE_MODES = ("crop", "fit", "stretch")
MAX_SIDE = 16384  # ComfyUI's MAX_RESOLUTION
MAX_FRAMES = 1_000_000


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
