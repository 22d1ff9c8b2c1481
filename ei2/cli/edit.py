"""``python -m ei2 edit`` / ``demo``: run the bundled ``ei2_video_edit.json`` (``--quick``: ``ei2_quick_edit.json``)
on a real ComfyUI, headlessly.

Without ``--server`` a ComfyUI is started as a subprocess in a temporary folder (found like
``ei2.cli.runner.find_comfyui``); with it, the clip is uploaded to that server and the result downloaded.
Users' mistakes end with one line on stderr and exit code 2; a node failing in ComfyUI, with the
node, its message and exit code 1.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
from dataclasses import dataclass
from pathlib import Path

from . import runner
from .workflow import combo_choices, find_nodes, set_inputs, to_api

WORKFLOW = runner.PACK_ROOT / "workflows" / "ei2_video_edit.json"
QUICK_WORKFLOW = runner.PACK_ROOT / "workflows" / "ei2_quick_edit.json"  # no tuning
DEFAULT_CHECKPOINT = "v1-5-pruned-emaonly.safetensors"
TINY_CHECKPOINT = "ei2-tiny-sd15.safetensors"
DEMO_DIR = runner.CACHE_DIR / "demo"
# Nodes of the bundled workflow the CLI has no use for: the loss preview and the saved tuned weights.
DROPPED = ("PreviewImage", "EI2SaveTuned")


class UsageError(Exception):
    """A problem the user fixes by changing an argument or setting; printed as one line, exit 2."""


@dataclass
class EditSettings:
    video: Path
    source_prompt: str | None
    prompt: str
    checkpoint: str | None = None
    frames: int = 16
    size: int = 512
    steps: int = 50
    tune_steps: int = 500
    cfg: float = 7.5
    structure_reuse: float | None = None  # None: EI2Sample's default
    quick: bool = False  # ei2_quick_edit.json: no tuning, no source prompt
    out: Path | None = None
    server: str | None = None


# --- progress ----------------------------------------------------------------------------------

class Progress:
    """Prints one line per node and per step from ComfyUI's /ws messages (steps overwrite on a terminal)."""

    def __init__(self, graph: dict, stream=sys.stdout):
        self.titles = {key: f"{node['_meta']['title']} [{node['class_type']}]" for key, node in graph.items()}
        self.stream = stream
        self.live = stream.isatty()
        self.prompt_id = None

    def __call__(self, message: dict) -> None:
        data = message.get("data") or {}
        if self.prompt_id is None or data.get("prompt_id") != self.prompt_id:
            return
        kind = message["type"]
        if kind == "executing" and data.get("node") is not None:
            self._line(f"▶ {self.titles.get(data['node'], data['node'])}")
        elif kind == "progress":
            text = f"  {self.titles.get(data.get('node'), data.get('node'))}: step {data['value']}/{data['max']}"
            if self.live:
                self.stream.write("\r" + text + ("\n" if data["value"] >= data["max"] else ""))
                self.stream.flush()
            else:
                self._line(text)
        elif kind == "execution_cached" and data.get("nodes"):
            self._line(f"  cached: {', '.join(self.titles.get(n, n) for n in data['nodes'])}")

    def _line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)


# --- the edit ------------------------------------------------------------------------------------

def build_graph(object_info: dict, settings: EditSettings, video_name: str, checkpoint_name: str) -> dict:
    graph = to_api(json.loads((QUICK_WORKFLOW if settings.quick else WORKFLOW).read_text()), object_info)
    for class_type in DROPPED:
        for node in find_nodes(graph, class_type):
            del graph[next(key for key, value in graph.items() if value is node)]
    set_inputs(graph, "CheckpointLoaderSimple", ckpt_name=checkpoint_name)
    set_inputs(graph, "LoadVideoFrames", video=video_name, frame_load_cap=settings.frames,
               width=settings.size, height=settings.size)
    if not settings.quick:
        set_inputs(graph, "CLIPTextEncode", "Source prompt", text=settings.source_prompt)
        set_inputs(graph, "EI2OneShotTune", steps=settings.tune_steps)
    set_inputs(graph, "CLIPTextEncode", "Edit prompt", text=settings.prompt)
    set_inputs(graph, "EI2DDIMInvert", steps=settings.steps)
    set_inputs(graph, "EI2Sample", steps=settings.steps, cfg=settings.cfg)
    if settings.structure_reuse is not None:
        set_inputs(graph, "EI2Sample", structure_reuse=settings.structure_reuse)
    return graph


