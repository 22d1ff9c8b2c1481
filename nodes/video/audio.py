"""The sound of the selected frames: a video's audio track, cut to their time span, as ComfyUI's AUDIO.

AUDIO is ``{"waveform": float32 [1, channels, samples] in -1..1, "sample_rate": int}``, what ComfyUI's
CreateVideo takes (its optional ``audio`` input) and its audio nodes pass around. Decoded with PyAV
(``av``, a ComfyUI dependency); the frames themselves are decoded by OpenCV in ``decode``.

**Time span.** Source frame ``i`` is on screen from ``i / fps`` to ``(i + 1) / fps`` (counted from the video
stream's start). The selected frames ``skip, skip + n, …, skip + (count − 1)·n`` each stand for ``n`` source
frames at the output rate ``fps / n``, so the audio runs from ``skip / fps`` to ``(skip + count·n) / fps``:
it lasts ``count / (fps / n)`` seconds, exactly as long as CreateVideo shows the frames. Sound before and
after that span (a longer audio track) is cut.

**Shorter sound, no sound.** Where the track has no sound for part of the span (it ends early or starts
late), that part is silence, so the audio always lasts as long as the frames; when more than one source
frame's worth is missing, a warning names how much (the span reaching up to n − 1 frames past the video's
end, with every n-th frame selected, is expected and not warned about). A video without an audio track
(or one PyAV cannot read or decode; then a warning) gives a silent mono waveform of the span's length at
44.1 kHz: every AUDIO consumer accepts it, and CreateVideo → SaveVideo writes a silent track. (A
zero-length waveform would not do: CreateVideo fails encoding it; None would break audio nodes.) The
sound never fails the node: workflows that leave the audio output unconnected must keep loading frames.

**Channels.** Mono and stereo stay as they are; more channels (5.1, …) are mixed down to stereo, the most
ComfyUI 0.3.75's video writer can save.
"""
from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from ..adapter.runtime import stop_if_cancelled
from .memory import check_audio_memory

SILENT_SAMPLE_RATE = 44100
SEEK_MARGIN_S = 0.5  # seek this far before the span: some decoders (AAC) need a frame or two to settle
CANCEL_CHECK_EVERY = 64  # packets between cancel checks
CHANNELS = {"mono": 1, "stereo": 2}  # the layouts the output comes in


def selection_span(skip: int, every_nth: int, count: int, fps: float) -> tuple[float, float]:
    """(start, duration) in seconds of the selected frames, from the video's first frame; see the module docstring."""
    return skip / fps, count * every_nth / fps


def span_samples(duration: float, sample_rate: int) -> int:
    return max(0, round(duration * sample_rate))


def silent_audio(duration: float, sample_rate: int = SILENT_SAMPLE_RATE, channels: int = 1) -> dict:
    """AUDIO of ``duration`` seconds of silence."""
    samples = span_samples(duration, sample_rate)
    return {"waveform": torch.zeros((1, channels, samples), dtype=torch.float32), "sample_rate": sample_rate}


def load_audio(path: Path, name: str, skip: int, every_nth: int, count: int, fps: float) -> dict:
    """The AUDIO of the ``count`` frames selected from ``path`` (``skip`` first, every ``every_nth``), at ``fps``."""
    import av

    start, duration = selection_span(skip, every_nth, count, fps)
    try:
        container = av.open(str(path), metadata_errors="replace")  # a damaged tag must not cost the sound
    except (av.error.FFmpegError, OSError) as error:
        logging.warning("LoadVideoFrames: the sound of '%s' cannot be read (%s); the audio output is silent.",
                        name, error)
        return silent_audio(duration)
    with container:
        if not container.streams.audio:
            return silent_audio(duration)
        stream = container.streams.audio[0]
        rate = int(stream.codec_context.sample_rate or stream.rate or 0)
        if rate <= 0:
            logging.warning("LoadVideoFrames: the sound of '%s' has no sample rate; the audio output is silent.", name)
            return silent_audio(duration)
        layout = "mono" if stream.codec_context.channels == 1 else "stereo"
        samples = span_samples(duration, rate)
        check_audio_memory(samples, CHANNELS[layout], rate)
        # OpenCV's frame 0 is the video stream's first frame: the span is measured from there.
        origin = _stream_start(container.streams.video[0]) if container.streams.video else 0.0
        try:
            waveform, covered = _decode_span(container, stream, origin + start, samples, rate, layout)
        except av.error.FFmpegError as error:
            logging.warning("LoadVideoFrames: the sound of '%s' could not be decoded (%s); the audio output is "
                            "silent.", name, error)
            return silent_audio(duration)
    _warn_if_short(name, covered, samples, rate, ((count - 1) * every_nth + 1) / fps, fps)
    return {"waveform": torch.from_numpy(waveform).unsqueeze(0), "sample_rate": rate}


