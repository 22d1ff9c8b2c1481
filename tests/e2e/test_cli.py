"""``python -m ei2 edit``: against the test server, starting its own ComfyUI, and with bad input."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import cv2
import numpy as np
import pytest

from ei2.cli import main as entry
from ei2.cli import runner
from ei2.cli.runner import PACK_ROOT
from harness.clips import write_clip
from harness.graphs import stock_graph

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
def test_quick_edit_runs_the_quick_workflow_without_tuning(comfy_server, tiny_checkpoint, clip, tmp_path):
    out = tmp_path / "quick.mp4"
    result = ei2("edit", "--quick", "--server", comfy_server.url, "--video", clip, "--prompt", "a blue ball", *SMALL,
                 "--structure-reuse", "0.5", "--checkpoint", tiny_checkpoint.name, "--out", out)
    assert result.returncode == 0, result.stderr
    assert_video(out)
    lines = result.stdout.splitlines()
    assert not any("EI2OneShotTune" in line for line in lines)
    assert "  EI² Sample (structure reuse) [EI2Sample]: step 2/2" in lines


def test_a_tuned_edit_without_source_prompt_or_a_bad_reuse_is_one_line_exit_2(clip):
    result = ei2("edit", "--video", clip, "--prompt", "a blue ball")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: --source-prompt is needed to tune the model on the clip (say "
                                                  "what the clip shows now); or pass --quick for an edit without tuning."]
    result = ei2("edit", "--video", clip, *PROMPTS, "--structure-reuse", "1.5")
    assert result.returncode == 2 and "--structure-reuse must be between 0 and 1" in result.stderr


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
    from ei2.cli import edit as cli
    from ei2.cli.workflow import WorkflowError

    def broken(settings):
        raise WorkflowError("unknown node types: NoSuchNode (node 3); install the custom nodes that provide them.")

    monkeypatch.setattr(cli, "run_edit", broken)
    assert entry.main(["edit", "--video", "x.mp4", "--source-prompt", "a", "--prompt", "b"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: unknown node types: NoSuchNode (node 3); install the custom nodes that provide them."


def test_a_failed_tiny_checkpoint_build_is_an_error_line_not_a_traceback(monkeypatch, tmp_path, comfyui_path, capsys):
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


# --- Ctrl-C with --server: take our prompt off that server, and only ours --------------------------

def queued(client, kind: str) -> list[str]:
    """Prompt ids in the server's queue_running or queue_pending."""
    return [item[1] for item in client.get("/queue")[kind]]