def check_settings(settings: EditSettings) -> None:
    if not settings.video.is_file():
        raise UsageError(f"--video {settings.video}: no such file; give the path of a video (mp4, webm, mov, mkv, avi, gif).")
    if not settings.quick and not settings.source_prompt:
        raise UsageError("--source-prompt is needed to tune the model on the clip (say what the clip shows now); "
                         "or pass --quick for an edit without tuning.")
    if settings.structure_reuse is not None and not 0 <= settings.structure_reuse <= 1:
        raise UsageError(f"--structure-reuse must be between 0 and 1 (0: off); got {settings.structure_reuse}.")
    for name, value, low in (("--frames", settings.frames, 1), ("--size", settings.size, 8),
                             ("--steps", settings.steps, 1), ("--tune-steps", settings.tune_steps, 0)):
        if value < low:
            raise UsageError(f"{name} must be at least {low}; got {value}.")


def local_checkpoint(server: runner.ComfyServer, checkpoint: str | None) -> str:
    """The checkpoint name the started ComfyUI will list; a file path is linked into its models folder."""
    given = Path(checkpoint).expanduser() if checkpoint else None
    if given is not None and given.is_file():
        runner.link_or_copy(given.resolve(), server.checkpoints_dir / given.name)
        return given.name
    name = checkpoint or DEFAULT_CHECKPOINT
    if (server.comfyui / "models" / "checkpoints" / name).is_file():
        return name
    if checkpoint:
        raise UsageError(f"--checkpoint {checkpoint}: no such file, and no checkpoint of that name in "
                         f"{server.comfyui / 'models' / 'checkpoints'}; give the path of an SD 1.x .safetensors file.")
    raise UsageError(f"no checkpoint: pass --checkpoint /path/to/sd15.safetensors (an SD 1.x checkpoint) or put "
                     f"{DEFAULT_CHECKPOINT} into {server.comfyui / 'models' / 'checkpoints'}.")


