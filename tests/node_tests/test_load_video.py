"""LoadVideoFrames in-process on a real ComfyUI: frames, order, fps, sizes, colours, memory, bad input, safety."""
from __future__ import annotations

import builtins
import importlib
import io
import os
import uuid
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from harness.clips import (BLUE, RED, decode_index, dominant_hz, frame_rgb, index_colour, square_left, tone_hz,
                           write_clip, write_clip_with_sound, write_gif, write_rgba_clip)

DEFAULTS = dict(frame_load_cap=0, skip_first_frames=0, select_every_nth=1, width=0, height=0, resize="crop")


@pytest.fixture(scope="module")
def lv(pack):
    return importlib.import_module(pack.__name__ + ".nodes.load_video")


@pytest.fixture(scope="module")
def video(pack):
    """The node's helper modules (nodes/video/), by job."""
    return SimpleNamespace(**{name: importlib.import_module(f"{pack.__name__}.nodes.video.{name}")
                              for name in ("resize", "memory", "decode", "audio")})


@pytest.fixture
def input_dir(comfyui) -> Path:
    return Path(comfyui.folder_paths.get_input_directory())


@pytest.fixture
def clips(input_dir):
    """A fresh subfolder of the input folder; returns (folder, name-of(path))."""
    folder = input_dir / f"clips-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    return folder


def name_of(path: Path, input_dir: Path) -> str:
    return path.relative_to(input_dir).as_posix()


def load(lv, name, **settings):
    node = lv.NODE_CLASS_MAPPINGS["LoadVideoFrames"]()
    with torch.inference_mode():
        return node.load(name, **{**DEFAULTS, **settings})


def as_uint8(images: torch.Tensor) -> np.ndarray:
    return (images.numpy() * 255.0).round().astype(np.int16)


