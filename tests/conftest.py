"""Fixtures every test layer shares: a real ComfyUI in-process, a real ComfyUI server, a tiny checkpoint."""
from __future__ import annotations

import pytest

from harness.checkpoint import write_checkpoint
from harness.comfyui import find_comfyui, import_comfyui, load_pack
from harness.server import ComfyServer

CHECKPOINT_NAME = "ei2-tiny-sd15.safetensors"


@pytest.fixture(scope="session")
def comfyui_path():
    return find_comfyui()


@pytest.fixture(scope="session")
def comfyui(comfyui_path, tmp_path_factory):
    """ComfyUI imported into this process with --cpu (modules: nodes, comfy, folder_paths, args)."""
    root = tmp_path_factory.mktemp("comfy-inprocess")
    dirs = [root / name for name in ("output", "input", "temp")]
    for folder in dirs:
        folder.mkdir()
    return import_comfyui(comfyui_path, *dirs)


@pytest.fixture(scope="session")
def pack(comfyui):
    """This pack, loaded by ComfyUI's own custom-node loader."""
    return load_pack(comfyui.nodes)


@pytest.fixture(scope="session")
def tiny_checkpoint(comfyui, tmp_path_factory):
    """Path of the tiny SD1.5-shaped checkpoint, also registered with the in-process ComfyUI."""
    folder = tmp_path_factory.mktemp("checkpoints")
    path = write_checkpoint(folder / CHECKPOINT_NAME)
    comfyui.folder_paths.add_model_folder_path("checkpoints", str(folder))
    return path


@pytest.fixture(scope="session")
def comfy_server(comfyui_path, tiny_checkpoint, tmp_path_factory):
    """A real ComfyUI server with this pack and the tiny checkpoint; stopped at session end."""
    server = ComfyServer(comfyui_path, tmp_path_factory.mktemp("comfy-server"))
    (server.checkpoints_dir / CHECKPOINT_NAME).symlink_to(tiny_checkpoint)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Show the server's log under any failing test that used the server."""
    outcome = yield
    report = outcome.get_result()
    server = getattr(item, "funcargs", {}).get("comfy_server")
    if report.failed and isinstance(server, ComfyServer):
        report.sections.append(("ComfyUI server log (tail)", server.log_tail()))
