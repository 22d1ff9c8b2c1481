"""The whole edit on a real ComfyUI server: inflate → tune → invert → sample → decode, progress, cancel."""
from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.clips import write_clip
from harness.graphs import edit_graph
from harness.server import ComfyServer, PromptFailed

pytestmark = pytest.mark.slow

HOLD_NODE = Path(__file__).with_name("hold_sampling_node.py")


@pytest.fixture(scope="module")
def comfy_server(comfyui_path, tiny_checkpoint, tmp_path_factory):
    """This module's own server: the shared one plus a test-only node that holds sampling until a cancel."""
    server = ComfyServer(comfyui_path, tmp_path_factory.mktemp("comfy-server-hold"))
    (server.checkpoints_dir / tiny_checkpoint.name).symlink_to(tiny_checkpoint)
    shutil.copy(HOLD_NODE, server.root / "custom_nodes" / HOLD_NODE.name)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def uploaded_clip(comfy_server, tmp_path_factory):
    clip = tmp_path_factory.mktemp("clips") / f"edit-{uuid.uuid4().hex[:6]}.mp4"
    write_clip(clip, frames=8, width=90, height=70, fps=30, fourcc="mp4v")
    return comfy_server.upload(clip)


def test_full_edit_writes_finite_frames_and_reports_progress(comfy_server, tiny_checkpoint, uploaded_clip):
    prompt_id = comfy_server.queue(edit_graph(tiny_checkpoint.name, uploaded_clip, frames=4, tune_steps=2, steps=4))
    entry = comfy_server.wait(prompt_id, timeout=600)
    files = comfy_server.output_files(entry)
    assert len(files) == 4
    frames = [np.asarray(Image.open(path), dtype=np.float32) for path in files]
    assert all(frame.shape == (64, 64, 3) and np.isfinite(frame).all() and frame.std() > 1.0 for frame in frames)
    progress = {}
    for message in comfy_server.messages_for(prompt_id, "progress"):
        progress.setdefault(message["data"]["node"], []).append((message["data"]["value"], message["data"]["max"]))
    # EI2OneShotTune, EI2DDIMInvert, EI2Sample reach their totals (newer ComfyUI throttles the steps between).
    assert progress["8"][-1] == (2, 2) and progress["9"][-1] == (4, 4) and progress["10"][-1] == (4, 4)


def test_cancel_during_sampling_leaves_the_server_ready(comfy_server, tiny_checkpoint, uploaded_clip):
    steps, hold_at = 20, 3
    graph = edit_graph(tiny_checkpoint.name, uploaded_clip, frames=4, tune_steps=1, steps=steps, invert_steps=2,
                       prefix="cancelled")
    # EI2Sample's UNet stops at its 3rd call until the cancel arrives: the cancel always lands mid-sampling.
    graph["13"] = {"class_type": "EI2TestHoldSampling", "inputs": {"model": ["8", 0], "hold_at_call": hold_at,
                                                                   "timeout": 120.0}}
    graph["10"]["inputs"]["model"] = ["13", 0]
    prompt_id = comfy_server.queue(graph)
    deadline = time.monotonic() + 300
    while not any(m["data"]["node"] == "10" for m in comfy_server.messages_for(prompt_id, "progress")):
        assert time.monotonic() < deadline, "EI2Sample never started"
        time.sleep(0.1)
    comfy_server.interrupt()
    with pytest.raises(PromptFailed, match="execution_interrupted"):  # not the hold's own timeout error
        comfy_server.wait(prompt_id, timeout=120)
    sampled = [m["data"]["value"] for m in comfy_server.messages_for(prompt_id, "progress") if m["data"]["node"] == "10"]
    assert max(sampled) < hold_at  # stopped at the held step: no step after the cancel ran
    entry = comfy_server.run(edit_graph(tiny_checkpoint.name, uploaded_clip, frames=2, tune_steps=1, steps=2,
                                        prefix="after_cancel"))
    assert len(comfy_server.output_files(entry)) == 2


def test_a_48_frame_clip_is_edited_in_16_frame_windows(comfy_server, tiny_checkpoint, tmp_path):
    clip = tmp_path / f"long-{uuid.uuid4().hex[:6]}.mp4"
    write_clip(clip, frames=48, width=64, height=64, fps=24, fourcc="mp4v")
    graph = edit_graph(tiny_checkpoint.name, comfy_server.upload(clip), frames=48, tune_steps=2, steps=2,
                       prefix="windowed")
    graph["8"]["inputs"].update(frames_per_step=16, frame_stride=1)
    for node in ("9", "10"):
        graph[node]["inputs"].update(context_frames=16, context_overlap=4)
    prompt_id = comfy_server.queue(graph)
    windowed = [np.asarray(Image.open(path), dtype=np.float32) for path in comfy_server.output_files(
        comfy_server.wait(prompt_id, timeout=900))]
    assert len(windowed) == 48
    assert all(frame.shape == (64, 64, 3) and np.isfinite(frame).all() and frame.std() > 1.0 for frame in windowed)
    progress = [m["data"]["value"] for m in comfy_server.messages_for(prompt_id, "progress") if m["data"]["node"] == "10"]
    assert progress[-1] == 2
    # The same clip in one 48-frame window (tuning is cached: the same tuned model) differs: windows were used.
    for node in ("9", "10"):
        graph[node]["inputs"].update(context_frames=48)
    graph["12"]["inputs"]["filename_prefix"] = "one_window"
    whole = [np.asarray(Image.open(path), dtype=np.float32) for path in comfy_server.output_files(
        comfy_server.run(graph))]
    assert len(whole) == 48 and any(np.abs(a - b).max() > 0 for a, b in zip(windowed, whole))