def indices(images: torch.Tensor) -> list[int]:
    """Frame index of each loaded frame, read from the centre of its bottom-left block."""
    pixels = as_uint8(images)
    height, width = pixels.shape[1:3]
    return [decode_index(frame[(3 * height) // 4, width // 4]) for frame in pixels]


@pytest.fixture
def progress_calls(monkeypatch):
    """Every ProgressBar hook call as (value, total): what the UI's progress bar receives."""
    import comfy.utils

    calls = []
    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", lambda value, total, preview, node_id=None:
                        calls.append((value, total)))
    return calls


# --- frames, order, fps, colours ----------------------------------------------------------------

def test_lossless_clip_loads_every_frame_exactly_in_rgb(lv, clips, input_dir, progress_calls):
    written = write_clip(clips / "clip.avi", frames=12, width=90, height=70, fps=30, fourcc="FFV1")
    images, count, fps, _ = load(lv, name_of(clips / "clip.avi", input_dir))
    # 90×70 rounds down to 88×64: the 2 and 6 surplus pixels are trimmed evenly from the edges.
    assert images.shape == (12, 64, 88, 3) and images.dtype == torch.float32
    assert count == 12 and fps == 30.0
    assert images.min() >= 0.0 and images.max() <= 1.0
    expected = torch.from_numpy(np.stack([frame[3:67, 1:89] for frame in written])).float() / 255.0
    assert torch.equal(images, expected)
    assert tuple(images[0, 5, 5].tolist()) == (1.0, 0.0, 0.0)  # red stays red: RGB, not BGR
    assert tuple(images[0, 5, 80].tolist()) == (0.0, 0.0, 1.0)
    # Up to the total, in order (newer ComfyUI throttles the hook between the first and last update).
    assert progress_calls[-1] == (12, 12) and progress_calls == sorted(progress_calls)


def test_skip_every_nth_and_cap_select_the_right_frames(lv, clips, input_dir, progress_calls):
    write_clip(clips / "clip.avi", frames=20)
    images, count, fps, _ = load(lv, name_of(clips / "clip.avi", input_dir), skip_first_frames=2,
                              select_every_nth=3, frame_load_cap=4)
    assert indices(images) == [2, 5, 8, 11] and count == 4
    assert fps == pytest.approx(10.0)
    assert progress_calls[-1][0] == 12  # decoding stops at the last selected frame
    written = frame_rgb(5)
    assert np.array_equal(as_uint8(images)[1], written[3:67, 1:89])


def test_cap_beyond_the_length_loads_all_available_frames(lv, clips, input_dir):
    write_clip(clips / "clip.avi", frames=12)
    images, count, fps, _ = load(lv, name_of(clips / "clip.avi", input_dir), skip_first_frames=5, frame_load_cap=100)
    assert indices(images) == list(range(5, 12)) and count == 7 and fps == 30.0


def test_every_nth_without_cap_reaches_the_end(lv, clips, input_dir):
    write_clip(clips / "clip.avi", frames=11, fps=24)
    images, count, fps, _ = load(lv, name_of(clips / "clip.avi", input_dir), select_every_nth=4)
    assert indices(images) == [0, 4, 8] and count == 3 and fps == pytest.approx(6.0)


def test_moving_square_follows_the_frames(lv, clips, input_dir):
    write_clip(clips / "clip.avi", frames=8)
    images, _, _, _ = load(lv, name_of(clips / "clip.avi", input_dir))
    pixels = as_uint8(images)
    row = pixels[:, 52, 44:, :].min(axis=-1)  # a row through the square, right half (88-wide frame, 1 px cut)
    for index, frame_row in enumerate(row):
        lit = np.flatnonzero(frame_row == 255)
        assert lit[0] + 44 + 1 == square_left(index, 90) and len(lit) == 8


def test_mp4_loads_with_count_fps_order_and_colours(lv, clips, input_dir):
    write_clip(clips / "clip.mp4", frames=15, width=90, height=70, fps=25, fourcc="mp4v")
    images, count, fps, _ = load(lv, name_of(clips / "clip.mp4", input_dir))
    assert images.shape == (15, 64, 88, 3) and count == 15 and fps == pytest.approx(25.0)
    assert indices(images) == list(range(15))
    pixels = as_uint8(images)
    assert np.abs(pixels[:, 10, 10] - RED).max() <= 12  # mp4v is lossy; the block interior stays close
    assert np.abs(pixels[:, 10, 75] - BLUE).max() <= 12
    assert np.abs(pixels[7, 50, 20] - index_colour(7)).max() <= 12


def test_gif_written_by_pillow_loads(lv, clips, input_dir):
    written = write_gif(clips / "anim.gif", frames=6, duration_ms=50)
    images, count, fps, _ = load(lv, name_of(clips / "anim.gif", input_dir))
    assert images.shape == (6, 64, 88, 3) and count == 6
    assert fps == pytest.approx(20.0)  # 50 ms per frame
    assert np.array_equal(as_uint8(images), np.stack([frame[3:67, 1:89] for frame in written]))


def test_grey_video_becomes_rgb(lv, clips, input_dir):
    written = write_clip(clips / "grey.avi", frames=5, grey=True)
    images, count, _, _ = load(lv, name_of(clips / "grey.avi", input_dir))
    assert images.shape == (5, 64, 88, 3) and count == 5
    pixels = as_uint8(images)
    for channel in range(3):
        assert np.array_equal(pixels[..., channel], np.stack([frame[3:67, 1:89] for frame in written]))


def test_alpha_video_becomes_rgb_with_alpha_dropped(lv, clips, input_dir):
    written = write_rgba_clip(clips / "alpha.mkv", frames=4)
    images, count, _, _ = load(lv, name_of(clips / "alpha.mkv", input_dir))
    assert images.shape == (4, 64, 88, 3) and count == 4
    # The stored colours come back unchanged, also where alpha is 0 (no blending, no premultiplication).
    assert np.array_equal(as_uint8(images), np.stack([frame[3:67, 1:89, :3] for frame in written]))


def test_to_rgb_handles_every_channel_layout(video):
    bgr = np.zeros((4, 4, 3), np.uint8)
    bgr[..., 0] = 200  # blue in OpenCV's order
    assert video.resize.to_rgb(bgr)[0, 0].tolist() == [0, 0, 200]
    grey = np.full((4, 4), 77, np.uint8)
    assert video.resize.to_rgb(grey).shape == (4, 4, 3) and (video.resize.to_rgb(grey) == 77).all()
    assert (video.resize.to_rgb(grey[..., None]) == 77).all()
    bgra = np.concatenate([bgr, np.full((4, 4, 1), 9, np.uint8)], axis=-1)
    assert video.resize.to_rgb(bgra)[0, 0].tolist() == [0, 0, 200]
    with pytest.raises(ValueError, match="unsupported shape"):
        video.resize.to_rgb(np.zeros((4, 4, 2), np.uint8))


# --- sizes ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("source, width, height, resize, expected", [
    ((90, 70), 0, 0, "crop", (88, 64)),         # keep: round down to multiples of 8
    ((90, 70), 0, 0, "stretch", (88, 64)),
    ((90, 70), 64, 64, "crop", (64, 64)),       # crop: exactly the box
    ((90, 70), 64, 64, "stretch", (64, 64)),    # stretch: exactly the box
    ((90, 70), 64, 64, "fit", (64, 48)),        # fit: 64×49.8 inside the box → 64×50 → 64×48
    ((90, 70), 100, 50, "crop", (96, 48)),      # box sides not multiples of 8 are rounded down
    ((90, 70), 100, 50, "fit", (64, 48)),       # 64.3×50 → 64×50 → 64×48
    ((90, 70), 45, 0, "crop", (40, 32)),        # height follows the aspect: 35 → 32
    ((90, 70), 0, 35, "fit", (40, 32)),         # width follows: 45 → 40
    ((90, 70), 200, 0, "crop", (200, 152)),     # upscaling: 155.6 → 156 → 152
    ((90, 70), 3, 3, "crop", (8, 8)),           # minimum 8
    ((5, 5), 0, 0, "crop", (8, 8)),
])
def test_output_size_rules(video, source, width, height, resize, expected):
    assert video.resize.output_size(*source, width, height, resize) == expected


def test_crop_fit_and_stretch_frames(lv, clips, input_dir):
    write_clip(clips / "clip.avi", frames=3)
    name = name_of(clips / "clip.avi", input_dir)
    crop, _, _, _ = load(lv, name, width=88, height=16, resize="crop")
    fit, _, _, _ = load(lv, name, width=88, height=16, resize="fit")
    stretch, _, _, _ = load(lv, name, width=88, height=16, resize="stretch")
    assert crop.shape == (3, 16, 88, 3) and stretch.shape == (3, 16, 88, 3)
    assert fit.shape == (3, 16, 16, 3)  # 20.6×16 fits in 88×16 → 16×16; nothing cut, no padding
    crop_px, stretch_px = as_uint8(crop), as_uint8(stretch)
    # crop keeps the middle rows only: the red block's top and the index block's bottom are cut,
    # the middle boundary stays in the middle.
    assert np.abs(crop_px[0, 2, 10] - RED).max() <= 2 and np.abs(crop_px[0, 13, 10] - index_colour(0)).max() <= 2
    # stretch keeps every row: squeezed, but top is red and bottom is the index block.
    assert np.abs(stretch_px[0, 0, 10] - RED).max() <= 2 and np.abs(stretch_px[0, 15, 10] - index_colour(0)).max() <= 2
    for images in (crop, fit, stretch):
        assert images.min() >= 0.0 and images.max() <= 1.0


