"""Whether the frames a selection asks for fit into free RAM, checked before decoding (and during it).

The frames the settings select (counted from the file's header) are priced at ``frames × H × W × 3 × 5``
bytes: 4 for the float32 output plus 1 for the 8-bit frame held while decoding. Loading is refused
when that exceeds the RAM that is free. Header frame counts can be wrong (truncated files, some
containers); when more frames decode than the header announced, free RAM is checked again before
each further frame. The selection's sound (``audio``) is checked too: small beside the frames, except when
a few frames spread over a long video (a large select_every_nth) span hours of it.
"""
from __future__ import annotations

BYTES_PER_VALUE = 5  # float32 output + the uint8 frame held while decoding
_LOWER = "set frame_load_cap, a larger select_every_nth or a smaller width/height."


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
            + _LOWER
        )


def check_memory_while_decoding(frames: int, size: tuple[int, int], header_total: int) -> None:
    """``ValueError`` when frame number ``frames``, one more than the header announced, no longer fits."""
    frame_bytes = size[0] * size[1] * 3
    # Staged uint8 frames are already in use; still to come: this frame and the float32 output.
    need = frames * frame_bytes * 4 + frame_bytes
    free = available_ram_bytes()
    if need > free:
        said = f"its header said {header_total:,}" if header_total else "its header gives no frame count"
        raise ValueError(
            f"The video has more frames than expected ({said}); at frame {frames:,} of {size[0]}×{size[1]} the "
            f"output would need {human_bytes(need)} more but {human_bytes(free)} are free; " + _LOWER
        )


def check_audio_memory(samples: int, channels: int, sample_rate: int) -> None:
    """``ValueError`` when the sound of the selected frames (float32, decoded in place) does not fit into free RAM."""
    need = samples * channels * 4
    free = available_ram_bytes()
    if need > free:
        raise ValueError(
            f"The sound of the selected frames ({samples / sample_rate:,.0f} s, "
            f"{'mono' if channels == 1 else f'{channels} channels'} at {sample_rate:,} Hz) needs {human_bytes(need)} but {human_bytes(free)} are free; set frame_load_cap "
            "(and a smaller select_every_nth) to select a shorter stretch of the video."
        )