def remote_checkpoint(object_info: dict, checkpoint: str | None, url: str) -> str:
    available = combo_choices(object_info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"])
    name = Path(checkpoint).name if checkpoint else DEFAULT_CHECKPOINT
    if name not in available:
        raise UsageError(f"the server {url} has no checkpoint '{name}' (it has: {', '.join(available) or 'none'}); "
                         "put it into that ComfyUI's models/checkpoints or pass --checkpoint NAME of one it has.")
    return name


def run_edit(settings: EditSettings, log=print) -> Path:
    """Runs the edit; returns the written video. Raises UsageError, runner.PromptFailed, runner.ComfyUINotFound."""
    check_settings(settings)
    out = settings.out or Path(f"{settings.video.stem}_ei2.mp4")
    if settings.server:
        client = runner.ComfyClient(settings.server)
        try:
            object_info = client.get("/object_info")
        except (urllib.error.URLError, OSError) as error:
            raise UsageError(f"--server {settings.server}: no ComfyUI answers there ({error}); start it or fix the URL.") from None
        if "EI2InflateUNet" not in object_info:
            raise UsageError(f"the server {settings.server} does not have the EI² nodes; install this pack in its "
                             "custom_nodes and restart it.")
        checkpoint = remote_checkpoint(object_info, settings.checkpoint, settings.server)
        return _run(client.connect(), object_info, settings, checkpoint, out, log)

    comfyui = runner.find_comfyui()
    with tempfile.TemporaryDirectory(prefix="ei2-comfyui-") as root:
        server = runner.ComfyServer(comfyui, Path(root), cpu=not _has_accelerator())
        checkpoint = local_checkpoint(server, settings.checkpoint)
        log(f"Starting ComfyUI from {comfyui} …")
        try:
            server.start()
            return _run(server, server.get("/object_info"), settings, checkpoint, out, log)
        finally:
            server.stop()


def _run(client: runner.ComfyClient, object_info: dict, settings: EditSettings, checkpoint: str, out: Path, log) -> Path:
    log(f"Uploading {settings.video} to {client.url} …")
    graph = build_graph(object_info, settings, client.upload(settings.video), checkpoint)
    progress = Progress(graph)
    client.on_message = progress
    started = time.monotonic()
    prompt_id = client.queue(graph)
    progress.prompt_id = prompt_id
    for message in client.messages_for(prompt_id):  # anything that arrived before the id was known
        progress(message)
    try:
        entry = client.wait(prompt_id, timeout=24 * 3600)
    except KeyboardInterrupt:
        if settings.server:  # a server started here is stopped anyway; one that keeps running must not keep our prompt
            try:
                client.cancel(prompt_id)
            except (OSError, runner.PromptFailed) as error:
                print(f"could not cancel prompt {prompt_id} on {client.url}: {error}", file=sys.stderr)
        raise
    finally:
        client.close()
    save_id = next(key for key, node in graph.items() if node["class_type"] == "SaveVideo")
    items = entry["outputs"].get(save_id, {}).get("images", [])
    if not items:
        raise runner.PromptFailed(f"SaveVideo wrote no file (outputs: {json.dumps(entry['outputs'])})")
    client.download(items[0], out)
    log(f"Wrote {out} in {time.monotonic() - started:.0f} s.")
    return out


def _has_accelerator() -> bool:
    import torch  # only here: ``import ei2`` must stay instant

    return torch.cuda.is_available() or (hasattr(torch.backends, "mps") and torch.backends.mps.is_available())


def describe_failure(error: runner.PromptFailed) -> str:
    """One line per failing node: its id, type and message."""
    lines = []
    for problem in error.problems:
        if problem.get("type") == "execution_error":
            lines.append(f"error: node {problem.get('node_id')} ({problem.get('node_type')}) failed: "
                         f"{problem.get('exception_message', '').strip()}")
        elif problem.get("type") == "execution_interrupted":
            lines.append(f"error: interrupted at node {problem.get('node_id')} ({problem.get('node_type')})")
        for node_id, node in (problem.get("node_errors") or {}).items():
            for item in node.get("errors", []):
                lines.append(f"error: node {node_id} ({node.get('class_type')}): {item.get('message')}: "
                             f"{item.get('details')}")
        if "error" in problem and isinstance(problem["error"], dict) and not problem.get("node_errors"):
            lines.append(f"error: {problem['error'].get('message')}: {problem['error'].get('details')}")
    return "\n".join(lines) or f"error: {error}"


# --- the demo ------------------------------------------------------------------------------------

def sample_clip(path: Path = DEMO_DIR / "sample.mp4", frames: int = 16, size: int = 256) -> Path:
    """A coloured square moving across a gradient (mp4v), written once."""
    if path.is_file():
        return path
    import cv2
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    background = np.stack([np.tile(ramp, (size, 1)), np.tile(ramp[:, None], (1, size)),
                           np.full((size, size), 120.0, np.float32)], axis=-1).astype(np.uint8)  # BGR
    tmp = path.with_suffix(".partial.mp4")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), 8.0, (size, size))
    side = size // 4
    for index in range(frames):
        frame = background.copy()
        left = int(index * (size - side) / max(frames - 1, 1))
        top = size // 2 - side // 2
        frame[top: top + side, left: left + side] = (40, 40, 230)  # red, in BGR
        writer.write(frame)
    writer.release()
    tmp.replace(path)
    return path


def tiny_checkpoint(comfyui: Path, path: Path = runner.CACHE_DIR / TINY_CHECKPOINT) -> Path:
    """The tiny random SD1.5-shaped checkpoint, built once in a subprocess that imports ComfyUI's modules."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(runner.PACK_ROOT), os.environ.get("PYTHONPATH", "")])}
        try:
            subprocess.run([sys.executable, "-m", "ei2.cli.tiny_checkpoint", str(comfyui), str(path)],
                           check=True, cwd=runner.PACK_ROOT, env=env)
        except subprocess.CalledProcessError as error:
            raise RuntimeError(f"building the tiny demo checkpoint failed (exit {error.returncode}, output above); "
                               "pass --checkpoint /path/to/an/sd15.safetensors instead.") from None
    return path