def test_width_only_keeps_the_aspect_and_frame_content(lv, clips, input_dir):
    write_clip(clips / "clip.avi", frames=4)
    images, count, _, _ = load(lv, name_of(clips / "clip.avi", input_dir), width=45)
    assert images.shape == (4, 32, 40, 3) and count == 4
    assert indices(images) == [0, 1, 2, 3]
    pixels = as_uint8(images)
    assert np.abs(pixels[0, 4, 4] - RED).max() <= 2 and np.abs(pixels[0, 4, 35] - BLUE).max() <= 2


def test_upscaling_stays_in_range(lv, clips, input_dir):
    write_clip(clips / "clip.avi", frames=2)
    images, _, _, _ = load(lv, name_of(clips / "clip.avi", input_dir), width=200, height=160, resize="stretch")
    assert images.shape == (2, 160, 200, 3) and images.min() >= 0.0 and images.max() <= 1.0
    assert indices(images) == [0, 1]


# --- memory ---------------------------------------------------------------------------------------

def test_refuses_selections_larger_than_free_ram_before_decoding(lv, video, clips, input_dir, monkeypatch,
                                                                 progress_calls):
    write_clip(clips / "clip.avi", frames=12)
    name = name_of(clips / "clip.avi", input_dir)
    images, count, _, _ = load(lv, name, select_every_nth=2)  # every other frame: 6 frames of 88×64
    assert count == 6 and images.shape == (6, 64, 88, 3)
    # What loading these frames holds: the float32 batch it returns, plus one 8-bit copy of every frame.
    need = images.element_size() * images.nelement() + images.nelement() * np.dtype(np.uint8).itemsize
    progress_calls.clear()
    monkeypatch.setattr(video.memory, "available_ram_bytes", lambda: need - 1)
    with pytest.raises(ValueError, match=r"6 frames at 88×64 need .* but .* are free; set frame_load_cap"):
        load(lv, name, select_every_nth=2)
    assert progress_calls == []  # refused before decoding anything
    monkeypatch.setattr(video.memory, "available_ram_bytes", lambda: need)
    images, count, _, _ = load(lv, name, select_every_nth=2)
    assert count == 6 and images.shape == (6, 64, 88, 3)


def test_memory_message_names_the_sizes_and_what_to_lower(video, monkeypatch):
    monkeypatch.setattr(video.memory, "available_ram_bytes", lambda: 12 * 10**9)
    with pytest.raises(ValueError) as error:
        video.memory.check_memory(5400, 1920, 1080)
    # 5400 × 1920 × 1080 pixels × 3 values × (4 bytes float32 + 1 byte uint8) = 167.96 GB
    assert str(error.value) == ("5,400 frames at 1920×1080 need 168 GB but 12 GB are free; set frame_load_cap, "
                                "a larger select_every_nth or a smaller width/height.")
    video.memory.check_memory(10, 1920, 1080)  # 311 MB fit


def _kernel_available_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024  # the kernel counts in KiB
    pytest.skip("this kernel reports no MemAvailable")


def test_free_ram_is_what_the_kernel_calls_available(video):
    """Free RAM counts reclaimable page cache (MemAvailable), unlike MemFree; other processes move it a little."""
    if not Path("/proc/meminfo").exists():
        pytest.skip("needs Linux's /proc/meminfo")
    before = _kernel_available_bytes()
    free = video.memory.available_ram_bytes()
    after = _kernel_available_bytes()
    slack = 64 * 2**20
    assert min(before, after) - slack <= free <= max(before, after) + slack


def test_unknown_frame_count_trusts_decoded_frames_and_watches_ram(lv, video, clips, input_dir, monkeypatch,
                                                                   progress_calls):
    write_clip(clips / "clip.avi", frames=10)
    name = name_of(clips / "clip.avi", input_dir)
    monkeypatch.setattr(video.decode, "header_frame_count", lambda capture: 0)  # a container that does not say
    images, count, _, _ = load(lv, name)
    assert count == 10 and indices(images) == list(range(10))
    assert progress_calls[-1] == (10, 10)  # the bar's total grows with the frames that really decode
    frame = 64 * 88 * 3
    monkeypatch.setattr(video.memory, "available_ram_bytes", lambda: 4 * frame * 4 + frame)  # room for 4 frames
    with pytest.raises(ValueError, match="more frames than expected .* at frame 5 .* set frame_load_cap"):
        load(lv, name)


# --- bad input ------------------------------------------------------------------------------------

def test_missing_file(lv, clips, input_dir):
    name = name_of(clips / "nope.mp4", input_dir)
    with pytest.raises(ValueError, match="Video file not found: .*nope.mp4"):
        load(lv, name)
    assert "Video file not found" in lv.LoadVideoFrames.VALIDATE_INPUTS(name, 0, 0, 1, 0, 0)


def test_zero_byte_file(lv, clips, input_dir):
    (clips / "empty.mp4").write_bytes(b"")
    name = name_of(clips / "empty.mp4", input_dir)
    with pytest.raises(ValueError, match=r"is empty \(0 bytes\)"):
        load(lv, name)
    assert "is empty" in lv.LoadVideoFrames.VALIDATE_INPUTS(name, 0, 0, 1, 0, 0)