def _stream_start(stream) -> float:
    if stream.start_time is None or stream.time_base is None:
        return 0.0
    return float(stream.start_time * stream.time_base)


def _decode_span(container, stream, start: float, samples: int, rate: int, layout: str):
    """(waveform [channels, samples], (first, end) sample indices that sound covered, or None).

    Seeks near ``start`` instead of decoding from the file's beginning (a long track, a short span). If the
    seek fails or lands inside the span (formats with a coarse index), decodes from the beginning instead.
    """
    seek_to = start - SEEK_MARGIN_S
    if seek_to > 0 and _seek(container, stream, seek_to):
        waveform, covered, landed_before = _decode(container, stream, start, samples, rate, layout)
        if landed_before or not _seek(container, stream, 0.0):
            return waveform, covered
    return _decode(container, stream, start, samples, rate, layout)[:2]


def _seek(container, stream, seconds: float) -> bool:
    import av

    try:
        container.seek(int(Fraction(seconds) / _time_base(stream, 1)), stream=stream, backward=True)
    except av.error.FFmpegError:
        return False
    return True


def _time_base(stream, rate: int) -> Fraction:
    return Fraction(stream.time_base) if stream.time_base else Fraction(1, max(1, rate))


def _decode(container, stream, start, samples, rate, layout):
    """Decode from where the container stands: (waveform, covered, whether the first frame began by ``start``)."""
    import av

    waveform = np.zeros((CHANNELS[layout], samples), np.float32)
    first = end = None
    landed_before = None
    resamplers: dict = {}
    # Frames follow each other without gaps; a timestamp only moves a frame when it disagrees by more than
    # rounding (Matroska stores milliseconds: 1024 samples are 21.33 ms, stamped 21 or 22) — a real gap.
    slack = max(rate // 100, int(np.ceil(_time_base(stream, rate) * rate)) + 1)
    position = None  # where the next frame starts: right after the previous one
    for number, packet in enumerate(container.demux(stream)):
        if number % CANCEL_CHECK_EVERY == 0:
            stop_if_cancelled()
        try:
            frames = packet.decode()
        except av.error.InvalidDataError:  # a damaged packet: its stretch stays silent
            continue
        for frame in frames:
            stamped = round((frame.time - start) * rate) if frame.time is not None else None
            if position is None or (stamped is not None and abs(stamped - position) > slack):
                offset = stamped if stamped is not None else (position or 0)
            else:
                offset = position
            if landed_before is None:
                landed_before = offset <= 0
            if offset >= samples:
                return waveform, (first, end) if first is not None else None, bool(landed_before)
            data = _to_float(frame, resamplers, layout, rate)
            position = offset + data.shape[1]
            lo, hi = max(0, offset), min(samples, position)
            if hi > lo:
                waveform[:, lo:hi] = data[:, lo - offset: hi - offset]
                first = lo if first is None else min(first, lo)
                end = hi if end is None else max(end, hi)
    return waveform, (first, end) if first is not None else None, bool(landed_before)


def _to_float(frame, resamplers: dict, layout: str, rate: int) -> np.ndarray:
    """A decoded frame as float32 [channels, samples] in ``layout`` and ``rate`` (one resampler per input kind,
    since a stream may change format mid-way)."""
    import av

    key = (frame.format.name, frame.layout.name, frame.sample_rate)
    if key not in resamplers:
        resamplers[key] = av.AudioResampler(format="fltp", layout=layout, rate=rate)
    parts = [converted.to_ndarray() for converted in resamplers[key].resample(frame)]
    if not parts:
        return np.zeros((CHANNELS[layout], 0), np.float32)
    return np.concatenate(parts, axis=1).astype(np.float32, copy=False)


def _warn_if_short(name: str, covered, samples: int, rate: int, frames_end: float, fps: float) -> None:
    """Warn when sound is missing for more than one source frame inside the selected frames' own span.

    ``frames_end`` is where the last selected frame itself stops showing (the span may reach past the
    video's end by up to n − 1 frames; silence there is expected, not warned about).
    """
    needed = min(samples, round(frames_end * rate))
    tolerance = rate / fps
    first, end = covered if covered is not None else (needed, needed)
    missing_start, missing_end = first, max(0, needed - end)
    if covered is not None and missing_start <= tolerance and missing_end <= tolerance:
        return
    if covered is None:
        what = "has no sound during the selected frames"
    else:
        what = ", ".join(part for part in (
            f"its sound starts {missing_start / rate:.2f} s after the first selected frame" if missing_start > tolerance
            else "",
            f"its sound ends {missing_end / rate:.2f} s before the selected frames do" if missing_end > tolerance
            else "") if part)
    logging.warning("LoadVideoFrames: '%s' %s; the audio output is silent there, so it lasts as long as the frames "
                    "(%.2f s).", name, what, samples / rate)
