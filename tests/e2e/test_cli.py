"""``python -m ei2 edit``: against the test server, starting its own ComfyUI, and with bad input."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid

import cv2
import numpy as np
import pytest

from ei2.cli.runner import PACK_ROOT
from harness.clips import write_clip

SMALL = ["--frames", "2", "--size", "64", "--steps", "2", "--tune-steps", "1"]
PROMPTS = ["--source-prompt", "a red square", "--prompt", "a blue ball"]


def ei2(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "ei2", *map(str, args)], cwd=PACK_ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / f"cli-{uuid.uuid4().hex[:6]}.mp4"
    write_clip(path, frames=6, width=90, height=70, fps=12, fourcc="mp4v")
    return path


def frames_of(path) -> list[np.ndarray]:
    capture, frames = cv2.VideoCapture(str(path)), []
    while (read := capture.read())[0]:
        frames.append(read[1].astype(np.float32))
    return frames


def assert_video(path, count=2):
    frames = frames_of(path)
    assert len(frames) == count and all(f.shape == (64, 64, 3) and np.isfinite(f).all() and f.std() > 1.0 for f in frames)


def test_missing_video_is_one_line_exit_2(tmp_path):
    result = ei2("edit", "--video", tmp_path / "nope.mp4", *PROMPTS)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: --video {tmp_path / 'nope.mp4'}: no such file; give the "
                                                  "path of a video (mp4, webm, mov, mkv, avi, gif)."]


def test_comfyui_not_found_says_what_to_set(clip, tmp_path):
    result = ei2("edit", "--video", clip, *PROMPTS, env={"COMFYUI_PATH": str(tmp_path)})
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: COMFYUI_PATH={tmp_path} is not a ComfyUI folder")


def test_missing_checkpoint_says_what_to_pass(clip, comfyui_path, tmp_path):
    result = ei2("edit", "--video", clip, *PROMPTS, "--checkpoint", tmp_path / "missing.safetensors",
                 env={"COMFYUI_PATH": str(comfyui_path)})
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "--checkpoint" in line and "no such file" in line


@pytest.mark.slow
def test_edit_on_a_running_server_streams_progress_and_downloads(comfy_server, tiny_checkpoint, clip, tmp_path):
    out = tmp_path / "edited.mp4"
    result = ei2("edit", "--server", comfy_server.url, "--video", clip, *PROMPTS, *SMALL,
                 "--checkpoint", tiny_checkpoint.name, "--out", out)
    assert result.returncode == 0, result.stderr
    assert_video(out)
    lines = result.stdout.splitlines()
    assert "▶ EI² One-Shot Tune [EI2OneShotTune]" in lines
    assert "  EI² One-Shot Tune [EI2OneShotTune]: step 1/1" in lines
    assert "  EI² Sample (DDIM) [EI2Sample]: step 2/2" in lines


@pytest.mark.slow
def test_unknown_checkpoint_on_the_server_is_exit_2(comfy_server, clip):
    result = ei2("edit", "--server", comfy_server.url, "--video", clip, *PROMPTS, "--checkpoint", "nope.safetensors")
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "has no checkpoint 'nope.safetensors'" in line


@pytest.mark.slow
def test_a_node_failing_on_the_server_is_printed_and_exit_1(comfy_server, tiny_checkpoint, tmp_path):
    fake = tmp_path / f"notes-{uuid.uuid4().hex[:6]}.mp4"
    fake.write_text("these are my notes, not a video\n")
    result = ei2("edit", "--server", comfy_server.url, "--video", fake, *PROMPTS, *SMALL,
                 "--checkpoint", tiny_checkpoint.name, "--out", tmp_path / "never.mp4")
    assert result.returncode == 1
    assert "error: node 2 (LoadVideoFrames) failed:" in result.stderr
    assert "contains text, not video data" in result.stderr
    assert not (tmp_path / "never.mp4").exists()


@pytest.mark.slow
def test_edit_starts_its_own_comfyui_with_a_checkpoint_file(comfyui_path, tiny_checkpoint, clip, tmp_path):
    out = tmp_path / "own.mp4"
    result = ei2("edit", "--video", clip, *PROMPTS, *SMALL, "--checkpoint", tiny_checkpoint, "--out", out,
                 env={"COMFYUI_PATH": str(comfyui_path)})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Starting ComfyUI from" in result.stdout
    assert_video(out)


def test_a_workflow_the_converter_cannot_read_is_one_line_exit_2(monkeypatch, capsys):
    from ei2.cli import main as entry
    from ei2.cli import edit as cli
    from ei2.cli.workflow import WorkflowError

    def broken(settings):
        raise WorkflowError("unknown node types: NoSuchNode (node 3); install the custom nodes that provide them.")

    monkeypatch.setattr(cli, "run_edit", broken)
    assert entry.main(["edit", "--video", "x.mp4", "--source-prompt", "a", "--prompt", "b"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: unknown node types: NoSuchNode (node 3); install the custom nodes that provide them."


def test_a_failed_tiny_checkpoint_build_is_an_error_line_not_a_traceback(monkeypatch, tmp_path, comfyui_path, capsys):
    from ei2.cli import main as entry
    from ei2.cli import edit as cli

    def failing(command, **kwargs):
        raise subprocess.CalledProcessError(3, command)

    monkeypatch.setattr(cli.subprocess, "run", failing)
    with pytest.raises(RuntimeError, match=r"building the tiny demo checkpoint failed \(exit 3.*pass --checkpoint"):
        cli.tiny_checkpoint(comfyui_path, tmp_path / "tiny.safetensors")
    real = cli.tiny_checkpoint  # the demo builds it at a fresh path, with the build failing
    monkeypatch.setattr(cli, "tiny_checkpoint", lambda comfyui: real(comfyui, tmp_path / "tiny.safetensors"))
    assert entry.main(["demo"]) == 1
    err = capsys.readouterr().err
    assert "error: building the tiny demo checkpoint failed" in err and "Traceback" not in err