def test_text_file_renamed_mp4(lv, clips, input_dir):
    (clips / "notes.mp4").write_text("shopping list: eggs, milk\n" * 40)
    with pytest.raises(ValueError, match="contains text, not video data"):
        load(lv, name_of(clips / "notes.mp4", input_dir))


def test_random_bytes_named_mp4(lv, clips, input_dir):
    (clips / "noise.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match="could not be opened as a video"):
        load(lv, name_of(clips / "noise.mp4", input_dir))


def test_truncated_mp4(lv, clips, input_dir):
    write_clip(clips / "full.mp4", frames=30, fourcc="mp4v")
    data = (clips / "full.mp4").read_bytes()
    (clips / "cut.mp4").write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ValueError, match="could not be opened as a video: the file may be truncated"):
        load(lv, name_of(clips / "cut.mp4", input_dir))


def test_truncated_avi_returns_the_frames_that_decode(lv, clips, input_dir):
    import cv2

    written = write_clip(clips / "full.avi", frames=30)
    data = (clips / "full.avi").read_bytes()
    (clips / "cut.avi").write_bytes(data[: int(len(data) * 0.9)])
    capture = cv2.VideoCapture(str(clips / "cut.avi"))
    header_count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.release()
    images, count, _, _ = load(lv, name_of(clips / "cut.avi", input_dir))
    assert 0 < count < header_count == 30  # the header still claims 30: the decoded frames win
    assert images.shape[0] == count
    assert torch.equal(images, torch.from_numpy(np.stack([f[3:67, 1:89] for f in written[:count]])).float() / 255)


def test_video_without_frames(lv, clips, input_dir):
    write_clip(clips / "none.avi", frames=0)  # a valid AVI header, no frames
    assert (clips / "none.avi").stat().st_size > 0
    with pytest.raises(ValueError, match="No frames could be decoded from .*none.avi"):
        load(lv, name_of(clips / "none.avi", input_dir))


VIDEO_DAMAGES = ("truncated", "byte_flips", "zeroed_block", "junk_appended", "block_repeated", "block_dropped",
                 "halves_swapped")


def _damaged(rng, data: bytes, damage: str) -> bytes:
    """A video file's bytes with one seeded ``damage``."""
    cut = rng.randrange(1, len(data))
    start, size = rng.randrange(len(data)), rng.randint(16, 4096)
    if damage == "byte_flips":
        flipped = bytearray(data)
        for _ in range(rng.randint(1, 16)):  # in the container's headers half the time
            flipped[rng.randrange(min(len(data), 512) if rng.random() < 0.5 else len(data))] ^= rng.randint(1, 255)
        return bytes(flipped)
    return {"truncated": lambda: data[:cut], "zeroed_block": lambda: data[:start] + b"\0" * size + data[start + size:],
            "junk_appended": lambda: data + bytes(rng.getrandbits(8) for _ in range(size)),
            "block_repeated": lambda: data[:cut] + data[start: start + size] + data[cut:],
            "block_dropped": lambda: data[:start] + data[start + size:],
            "halves_swapped": lambda: data[cut:] + data[:cut]}[damage]()


def test_damaged_videos_are_refused_with_a_message_or_load(lv, clips, input_dir, capsys):
    """A seeded regression over damaged copies of real clips: each one loads sane frames or is refused with a
    ValueError naming the file; none hangs."""
    import faulthandler
    import random
    import sys
    import time
    from collections import Counter

    write_clip(clips / "clip.mp4", frames=30, fourcc="mp4v")
    write_clip(clips / "clip.avi", frames=12)
    write_gif(clips / "clip.gif")
    write_clip_with_sound(clips / "sound.mkv", frames=12)
    write_clip_with_sound(clips / "sound.mp4", frames=12, audio_codec="aac", video_codec="mpeg4")
    sources = sorted(p for p in clips.iterdir())
    rng, tallies, problems = random.Random(23), Counter(), []
    for index in range(21):
        source, damage = rng.choice(sources), VIDEO_DAMAGES[index % len(VIDEO_DAMAGES)]
        path = clips / f"damaged_{index:02}{source.suffix}"
        path.write_bytes(_damaged(rng, source.read_bytes(), damage))
        # A decoder that never returns ends the whole run (its stacks go to stderr: pytest -s shows them).
        faulthandler.dump_traceback_later(120, exit=True, file=sys.__stderr__)
        start, error = time.monotonic(), None
        try:
            images, count, fps, audio = load(lv, name_of(path, input_dir))
        except Exception as raised:  # noqa: BLE001 — which type it is, is what is checked
            error = raised
        finally:
            seconds = time.monotonic() - start
            faulthandler.cancel_dump_traceback_later()
        label = f"{path.name} ({damage} {source.name}): {error!r}"
        assert seconds < 20, label
        if error is None:
            assert images.ndim == 4 and images.shape[0] == count > 0 and images.shape[-1] == 3, label
            assert images.dtype == torch.float32 and 0 <= images.min() and images.max() <= 1, label
            assert fps > 0 and torch.isfinite(audio["waveform"]).all(), label
            tallies[damage, "loaded"] += 1
        elif type(error) is ValueError and path.name in str(error):
            tallies[damage, str(error).replace(name_of(path, input_dir), "<file>")[:60]] += 1
        else:
            problems.append(label)
            tallies[damage, f"raw {type(error).__name__}"] += 1
    with capsys.disabled():
        print("\ndamaged videos:")
        for (damage, outcome), n in sorted(tallies.items()):
            print(f"  {damage:15} {n:2}  {outcome}")
    # Every damaged file is refused with a message or loads (a flipped byte in an mp4's ftyp brands once made
    # PyAV's av.open raise UnicodeDecodeError on the container metadata: audio.py now replaces what it cannot decode).
    assert problems == []


