"""The harness itself: ComfyUI discovery, the tiny checkpoint, and a stock graph on a real server."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from ei2.cli.runner import link_or_copy
from harness.comfyui import PACK_ROOT, find_comfyui
from harness.graphs import stock_graph
from harness.server import ComfyServer


def make_fake_comfyui(root):
    (root / "comfy").mkdir(parents=True)
    (root / "main.py").write_text("")
    (root / "nodes.py").write_text("")
    return root


def test_comfyui_path_env_wins(tmp_path):
    fake = make_fake_comfyui(tmp_path / "ComfyUI")
    assert find_comfyui(env=str(fake)) == fake.resolve()


def test_comfyui_path_env_must_be_a_comfyui(tmp_path):
    with pytest.raises(RuntimeError, match="not a ComfyUI folder"):
        find_comfyui(env=str(tmp_path))


def test_pack_inside_custom_nodes_uses_that_comfyui(tmp_path):
    fake = make_fake_comfyui(tmp_path / "ComfyUI")
    pack_root = fake / "custom_nodes" / "ei2-comfyui"
    pack_root.mkdir(parents=True)
    assert find_comfyui(pack_root=pack_root, env="") == fake


def test_default_is_the_pinned_comfyui():
    path = find_comfyui(pack_root=PACK_ROOT, env="")
    assert "__version__ = \"0.3.75\"" in (path / "comfyui_version.py").read_text()
    assert not (path / "extra_model_paths.yaml").exists()  # horde's paths must not leak in


def refused(*args, **kwargs):  # what Windows says to a symlink without developer mode or admin rights
    raise OSError("[WinError 1314] A required privilege is not held by the client")


def test_without_symlinks_the_server_gets_a_copy_of_the_pack(comfyui_path, tmp_path, monkeypatch):
    monkeypatch.setattr(os, "symlink", refused)
    ComfyServer(comfyui_path, tmp_path)
    pack = tmp_path / "custom_nodes" / "ei2-comfyui"
    assert pack.is_dir() and not pack.is_symlink()
    for name in ("__init__.py", "nodes/__init__.py", "ei2/cli/runner.py", "workflows/ei2_video_edit.json"):
        assert (pack / name).read_bytes() == (PACK_ROOT / name).read_bytes(), name
    left_out = [path for path in pack.rglob("*")
                if {".git", ".venv", "tests", "__pycache__"} & set(path.relative_to(pack).parts)]
    assert left_out == []


def test_without_symlinks_a_file_is_hard_linked_else_copied(tmp_path, monkeypatch):
    source = tmp_path / "model.safetensors"
    source.write_bytes(b"weights")
    monkeypatch.setattr(os, "symlink", refused)
    link_or_copy(source, tmp_path / "linked.safetensors")
    assert (tmp_path / "linked.safetensors").samefile(source)
    monkeypatch.setattr(os, "link", refused)  # e.g. another volume
    link_or_copy(source, tmp_path / "copied.safetensors")
    copied = tmp_path / "copied.safetensors"
    assert copied.read_bytes() == b"weights" and not copied.is_symlink() and not copied.samefile(source)


def test_tiny_checkpoint_loads_as_sd15_with_finite_outputs(comfyui, tiny_checkpoint):
    nodes = comfyui.nodes
    with torch.inference_mode():
        model, clip, vae = nodes.CheckpointLoaderSimple().load_checkpoint(tiny_checkpoint.name)
        assert type(model.model.model_config).__name__ == "SD15"
        assert model.model.diffusion_model.model_channels == 320
        positive = nodes.CLIPTextEncode().encode(clip, "a red car on a road")[0]
        negative = nodes.CLIPTextEncode().encode(clip, "")[0]
        assert positive[0][0].shape == (1, 77, 768) and torch.isfinite(positive[0][0]).all()
        latent = nodes.EmptyLatentImage().generate(64, 64, 2)[0]
        sampled = nodes.KSampler().sample(model, 0, 2, 7.0, "ddim", "ddim_uniform", positive, negative, latent)[0]
        images = nodes.VAEDecode().decode(vae, sampled)[0]
    assert sampled["samples"].shape == (2, 4, 8, 8) and torch.isfinite(sampled["samples"]).all()
    assert images.shape == (2, 64, 64, 3) and torch.isfinite(images).all() and images.std() > 0.01


def test_pack_loads_in_process(pack, comfyui):
    assert set(pack.NODE_CLASS_MAPPINGS) <= set(comfyui.nodes.NODE_CLASS_MAPPINGS)


@pytest.mark.slow
def test_stock_graph_runs_on_the_server(comfy_server, tiny_checkpoint):
    prompt_id = comfy_server.queue(stock_graph(tiny_checkpoint.name, frames=8))
    entry = comfy_server.wait(prompt_id)
    files = comfy_server.output_files(entry)
    assert len(files) == 8
    for path in files:
        pixels = np.asarray(Image.open(path), dtype=np.float32)
        assert pixels.shape == (64, 64, 3)
        assert np.isfinite(pixels).all() and pixels.std() > 1.0
    progress = comfy_server.messages_for(prompt_id, "progress")
    values = [m["data"]["value"] for m in progress if m["data"]["node"] == "5"]
    assert values[-1] == 4 and values == sorted(set(values))  # to the total; throttled in newer ComfyUI
    assert comfy_server.messages_for(prompt_id, "execution_success")


@pytest.mark.slow
def test_pack_loads_in_the_server_without_import_failure(comfy_server, pack):
    # ComfyUI's start-up summary has one line per custom node folder: "<t> seconds[ (IMPORT FAILED)]: <path>".
    lines = [line for line in comfy_server.log_tail(chars=10**6).splitlines()
             if line.rstrip().endswith("custom_nodes/ei2-comfyui")]
    assert lines, "the pack is missing from ComfyUI's import summary"
    assert not any("IMPORT FAILED" in line for line in lines), lines
    object_info = comfy_server.get("/object_info")
    assert set(pack.NODE_CLASS_MAPPINGS) <= set(object_info)
    assert "KSampler" in object_info
