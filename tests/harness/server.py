"""A real ComfyUI server in a subprocess on 127.0.0.1, with this pack loaded as a custom node."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from .comfyui import PACK_ROOT

PACK_DIR_NAME = "ei2-comfyui"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PromptFailed(AssertionError):
    """The server reported an execution error (or rejected the graph) for a prompt."""


class ComfyServer:
    """Start with :meth:`start`, always :meth:`stop` (the fixture does it, also on failure)."""

    def __init__(self, comfyui: Path, root: Path):
        self.comfyui = comfyui
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.client_id = uuid.uuid4().hex
        self.log_path = root / "server.log"
        self.messages: list[dict] = []  # every /ws JSON message, in arrival order
        self._process: subprocess.Popen | None = None
        self._ws = None
        for name in ("input", "output", "user", "temp", "custom_nodes", "models/checkpoints"):
            (root / name).mkdir(parents=True, exist_ok=True)
        # ComfyUI names a custom node module after its folder; give the pack a stable one.
        link = root / "custom_nodes" / PACK_DIR_NAME
        if not link.exists():
            link.symlink_to(PACK_ROOT, target_is_directory=True)

    @property
    def input_dir(self) -> Path:
        return self.root / "input"

    @property
    def output_dir(self) -> Path:
        return self.root / "output"

    @property
    def checkpoints_dir(self) -> Path:
        return self.root / "models" / "checkpoints"

    def start(self, timeout: float = 180.0) -> "ComfyServer":
        config = self.root / "extra_model_paths.yaml"
        config.write_text(
            "ei2_tests:\n"
            f"    base_path: {self.root}\n"
            "    checkpoints: models/checkpoints\n"
            "    custom_nodes: custom_nodes\n"
        )
        command = [
            sys.executable, "main.py", "--cpu", "--use-pytorch-cross-attention",
            "--listen", "127.0.0.1", "--port", str(self.port), "--disable-auto-launch",
            "--input-directory", str(self.input_dir), "--output-directory", str(self.output_dir),
            "--temp-directory", str(self.root / "temp"), "--user-directory", str(self.root / "user"),
            "--database-url", f"sqlite:///{self.root / 'user' / 'comfyui.db'}",
            "--extra-model-paths-config", str(config),
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._log = open(self.log_path, "w")
        self._process = subprocess.Popen(command, cwd=self.comfyui, stdout=self._log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self._process.returncode}:\n{self.log_tail()}")
            try:
                self.get("/system_stats")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        else:
            raise RuntimeError(f"ComfyUI did not answer within {timeout:.0f} s:\n{self.log_tail()}")
        self._connect_ws()
        return self

    def stop(self) -> None:
        if self._ws is not None:
            self._ws.close()
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if getattr(self, "_log", None):
            self._log.close()

    def log_tail(self, chars: int = 12000) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-chars:]

    # --- HTTP -------------------------------------------------------------------------------
    def get(self, route: str):
        with urllib.request.urlopen(self.url + route, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def post(self, route: str, payload: dict):
        request = urllib.request.Request(self.url + route, data=json.dumps(payload).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            raise PromptFailed(f"POST {route} -> {error.code}: {error.read().decode(errors='replace')}") from None

    def upload(self, path, subfolder: str = "") -> str:
        """Upload a file to the input folder like the UI's upload button (multipart POST /upload/image).

        Returns the name to put into a graph: the stored file name (the server renames a clash to
        ``name (1).ext``), prefixed with ``subfolder/`` when one is given.
        """
        import mimetypes

        path = Path(path)
        boundary = uuid.uuid4().hex
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        fields = [("type", "input")] + ([("subfolder", subfolder)] if subfolder else [])
        body = b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
            for name, value in fields
        )
        body += (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{path.name}"\r\n'
                 f"Content-Type: {content_type}\r\n\r\n").encode() + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        request = urllib.request.Request(self.url + "/upload/image", data=body,
                                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise AssertionError(f"upload of {path.name} -> {error.code}: {error.read().decode(errors='replace')}") from None
        return f"{answer['subfolder']}/{answer['name']}" if answer.get("subfolder") else answer["name"]

    # --- /ws --------------------------------------------------------------------------------
    def _connect_ws(self) -> None:
        import websocket

        self._ws = websocket.create_connection(f"ws://127.0.0.1:{self.port}/ws?clientId={self.client_id}", timeout=30)
        self._ws.settimeout(None)  # a long node may keep the socket quiet for minutes

        def receive():
            while True:
                try:
                    frame = self._ws.recv()
                except Exception:  # closed on stop
                    return
                if not frame:  # the server closed the socket
                    return
                if isinstance(frame, str):  # binary frames are preview images
                    self.messages.append(json.loads(frame))

        threading.Thread(target=receive, daemon=True).start()

    def messages_for(self, prompt_id: str, kind: str | None = None) -> list[dict]:
        return [m for m in list(self.messages)
                if m.get("data", {}).get("prompt_id") == prompt_id and (kind is None or m["type"] == kind)]

    # --- prompts ----------------------------------------------------------------------------
    def queue(self, graph: dict) -> str:
        """Post an API-format graph to /prompt; returns the prompt id."""
        answer = self.post("/prompt", {"prompt": graph, "client_id": self.client_id})
        if answer.get("node_errors"):
            raise PromptFailed(f"graph rejected: {json.dumps(answer['node_errors'], indent=1)}")
        return answer["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 300.0) -> dict:
        """Poll /history/<id> until the prompt finished; raise PromptFailed if it failed or was interrupted.

        Also waits (briefly) for the prompt's closing /ws message, so that every progress message
        of the prompt has been collected when this returns.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"ComfyUI died while running {prompt_id}:\n{self.log_tail()}")
            entry = self.get(f"/history/{prompt_id}").get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None:
                self._await_closing_message(prompt_id)
                status = entry["status"]
                if status.get("status_str") == "error":
                    problems = [{"type": kind, **m} for kind, m in status.get("messages", [])
                                if kind in ("execution_error", "execution_interrupted")]
                    raise PromptFailed(f"prompt {prompt_id} failed: {json.dumps(problems, indent=1)}")
                return entry
            time.sleep(0.25)
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout:.0f} s")

    def _await_closing_message(self, prompt_id: str, timeout: float = 10.0) -> None:
        closing = ("execution_success", "execution_error", "execution_interrupted")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(m["type"] in closing for m in self.messages_for(prompt_id)):
                return
            time.sleep(0.05)

    def interrupt(self) -> None:
        """What the UI's cancel button sends."""
        self.post("/interrupt", {})

    def run(self, graph: dict, timeout: float = 300.0) -> dict:
        return self.wait(self.queue(graph), timeout)

    def output_files(self, entry: dict, key: str = "images") -> list[Path]:
        """Files a finished prompt wrote, from its history entry's outputs."""
        files = []
        for output in entry["outputs"].values():
            for item in output.get(key, []):
                base = self.output_dir if item.get("type", "output") == "output" else self.root / item["type"]
                files.append(base / item.get("subfolder", "") / item["filename"])
        return files