def test_frame_that_cannot_be_converted(lv, video, clips, input_dir, monkeypatch):
    write_clip(clips / "clip.avi", frames=3)
    released = []

    class BrokenCapture:  # grab() succeeds but the frame cannot be retrieved
        def get(self, prop):
            return 0.0

        def grab(self):
            return True

        def retrieve(self):
            return False, None

        def release(self):
            released.append(True)

    monkeypatch.setattr(video.decode, "open_capture", lambda path, name: BrokenCapture())
    with pytest.raises(ValueError, match="No frames could be decoded"):
        load(lv, name_of(clips / "clip.avi", input_dir), skip_first_frames=1)
    assert released == [True]


def test_unknown_frame_size_checks_memory_on_the_first_frame(lv, video, clips, input_dir, monkeypatch,
                                                            progress_calls):
    write_clip(clips / "clip.avi", frames=12)
    name = name_of(clips / "clip.avi", input_dir)
    monkeypatch.setattr(video.decode, "header_size", lambda capture: (0, 0))
    need = 12 * 64 * 88 * 3 * (4 + 1)  # 12 RGB frames of 88×64: 4 bytes a value as float32, 1 as uint8
    monkeypatch.setattr(video.memory, "available_ram_bytes", lambda: need - 1)
    with pytest.raises(ValueError, match="12 frames at 88×64 need"):
        load(lv, name)
    assert progress_calls == []
    monkeypatch.setattr(video.memory, "available_ram_bytes", lambda: need)
    assert load(lv, name)[1] == 12


def test_skipping_past_the_end(lv, clips, input_dir):
    write_clip(clips / "clip.avi", frames=12)
    with pytest.raises(ValueError, match="has only 12 frames, so skip_first_frames=12 leaves nothing; "
                                         "set skip_first_frames below 12"):
        load(lv, name_of(clips / "clip.avi", input_dir), skip_first_frames=12)


def test_select_every_nth_zero(lv, clips, input_dir):
    write_clip(clips / "clip.avi", frames=3)
    name = name_of(clips / "clip.avi", input_dir)
    with pytest.raises(ValueError, match="select_every_nth must be between 1 and"):
        load(lv, name, select_every_nth=0)
    message = lv.LoadVideoFrames.VALIDATE_INPUTS(name, 0, 0, 0, 0, 0)
    assert message.startswith("select_every_nth must be between 1 and") and "1 = every frame" in message


@pytest.mark.parametrize("settings, field", [
    (dict(frame_load_cap=-1), "frame_load_cap"),
    (dict(skip_first_frames=-5), "skip_first_frames"),
    (dict(width=-8), "width"),
    (dict(height=20000), "height"),
    (dict(width=1.5), "width"),
])
def test_bad_numbers_are_named(lv, clips, input_dir, settings, field):
    write_clip(clips / "clip.avi", frames=2)
    name = name_of(clips / "clip.avi", input_dir)
    full = {**DEFAULTS, **settings}
    message = lv.LoadVideoFrames.VALIDATE_INPUTS(name, full["frame_load_cap"], full["skip_first_frames"],
                                                 full["select_every_nth"], full["width"], full["height"])
    assert isinstance(message, str) and message.startswith(field)
    with pytest.raises(ValueError, match=f"^{field}"):
        load(lv, name, **settings)


def test_unknown_resize_mode(lv, clips, input_dir):
    write_clip(clips / "clip.avi", frames=2)
    with pytest.raises(ValueError, match="resize must be one of crop, fit, stretch"):
        load(lv, name_of(clips / "clip.avi", input_dir), resize="squash")


def test_validate_accepts_good_and_linked_inputs(lv, clips, input_dir):
    write_clip(clips / "clip.avi", frames=2)
    validate = lv.LoadVideoFrames.VALIDATE_INPUTS
    assert validate(name_of(clips / "clip.avi", input_dir), 10, 2, 3, 512, 320) is True
    assert validate(None, None, None, None, None, None) is True  # linked inputs: checked at run time


