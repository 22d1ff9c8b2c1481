"""Every bundled workflow, converted by ei2.cli.workflow from the live /object_info, runs on the real server."""
from __future__ import annotations

import json
import uuid

import cv2
import numpy as np
import pytest

from ei2.cli.runner import PACK_ROOT
from ei2.cli.workflow import find_nodes, set_inputs, to_api
from harness.clips import write_clip

pytestmark = pytest.mark.slow

FRAMES = 4


def load(name: str) -> dict:
    return json.loads((PACK_ROOT / "workflows" / name).read_text())


@pytest.fixture(scope="module")
def object_info(comfy_server):
    return comfy_server.get("/object_info")


@pytest.fixture(scope="module")
def clip(comfy_server, tmp_path_factory):
    path = tmp_path_factory.mktemp("clips") / f"wf-{uuid.uuid4().hex[:6]}.mp4"
    write_clip(path, frames=8, width=90, height=70, fps=12, fourcc="mp4v")
    return comfy_server.upload(path)


def small(graph: dict, checkpoint: str, clip: str) -> dict:
    """The workflow's settings shrunk so a CPU runs it in seconds."""
    set_inputs(graph, "CheckpointLoaderSimple", ckpt_name=checkpoint)
    set_inputs(graph, "LoadVideoFrames", video=clip, frame_load_cap=FRAMES, width=64, height=64)
    if find_nodes(graph, "EI2OneShotTune"):
        set_inputs(graph, "EI2OneShotTune", steps=2)
    set_inputs(graph, "EI2DDIMInvert", steps=2)
    set_inputs(graph, "EI2Sample", steps=2)
    return graph


def saved_videos(server, graph: dict, entry: dict) -> list:
    ids = [key for key, node in graph.items() if node["class_type"] == "SaveVideo"]
    return [server.output_dir / item.get("subfolder", "") / item["filename"]
            for key in ids for item in entry["outputs"][key]["images"]]


def read_frames(path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(frame.astype(np.float32))


def sound_seconds(path) -> float:
    """Seconds of decoded sound in the file's first audio track (it must have one)."""
    import av

    with av.open(str(path)) as container:
        assert container.streams.audio, f"{path} has no sound: LoadVideoFrames' audio must reach CreateVideo"
        frames = list(container.decode(container.streams.audio[0]))
        return sum(frame.samples for frame in frames) / frames[0].sample_rate


def assert_edited_video(path, count=FRAMES) -> None:
    frames = read_frames(path)
    assert len(frames) == count, path
    assert all(frame.shape == (64, 64, 3) and np.isfinite(frame).all() and frame.std() > 1.0 for frame in frames)
    # The clip's sound (silence here: the test clip has none), as long as the frames at the clip's 12 fps;
    # AAC rounds up to whole 1024-sample frames.
    assert count / 12 <= sound_seconds(path) <= count / 12 + 0.05, path


@pytest.fixture(scope="module")
def edited(comfy_server, object_info, tiny_checkpoint, clip):
    graph = small(to_api(load("ei2_video_edit.json"), object_info), tiny_checkpoint.name, clip)
    prefix = f"ei2_tuned/wf_{uuid.uuid4().hex[:6]}"
    set_inputs(graph, "EI2SaveTuned", filename_prefix=prefix)
    return graph, comfy_server.run(graph, timeout=600), prefix


def test_the_template_browser_lists_the_bundled_workflows(comfy_server):
    assert sorted(comfy_server.get("/workflow_templates")["ei2-comfyui"]) == \
        ["ei2_quick_edit", "ei2_reuse_tuned", "ei2_video_edit", "ei2_vs_tuneavideo"]
    assert comfy_server.get("/api/workflow_templates/ei2-comfyui/ei2_video_edit.json") == load("ei2_video_edit.json")


def test_video_edit_workflow_writes_the_edited_video_and_the_tuned_weights(comfy_server, edited):
    graph, entry, prefix = edited
    [video] = saved_videos(comfy_server, graph, entry)
    assert video.suffix == ".mp4"
    assert_edited_video(video)
    assert list(comfy_server.output_dir.glob(f"{prefix}_*.safetensors"))


def test_reuse_tuned_workflow_edits_with_saved_weights(comfy_server, object_info, tiny_checkpoint, clip, edited):
    _, _, prefix = edited
    name = next(path.name for path in comfy_server.output_dir.glob(f"{prefix}_*.safetensors"))
    listed = comfy_server.get("/object_info/EI2LoadTuned")["EI2LoadTuned"]["input"]["required"]["tuned_weights"][0]
    assert name in listed  # what a user picks in the dropdown
    graph = small(to_api(load("ei2_reuse_tuned.json"), object_info), tiny_checkpoint.name, clip)
    set_inputs(graph, "EI2LoadTuned", tuned_weights=name)
    [video] = saved_videos(comfy_server, graph, comfy_server.run(graph, timeout=600))
    assert_edited_video(video)


def test_comparison_workflow_writes_both_edits(comfy_server, object_info, tiny_checkpoint, clip):
    graph = small(to_api(load("ei2_vs_tuneavideo.json"), object_info), tiny_checkpoint.name, clip)
    inflated = sorted((node["inputs"]["attention_type"], node["inputs"]["temporal_type"])
                      for node in find_nodes(graph, "EI2InflateUNet"))
    assert inflated == [("ffam", "stam"), ("sparse_causal", "vanilla")]
    videos = saved_videos(comfy_server, graph, comfy_server.run(graph, timeout=900))
    assert len(videos) == 2
    for video in videos:
        assert_edited_video(video)


def test_quick_edit_workflow_reuses_the_structure_without_tuning(comfy_server, object_info, tiny_checkpoint, clip):
    graph = small(to_api(load("ei2_quick_edit.json"), object_info), tiny_checkpoint.name, clip)
    assert not find_nodes(graph, "EI2OneShotTune")
    [sampler] = find_nodes(graph, "EI2Sample")
    assert sampler["inputs"]["structure_reuse"] == 0.8 and sampler["inputs"]["model"][0] == \
        next(key for key, node in graph.items() if node["class_type"] == "EI2InflateUNet")
    [video] = saved_videos(comfy_server, graph, comfy_server.run(graph, timeout=600))
    assert_edited_video(video)


def test_structure_reuse_runs_in_context_windows_on_the_server(comfy_server, object_info, tiny_checkpoint, clip):
    """Six frames in windows of four (frames 0-3, 2-5), half the steps reusing the source's structure."""
    graph = small(to_api(load("ei2_quick_edit.json"), object_info), tiny_checkpoint.name, clip)
    set_inputs(graph, "LoadVideoFrames", frame_load_cap=6)
    set_inputs(graph, "EI2DDIMInvert", steps=4, context_frames=4, context_overlap=2)
    set_inputs(graph, "EI2Sample", steps=4, context_frames=4, context_overlap=2, structure_reuse=0.5)
    [video] = saved_videos(comfy_server, graph, comfy_server.run(graph, timeout=600))
    assert_edited_video(video, count=6)
