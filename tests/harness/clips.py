"""Small synthetic video clips whose frames are known exactly, written with OpenCV (GIFs with Pillow).

Every frame (RGB) has four quadrants:

* top-left: pure red, top-right: pure blue (a swapped channel order shows at once);
* bottom-left: the frame index, encoded as ``(16 * (i // 16) + 8, 16 * (i % 16) + 8, 200)`` — steps of 16
  survive lossy codecs (MJPG, mp4v) inside the large solid block;
* bottom-right: black with a white 8×8 square that moves 3 px right per frame.

FFV1 (lossless in this OpenCV build) decodes back to exactly these pixels.

Clips with sound (``write_clip_with_sound``, PyAV) carry a stepped tone: while source frame ``i`` is shown
the sound is a sine of ``tone_hz(i)`` (300 Hz up in steps of 100 Hz, starting over every 48 frames), so any
stretch of the sound tells which frames it belongs to.
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


TONE_BASE_HZ, TONE_STEP_HZ, TONE_STEPS = 300.0, 100.0, 48  # up to 5 kHz: well inside AAC's band


def tone_hz(index: int, base_hz: float = TONE_BASE_HZ, step_hz: float = TONE_STEP_HZ) -> float:
    """The tone's pitch while source frame ``index`` is shown."""
    return base_hz + step_hz * (index % TONE_STEPS)


def stepped_tone(seconds: float, fps: float, sample_rate: int = 48000, channels: int = 1,
                 base_hz: float = TONE_BASE_HZ, step_hz: float = TONE_STEP_HZ) -> np.ndarray:
    """float32 [channels, samples]: ``tone_hz(i)`` during frame ``i`` (phase-continuous, no clicks); channel ``c``
    at amplitude ``0.5 / (c + 1)``, so swapped or mixed channels show."""
    samples = round(seconds * sample_rate)
    index = np.floor(np.arange(samples) * fps / sample_rate) % TONE_STEPS
    phase = 2 * np.pi * np.cumsum(base_hz + step_hz * index) / sample_rate
    wave = np.sin(phase).astype(np.float32)
    return np.stack([wave * (0.5 / (channel + 1)) for channel in range(channels)])


def dominant_hz(signal: np.ndarray, sample_rate: int) -> float:
    """The strongest frequency of a 1-D signal (Hann window, FFT peak refined by a parabola through its neighbours)."""
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal))))
    peak = int(np.argmax(spectrum[1:-1])) + 1
    left, centre, right = np.log(spectrum[peak - 1: peak + 2] + 1e-12)
    shift = 0.5 * (left - right) / (left - 2 * centre + right) if left - 2 * centre + right else 0.0
    return (peak + shift) * sample_rate / len(signal)


def write_clip_with_sound(path: Path, frames: int = 12, width: int = 90, height: int = 70, fps: int = 30,
                          sample_rate: int = 48000, channels: int = 1, audio_seconds: float | None = None,
                          audio_codec: str = "pcm_s16le", video_codec: str = "ffv1") -> np.ndarray:
    """A clip of ``frame_rgb`` frames with a ``stepped_tone`` track, written with PyAV; returns the sound written.

    ``audio_seconds`` (default: as long as the frames) makes the track shorter or longer than the video.
    Lossless by default (FFV1 + 16-bit PCM, e.g. in .mkv or .mov); ``audio_codec="aac", video_codec="mpeg4"``
    in .mp4 is what cameras and phones write.
    """
    import av

    layouts = {1: "mono", 2: "stereo", 6: "5.1"}
    seconds = frames / fps if audio_seconds is None else audio_seconds
    sound = stepped_tone(seconds, fps, sample_rate, channels)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        video = container.add_stream(video_codec, rate=fps)
        video.width, video.height = width, height
        video.pix_fmt = "bgr0" if video_codec == "ffv1" else "yuv420p"
        audio = container.add_stream(audio_codec, rate=sample_rate, layout=layouts[channels])
        for index in range(frames):
            picture = av.VideoFrame.from_ndarray(frame_rgb(index, width, height), format="rgb24")
            for packet in video.encode(picture.reformat(format=video.pix_fmt)):
                container.mux(packet)
        chunk = audio.codec_context.frame_size or 1024
        planar = audio.codec_context.format.is_planar
        for start in range(0, sound.shape[1], chunk):
            part = sound[:, start: start + chunk]
            if planar:
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(part), format="fltp", layout=layouts[channels])
            else:  # packed 16-bit: [1, samples × channels], channels interleaved
                pcm = np.clip(np.round(part.T * 32767), -32768, 32767).astype(np.int16).reshape(1, -1)
                frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout=layouts[channels])
            frame.sample_rate, frame.pts = sample_rate, start
            for packet in audio.encode(frame):
                container.mux(packet)
        for stream in (video, audio):
            for packet in stream.encode():
                container.mux(packet)
    return sound


def read_sound(path: Path) -> tuple[np.ndarray, int]:
    """The first audio track of a file, decoded with PyAV: (float32 [channels, samples], sample rate)."""
    import av

    parts = []
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        for frame in container.decode(stream):
            data = frame.to_ndarray()  # planar: [channels, n]; packed: [1, n × channels], interleaved
            parts.append(data if frame.format.is_planar else data.reshape(-1, len(frame.layout.channels)).T)
        rate = stream.codec_context.sample_rate
    return np.concatenate(parts, axis=1).astype(np.float32), rate
