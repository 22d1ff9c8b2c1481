"""Import a real ComfyUI in-process, the way ComfyUI itself starts.

Which ComfyUI (``find_comfyui``) is decided in ``ei2.cli.runner``, shared with the CLI.
"""
from __future__ import annotations

import asyncio
import inspect
import sys
from pathlib import Path
from types import SimpleNamespace

from ei2.cli.runner import CACHE_DIR, PACK_ROOT, PINNED_VERSION, find_comfyui  # noqa: F401  (re-exported)


def import_comfyui(path: Path, output_dir: Path, input_dir: Path, temp_dir: Path, cpu: bool = True) -> SimpleNamespace:
    """Import ComfyUI into this process with ``--cpu --use-pytorch-cross-attention`` (``cpu=False``: neither).

    Returns the imported modules. Only the first call imports; ComfyUI keeps global state, so a
    process holds one ComfyUI.
    """
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    import comfy.options

    comfy.options.enable_args_parsing(False)
    from comfy.cli_args import args

    # Must be set before comfy.model_management / attention are imported: they read args once.
    args.cpu = cpu
    args.use_pytorch_cross_attention = cpu
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
