"""LoadVideoFrames on a real ComfyUI server: upload, picker list, a VAE round trip, refusals at validation, and its
sound through CreateVideo and SaveVideo."""
from __future__ import annotations

import uuid

import av
import numpy as np
import pytest
from PIL import Image

from harness.clips import decode_index, dominant_hz, read_sound, tone_hz, write_clip, write_clip_with_sound
from harness.graphs import sound_graph
from harness.server import PromptFailed

pytestmark = pytest.mark.slow


def load_node(video: str, **settings) -> dict:
    inputs = dict(video=video, frame_load_cap=0, skip_first_frames=0, select_every_nth=1, width=0, height=0,
                  resize="crop")
    return {"class_type": "LoadVideoFrames", "inputs": {**inputs, **settings}}


def test_uploaded_video_is_listed_and_runs_through_the_vae(comfy_server, tiny_checkpoint, tmp_path):
    clip = tmp_path / f"clip-{uuid.uuid4().hex[:6]}.mp4"
    write_clip(clip, frames=10, width=90, height=70, fps=30, fourcc="mp4v")
    name = comfy_server.upload(clip)
    assert name == clip.name and (comfy_server.input_dir / name).read_bytes() == clip.read_bytes()

    info = comfy_server.get("/object_info/LoadVideoFrames")
    assert "LoadVideoFrames" in info, "LoadVideoFrames is not registered: nodes/__init__.py must list load_video"
    info = info["LoadVideoFrames"]
    assert info["display_name"] == "Load Video Frames (EI²)" and info["category"] == "EI²"
    options, config = info["input"]["required"]["video"]
    assert name in options and config["video_upload"] is True

    graph = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": tiny_checkpoint.name}},
        "2": load_node(name, skip_first_frames=1, select_every_nth=2, width=64, height=48),
        "3": {"class_type": "VAEEncode", "inputs": {"pixels": ["2", 0], "vae": ["1", 2]}},
        "4": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["1", 2]}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "loadvideo_vae"}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "loadvideo_frames"}},
    }
    prompt_id = comfy_server.queue(graph)
    entry = comfy_server.wait(prompt_id)
    vae_files = [path for path in comfy_server.output_files(entry) if path.name.startswith("loadvideo_vae")]
    frame_files = sorted(path for path in comfy_server.output_files(entry) if path.name.startswith("loadvideo_frames"))
    assert len(vae_files) == 5 and len(frame_files) == 5  # frames 1, 3, 5, 7, 9
    for path in vae_files + frame_files:
        with Image.open(path) as image:
            assert image.size == (64, 48) and image.mode == "RGB"
    frames = [np.asarray(Image.open(path), dtype=np.float32) for path in frame_files]
    assert [decode_index(frame[36, 16]) for frame in frames] == [1, 3, 5, 7, 9]
    assert all(np.abs(frame[4, 4] - (255, 0, 0)).max() <= 16 for frame in frames)  # RGB order survives
    progress = [m["data"] for m in comfy_server.messages_for(prompt_id, "progress") if m["data"]["node"] == "2"]
    assert progress and progress[-1]["value"] == progress[-1]["max"] == 10


def test_upload_into_a_subfolder_loads(comfy_server, tmp_path):
    clip = tmp_path / f"sub-{uuid.uuid4().hex[:6]}.avi"
    write_clip(clip, frames=3, width=40, height=24)
    name = comfy_server.upload(clip, subfolder="ei2clips")
    assert name == f"ei2clips/{clip.name}"
    entry = comfy_server.run({
        "1": load_node(name),
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "loadvideo_sub"}},
    })
    files = comfy_server.output_files(entry)
    assert len(files) == 3 and all(Image.open(path).size == (40, 24) for path in files)


def test_paths_outside_the_input_folder_are_refused_at_validation(comfy_server):
    secret = comfy_server.root / f"secret-{uuid.uuid4().hex[:6]}.avi"
    write_clip(secret, frames=2)
    graph = {
        "1": load_node(f"../{secret.name}"),
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "loadvideo_secret"}},
    }
    with pytest.raises(PromptFailed, match="points outside ComfyUI's input folder"):
        comfy_server.queue(graph)
    graph["1"] = load_node(str(secret))
    with pytest.raises(PromptFailed, match="is an absolute path"):
        comfy_server.queue(graph)
    graph["1"] = load_node("missing-video.mp4", select_every_nth=0)
    with pytest.raises(PromptFailed, match="Video file not found"):
        comfy_server.queue(graph)


# --- sound: LoadVideoFrames → CreateVideo → SaveVideo, the saved file decoded back ---------------------

RATE, PER_FRAME = 48000, 1600  # the clips' sound: 48 kHz at 30 fps


def save_with_sound(server, video: str, **settings):
    """Run the clip through LoadVideoFrames → CreateVideo (frames, fps, audio) → SaveVideo; the saved file."""
    info = server.get("/object_info/SaveVideo")["SaveVideo"]
    entry = server.run(sound_graph(video, info, f"sound_{uuid.uuid4().hex[:6]}", **settings))
    [saved] = server.output_files(entry)
    return saved


def test_the_sound_of_the_selected_frames_survives_create_video_and_save_video(comfy_server, tmp_path):
    clip = tmp_path / f"tone-{uuid.uuid4().hex[:6]}.mp4"
    write_clip_with_sound(clip, frames=60, channels=2, audio_codec="aac", video_codec="mpeg4")  # 2 s, AAC stereo
    saved = save_with_sound(comfy_server, comfy_server.upload(clip), skip_first_frames=6, select_every_nth=2,
                            frame_load_cap=20)
    assert saved.suffix == ".mp4"
    # Frames 6, 8, …, 44 at 15 fps: 1.33 s of video, and the sound of source frames 6..45, as long.
    with av.open(str(saved)) as container:
        frames = sum(1 for _ in container.decode(video=0))
        assert float(container.streams.video[0].average_rate) == pytest.approx(15.0)
    assert frames == 20
    sound, rate = read_sound(saved)
    assert rate == RATE and sound.shape[0] == 2
    assert sound.shape[1] / rate == pytest.approx(20 / 15, abs=0.025)  # AAC writes whole 1024-sample frames
    pitches = [dominant_hz(sound[0, k * PER_FRAME + 200: (k + 1) * PER_FRAME - 200], rate) for k in range(40)]
    assert pitches == pytest.approx([tone_hz(6 + k) for k in range(40)], abs=10)
    left, right = np.sqrt((sound ** 2).mean(axis=1))
    assert left / right == pytest.approx(2.0, rel=0.1)  # left and right stay apart


def test_a_clip_without_sound_is_saved_with_a_silent_track(comfy_server, tmp_path):
    clip = tmp_path / f"mute-{uuid.uuid4().hex[:6]}.mp4"
    write_clip(clip, frames=12, width=90, height=70, fps=24, fourcc="mp4v")
    saved = save_with_sound(comfy_server, comfy_server.upload(clip), frame_load_cap=9)
    sound, rate = read_sound(saved)
    assert rate == 44100  # mono: ComfyUI 0.3.75's writer stores it as a stereo AAC track, newer ones as mono
    assert sound.shape[1] / rate == pytest.approx(9 / 24, abs=0.025) and np.abs(sound).max() < 1e-4