def until(condition, what: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def endless(checkpoint: str) -> dict:
    """A prompt that runs far longer than any test: 10000 KSampler steps, stopped by interrupting it."""
    graph = stock_graph(checkpoint, frames=1)
    graph["5"]["inputs"]["steps"] = 10000
    return graph


@pytest.fixture
def someone_else(comfy_server):
    """Another client of the same server. At the end no prompt of the test may be left queued or running."""
    client = runner.ComfyClient(comfy_server.url).connect()
    client.prompts = []  # every prompt id the test queued, the CLI's included
    yield client
    for prompt_id in client.prompts:
        client.post("/queue", {"delete": [prompt_id]})
    for prompt_id in client.prompts:
        client.post("/interrupt", {"prompt_id": prompt_id})  # both tested ComfyUIs stop only that prompt
    until(lambda: not set(client.prompts) & set(queued(client, "queue_running") + queued(client, "queue_pending")),
          "the test's prompts to leave the queue", timeout=120)
    client.close()


def edit_args(url, clip, checkpoint, out, *more):
    return ["edit", "--server", url, "--video", str(clip), *PROMPTS, *SMALL, "--checkpoint", checkpoint,
            "--out", str(out), *more]


@pytest.mark.slow
def test_ctrl_c_with_server_drops_our_pending_prompt_and_leaves_theirs_running(
        comfy_server, tiny_checkpoint, clip, tmp_path, someone_else, monkeypatch, capsys):
    theirs = someone_else.queue(endless(tiny_checkpoint.name))
    someone_else.prompts.append(theirs)
    until(lambda: theirs in queued(someone_else, "queue_running"), "their prompt to start")

    def ctrl_c(client, prompt_id, timeout=None):  # Ctrl-C while the CLI waits for its prompt
        someone_else.prompts.append(prompt_id)
        assert prompt_id in queued(client, "queue_pending")  # behind theirs
        raise KeyboardInterrupt

    monkeypatch.setattr(runner.ComfyClient, "wait", ctrl_c)
    assert entry.main(edit_args(comfy_server.url, clip, tiny_checkpoint.name, tmp_path / "never.mp4")) == 130
    monkeypatch.undo()
    assert capsys.readouterr().err.strip() == "interrupted"
    ours = someone_else.prompts[1]
    assert queued(someone_else, "queue_pending") == [] and queued(someone_else, "queue_running") == [theirs]
    assert someone_else.get(f"/history/{ours}") == {}  # it never ran

    # Their prompt was not interrupted: it still takes steps after a queue change made only now. /ws messages
    # come in the order they were sent, and a step reports progress only after checking for an interrupt.
    mark = len(someone_else.messages)
    someone_else.prompts.append(someone_else.queue(stock_graph(tiny_checkpoint.name, frames=1)))

    def stepped_since_then():
        later = someone_else.messages[mark:]
        changed = [i for i, m in enumerate(later)
                   if m["type"] == "status" and m["data"]["status"]["exec_info"]["queue_remaining"] == 2]
        return changed and any(m["type"] == "progress" and m["data"]["prompt_id"] == theirs
                               for m in later[changed[0]:])

    until(stepped_since_then, "another step of their prompt", timeout=120)


@pytest.mark.slow
def test_ctrl_c_with_server_interrupts_our_running_prompt_and_not_the_next(
        comfy_server, tiny_checkpoint, clip, tmp_path, someone_else, monkeypatch, capsys):
    def ctrl_c(client, prompt_id, timeout=None):
        someone_else.prompts.append(prompt_id)
        until(lambda: prompt_id in queued(client, "queue_running"), "our prompt to start")
        someone_else.prompts.append(someone_else.queue(stock_graph(tiny_checkpoint.name, frames=1)))  # waits behind ours
        raise KeyboardInterrupt

    monkeypatch.setattr(runner.ComfyClient, "wait", ctrl_c)
    # 10000 tuning steps: ours runs until it is interrupted.
    args = edit_args(comfy_server.url, clip, tiny_checkpoint.name, tmp_path / "never.mp4", "--tune-steps", "10000")
    assert entry.main(args) == 130
    monkeypatch.undo()
    assert capsys.readouterr().err.strip() == "interrupted"
    ours, theirs = someone_else.prompts
    with pytest.raises(runner.PromptFailed, match="execution_interrupted"):
        someone_else.wait(ours, timeout=120)
    assert someone_else.wait(theirs, timeout=300)["status"]["status_str"] == "success"


@pytest.mark.slow
def test_edit_starts_its_own_comfyui_where_symlinks_are_refused(comfyui_path, tiny_checkpoint, clip, tmp_path,
                                                                  monkeypatch, capsys):
    def refused(*args, **kwargs):  # what Windows says without developer mode or admin rights
        raise OSError("[WinError 1314] A required privilege is not held by the client")

    monkeypatch.setattr(os, "symlink", refused)
    monkeypatch.setenv("COMFYUI_PATH", str(comfyui_path))
    out = tmp_path / "own.mp4"
    # The pack (copied into custom_nodes) loads, and the checkpoint file (hard-linked) is found.
    assert entry.main(["edit", "--video", str(clip), *PROMPTS, *SMALL, "--checkpoint", str(tiny_checkpoint),
                       "--out", str(out)]) == 0, capsys.readouterr().err
    assert_video(out)