def test_wrong_extension_and_folders(lv, clips, input_dir):
    (clips / "picture.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match="does not have a video file extension"):
        load(lv, name_of(clips / "picture.png", input_dir))
    (clips / "folder.mp4").mkdir()
    with pytest.raises(ValueError, match="is a folder"):
        load(lv, name_of(clips / "folder.mp4", input_dir))
    with pytest.raises(ValueError, match="No video selected"):
        load(lv, "")


def test_input_annotation_is_accepted_other_folders_refused(lv, clips, input_dir):
    write_clip(clips / "clip.avi", frames=2)
    name = name_of(clips / "clip.avi", input_dir)
    assert load(lv, name + " [input]")[1] == 2
    with pytest.raises(ValueError, match="is in ComfyUI's output folder; Load Video Frames only reads"):
        load(lv, name + " [output]")


# --- safety ---------------------------------------------------------------------------------------

def test_traversal_out_of_the_input_folder_is_refused(lv, input_dir):
    outside = input_dir.parent / f"secret-{uuid.uuid4().hex[:6]}.avi"
    write_clip(outside, frames=2)
    name = f"../{outside.name}"
    with pytest.raises(ValueError, match="points outside ComfyUI's input folder"):
        load(lv, name)
    assert "points outside" in lv.LoadVideoFrames.VALIDATE_INPUTS(name, 0, 0, 1, 0, 0)
    with pytest.raises(ValueError, match="points outside"):
        load(lv, f"clips/../../{outside.name}")


def test_traversal_that_stays_inside_is_fine(lv, clips, input_dir):
    write_clip(clips / "clip.avi", frames=2)
    assert load(lv, f"{clips.name}/../{clips.name}/clip.avi")[1] == 2


def test_absolute_paths_are_refused(lv, clips, input_dir):
    write_clip(clips / "clip.avi", frames=2)
    for path in (clips / "clip.avi", Path("/etc/passwd")):
        with pytest.raises(ValueError, match="is an absolute path"):
            load(lv, str(path))
        assert "absolute path" in lv.LoadVideoFrames.VALIDATE_INPUTS(str(path), 0, 0, 1, 0, 0)


def test_symlinks_that_escape_are_refused_inside_ones_work(lv, clips, input_dir, tmp_path):
    write_clip(tmp_path / "outside.avi", frames=2)
    (clips / "escape.avi").symlink_to(tmp_path / "outside.avi")
    with pytest.raises(ValueError, match="points outside ComfyUI's input folder"):
        load(lv, name_of(clips / "escape.avi", input_dir))
    (clips / "dir-escape").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(ValueError, match="points outside"):
        load(lv, name_of(clips / "dir-escape" / "outside.avi", input_dir))
    write_clip(clips / "real.avi", frames=3)
    (clips / "alias.avi").symlink_to(clips / "real.avi")
    assert load(lv, name_of(clips / "alias.avi", input_dir))[1] == 3


def test_picker_lists_videos_in_the_input_folder_only(lv, input_dir, tmp_path):
    tag = uuid.uuid4().hex[:6]
    write_clip(input_dir / f"{tag}-a.avi", frames=2)
    write_clip(input_dir / f"{tag}-b.MP4", frames=2, fourcc="mp4v")
    write_gif(input_dir / f"{tag}-c.gif", frames=2)
    (input_dir / f"{tag}-d.txt").write_text("not a video")
    (input_dir / f"{tag}-e.png").write_bytes(b"png")
    write_clip(tmp_path / "outside.avi", frames=2)
    (input_dir / f"{tag}-f.avi").symlink_to(tmp_path / "outside.avi")
    spec = lv.LoadVideoFrames.INPUT_TYPES()["required"]["video"]
    listed = [name for name in spec[0] if name.startswith(tag)]
    assert listed == [f"{tag}-a.avi", f"{tag}-b.MP4", f"{tag}-c.gif"]
    assert spec[0] == sorted(spec[0])
    assert spec[1]["video_upload"] is True


# --- sound ---------------------------------------------------------------------------------------

RATE, PER_FRAME = 48000, 1600  # the clips' sound: 48 kHz at 30 fps, 1600 samples a frame
PCM_STEP = 2 / 32767  # 16-bit PCM written, read back as float: within two steps


def frame_pitches(waveform: np.ndarray, frames: int, channel: int = 0) -> list[float]:
    """The pitch of each source frame's stretch of sound (its middle: tone changes sit at the edges)."""
    return [dominant_hz(waveform[channel, k * PER_FRAME + 200: (k + 1) * PER_FRAME - 200], RATE)
            for k in range(frames)]


@pytest.mark.parametrize("settings, first, count", [
    (dict(), 0, 20),
    (dict(skip_first_frames=2, select_every_nth=3, frame_load_cap=4), 2, 4),
    (dict(skip_first_frames=5, frame_load_cap=100), 5, 15),
    (dict(select_every_nth=3), 0, 7),  # frames 0, 3, …, 18 stand for 21 frames: one past the video's end
], ids=["all", "skip-nth-cap", "cap-beyond", "nth-to-the-end"])
def test_sound_spans_the_selected_frames_exactly(lv, clips, input_dir, caplog, settings, first, count):
    sound = write_clip_with_sound(clips / "tone.avi", frames=20, fps=30)
    _, frame_count, fps, audio = load(lv, name_of(clips / "tone.avi", input_dir), **settings)
    assert frame_count == count
    waveform = audio["waveform"]
    assert audio["sample_rate"] == RATE and waveform.dtype == torch.float32
    # As long as CreateVideo shows the frames: frame_count / fps seconds.
    assert waveform.shape == (1, 1, round(count / fps * RATE))
    got = waveform[0].numpy()
    start = first * PER_FRAME
    inside = min(got.shape[1], sound.shape[1] - start)
    assert np.abs(got[:, :inside] - sound[:, start: start + inside]).max() <= PCM_STEP  # to the sample
    assert not got[:, inside:].any()  # past the video's end: silence, expected, so no warning
    assert frame_pitches(got, inside // PER_FRAME) == pytest.approx(
        [tone_hz(first + k) for k in range(inside // PER_FRAME)], abs=5)
    assert "LoadVideoFrames" not in caplog.text


@pytest.mark.parametrize("channels", [1, 2])
def test_mono_and_stereo_keep_their_channels(lv, clips, input_dir, channels):
    sound = write_clip_with_sound(clips / "tone.mkv", frames=12, channels=channels)
    _, _, _, audio = load(lv, name_of(clips / "tone.mkv", input_dir), skip_first_frames=3)
    got = audio["waveform"][0].numpy()
    assert got.shape == (channels, 9 * PER_FRAME)
    # Right is written at half the left's level: swapped or mixed channels would not match.
    assert np.abs(got - sound[:, 3 * PER_FRAME:]).max() <= PCM_STEP


def test_surround_sound_is_mixed_down_to_stereo(lv, clips, input_dir):
    write_clip_with_sound(clips / "tone.mkv", frames=6, channels=6)
    _, _, _, audio = load(lv, name_of(clips / "tone.mkv", input_dir))
    got = audio["waveform"][0].numpy()
    assert got.shape == (2, 6 * PER_FRAME) and np.abs(got).max() > 0.1
    for channel in (0, 1):
        assert frame_pitches(got, 6, channel) == pytest.approx([tone_hz(k) for k in range(6)], abs=5)


def test_aac_sound_in_an_mp4_keeps_its_pitch_length_and_channels(lv, clips, input_dir, caplog):
    write_clip_with_sound(clips / "tone.mp4", frames=24, channels=2, audio_codec="aac", video_codec="mpeg4")
    _, count, fps, audio = load(lv, name_of(clips / "tone.mp4", input_dir), skip_first_frames=4,
                                select_every_nth=2, frame_load_cap=8)
    assert count == 8 and fps == pytest.approx(15.0)
    got = audio["waveform"][0].numpy()
    assert audio["sample_rate"] == RATE and got.shape == (2, 16 * PER_FRAME)  # 8 frames at 15 fps: 0.533 s
    # Source frames 4..19 in order: the sound is cut where the selected frames are, at its own pitch.
    assert frame_pitches(got, 16) == pytest.approx([tone_hz(4 + k) for k in range(16)], abs=10)
    left, right = np.sqrt((got ** 2).mean(axis=1))
    assert left / right == pytest.approx(2.0, rel=0.1)
    assert "LoadVideoFrames" not in caplog.text


def test_video_without_sound_gives_silence_as_long_as_the_frames(lv, clips, input_dir, caplog):
    write_clip(clips / "mute.avi", frames=20)
    _, count, fps, audio = load(lv, name_of(clips / "mute.avi", input_dir), skip_first_frames=2,
                                select_every_nth=3, frame_load_cap=4)
    # Silent mono at 44.1 kHz, as long as 4 frames at 10 fps: CreateVideo then writes a silent track.
    assert audio["sample_rate"] == 44100 and audio["waveform"].dtype == torch.float32
    assert audio["waveform"].shape == (1, 1, round(count / fps * 44100)) == (1, 1, 17640)
    assert not audio["waveform"].any()
    write_gif(clips / "anim.gif", frames=6, duration_ms=50)
    _, _, _, audio = load(lv, name_of(clips / "anim.gif", input_dir))
    assert audio["waveform"].shape == (1, 1, round(0.3 * 44100)) and not audio["waveform"].any()
    assert "LoadVideoFrames" not in caplog.text  # a clip without sound is normal, not a problem


def test_sound_shorter_than_the_video_is_padded_with_silence_and_warned(lv, clips, input_dir, caplog):
    sound = write_clip_with_sound(clips / "short.avi", frames=20, audio_seconds=0.4)  # 12 of the 20 frames
    name = name_of(clips / "short.avi", input_dir)
    _, _, _, audio = load(lv, name)
    got = audio["waveform"][0].numpy()
    assert got.shape == (1, 20 * PER_FRAME)  # still as long as the frames
    assert np.abs(got[:, :12 * PER_FRAME] - sound).max() <= PCM_STEP and not got[:, 12 * PER_FRAME:].any()
    assert "its sound ends 0.27 s before the selected frames do; the audio output is silent there" in caplog.text
    caplog.clear()
    _, _, _, audio = load(lv, name, skip_first_frames=14)  # all after the sound ended
    assert audio["waveform"].shape == (1, 1, 6 * PER_FRAME) and not audio["waveform"].any()
    assert "has no sound during the selected frames" in caplog.text


def test_sound_longer_than_the_video_is_cut_to_the_frames(lv, clips, input_dir, caplog):
    sound = write_clip_with_sound(clips / "long.avi", frames=12, audio_seconds=2.0)  # 60 frames' worth
    _, _, _, audio = load(lv, name_of(clips / "long.avi", input_dir), skip_first_frames=2)
    got = audio["waveform"][0].numpy()
    assert got.shape == (1, 10 * PER_FRAME)
    assert np.abs(got - sound[:, 2 * PER_FRAME: 12 * PER_FRAME]).max() <= PCM_STEP
    assert "LoadVideoFrames" not in caplog.text


def test_a_short_span_of_a_long_track_is_reached_by_seeking(lv, video, clips, input_dir, monkeypatch):
    sound = write_clip_with_sound(clips / "long.avi", frames=240, width=32, height=32)  # 8 s
    decoded, to_float = [], video.audio._to_float

    def counting(frame, *args):
        decoded.append(frame.samples)
        return to_float(frame, *args)

    monkeypatch.setattr(video.audio, "_to_float", counting)
    _, _, _, audio = load(lv, name_of(clips / "long.avi", input_dir), skip_first_frames=230, frame_load_cap=5)
    got = audio["waveform"][0].numpy()
    assert got.shape == (1, 5 * PER_FRAME)
    assert np.abs(got - sound[:, 230 * PER_FRAME: 235 * PER_FRAME]).max() <= PCM_STEP
    assert sum(decoded) < 2 * RATE  # under 2 s of the 8 s track were decoded


def test_a_seek_that_lands_inside_the_span_decodes_from_the_start(lv, video, clips, input_dir, monkeypatch):
    sound = write_clip_with_sound(clips / "long.avi", frames=60, width=32, height=32)
    decoded, to_float = [], video.audio._to_float

    def counting(frame, *args):
        decoded.append(frame.samples)
        return to_float(frame, *args)

    monkeypatch.setattr(video.audio, "_to_float", counting)
    monkeypatch.setattr(video.audio, "SEEK_MARGIN_S", -0.1)  # as a coarse index would: lands 0.1 s into the span
    _, _, _, audio = load(lv, name_of(clips / "long.avi", input_dir), skip_first_frames=45, frame_load_cap=10)
    got = audio["waveform"][0].numpy()
    assert np.abs(got - sound[:, 45 * PER_FRAME: 55 * PER_FRAME]).max() <= PCM_STEP  # nothing missing at the start
    assert sum(decoded) > 45 * PER_FRAME  # the second pass decoded from the beginning


def test_the_sound_of_a_long_span_is_checked_against_free_ram(lv, video, clips, input_dir, monkeypatch):
    write_clip_with_sound(clips / "long.avi", frames=240, width=32, height=32)
    name = name_of(clips / "long.avi", input_dir)
    # 3 frames of 32×32 need 46 kB; the 8 s they span need 1.5 MB of sound.
    monkeypatch.setattr(video.memory, "available_ram_bytes", lambda: 10**6)
    with pytest.raises(ValueError, match=r"^The sound of the selected frames \(8 s, mono at 48,000 Hz\) needs "
                                         r"1.5 MB but 1.0 MB are free; set frame_load_cap"):
        load(lv, name, select_every_nth=80)
    _, count, _, audio = load(lv, name, select_every_nth=80, frame_load_cap=1)  # 1 frame: 2.7 s of sound
    assert count == 1 and audio["waveform"].shape == (1, 1, 80 * PER_FRAME)


def test_sound_that_cannot_be_read_gives_silence_and_a_warning(lv, clips, input_dir, monkeypatch, caplog):
    import av

    write_clip_with_sound(clips / "tone.mkv", frames=6)

    def unreadable(*args, **kwargs):
        raise av.error.InvalidDataError(1094995529, "Invalid data found when processing input")

    monkeypatch.setattr(av, "open", unreadable)  # OpenCV still reads the frames
    images, count, _, audio = load(lv, name_of(clips / "tone.mkv", input_dir))
    assert count == 6 and audio["waveform"].shape == (1, 1, round(0.2 * 44100)) and not audio["waveform"].any()
    assert "the sound of 'clips-" in caplog.text and "cannot be read" in caplog.text


# --- caching, progress, cancel, node description ---------------------------------------------------

def test_is_changed_follows_size_and_mtime_without_reading(lv, clips, input_dir, monkeypatch):
    write_clip(clips / "clip.avi", frames=3)
    name = name_of(clips / "clip.avi", input_dir)
    first = lv.LoadVideoFrames.IS_CHANGED(name, frame_load_cap=0)
    assert first == lv.LoadVideoFrames.IS_CHANGED(name, frame_load_cap=5)
    original_open = builtins.open

    def no_reading(*args, **kwargs):
        raise AssertionError("IS_CHANGED must not read the video")

    monkeypatch.setattr(builtins, "open", no_reading)
    monkeypatch.setattr(io, "open", no_reading)
    assert lv.LoadVideoFrames.IS_CHANGED(name) == first
    monkeypatch.setattr(builtins, "open", original_open)
    monkeypatch.setattr(io, "open", original_open)
    write_clip(clips / "clip.avi", frames=4)
    stat = (clips / "clip.avi").stat()
    os.utime(clips / "clip.avi", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert lv.LoadVideoFrames.IS_CHANGED(name) != first
    missing = lv.LoadVideoFrames.IS_CHANGED(name_of(clips / "gone.avi", input_dir))
    assert missing != missing  # NaN: never cached; the run reports the missing file


def test_cancel_stops_decoding_within_a_frame(lv, video, clips, input_dir, monkeypatch):
    import comfy.model_management

    write_clip(clips / "clip.avi", frames=12)
    converted, to_rgb = [], video.decode.to_rgb

    def cancelled_at_frame_3(frame):
        converted.append(frame)
        if len(converted) == 3:  # the user presses cancel while frame 3 decodes
            comfy.model_management.interrupt_current_processing(True)
        return to_rgb(frame)

    monkeypatch.setattr(video.decode, "to_rgb", cancelled_at_frame_3)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            load(lv, name_of(clips / "clip.avi", input_dir))
    finally:
        comfy.model_management.interrupt_current_processing(False)
    assert len(converted) == 3


def test_node_is_described(lv):
    node = lv.LoadVideoFrames
    assert lv.NODE_CLASS_MAPPINGS == {"LoadVideoFrames": node}
    assert lv.NODE_DISPLAY_NAME_MAPPINGS == {"LoadVideoFrames": "Load Video Frames (EI²)"}
    assert node.CATEGORY == "EI²" and node.DESCRIPTION
    # The audio output was added last: workflows saved before it keep their links (by output index).
    assert node.RETURN_TYPES == ("IMAGE", "INT", "FLOAT", "AUDIO")
    assert node.RETURN_NAMES == ("frames", "frame_count", "fps", "audio")
    assert len(node.OUTPUT_TOOLTIPS) == 4 and all(node.OUTPUT_TOOLTIPS)
    inputs = node.INPUT_TYPES()["required"]
    assert list(inputs) == ["video", "frame_load_cap", "skip_first_frames", "select_every_nth", "width", "height",
                            "resize"]
    assert all(spec[1].get("tooltip") for spec in inputs.values())
    assert inputs["resize"][0] == ["crop", "fit", "stretch"]
    for name in ("width", "height", "resize"):
        assert "multiple of 8" in inputs[name][1]["tooltip"]
    assert "multiple of 8" in lv.__doc__
