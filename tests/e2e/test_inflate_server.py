"""EI2InflateUNet on a real ComfyUI server, driven through /prompt like the UI does."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from harness.checkpoint import write_checkpoint
from harness.graphs import inflate_node, stock_graph
from harness.server import PromptFailed

pytestmark = pytest.mark.slow


def test_inflated_model_samples_eight_frames_on_the_server(comfy_server, tiny_checkpoint):
    graph = stock_graph(tiny_checkpoint.name, frames=8)
    graph["8"] = inflate_node(["1", 0])
    graph["5"]["inputs"]["model"] = ["8", 0]
    graph["7"]["inputs"]["filename_prefix"] = "inflated"
    entry = comfy_server.run(graph)
    files = comfy_server.output_files(entry)
    assert len(files) == 8
    frames = [np.asarray(Image.open(path), dtype=np.float32) for path in files]
    assert all(frame.shape == (64, 64, 3) and np.isfinite(frame).all() and frame.std() > 1.0 for frame in frames)


def test_node_error_is_reported_and_the_server_runs_the_next_prompt(comfy_server, tiny_checkpoint):
    graph = stock_graph(tiny_checkpoint.name, frames=2)
    graph["8"] = inflate_node(["1", 0])
    graph["9"] = inflate_node(["8", 0])  # inflating twice is refused by the node at run time
    graph["5"]["inputs"]["model"] = ["9", 0]
    with pytest.raises(PromptFailed, match="already inflated"):
        comfy_server.run(graph)
    assert len(comfy_server.output_files(comfy_server.run(stock_graph(tiny_checkpoint.name, frames=2)))) == 2


@pytest.mark.parametrize("kind, in_channels", [("inpainting", 9), ("instructpix2pix", 8)])
def test_sd1_models_with_image_inputs_are_refused_with_the_sd1_message(comfy_server, tiny_checkpoint, kind, in_channels):
    """SD 1.x inpainting and InstructPix2Pix checkpoints load as SD 1.x (ComfyUI: SD15 / its subclass) but need an
    image input the edit does not give: EI2InflateUNet refuses them before anything runs."""
    name = f"tiny-{kind}.safetensors"
    write_checkpoint(comfy_server.checkpoints_dir / name, in_channels=in_channels)
    graph = stock_graph(name, frames=2)
    graph["8"] = inflate_node(["1", 0])
    graph["5"]["inputs"]["model"] = ["8", 0]
    with pytest.raises(PromptFailed, match=f"text-to-image models only; this MODEL is .* with {in_channels} input "
                                           "channels \\(an inpainting or InstructPix2Pix model\\)"):
        comfy_server.run(graph)
    assert len(comfy_server.output_files(comfy_server.run(stock_graph(tiny_checkpoint.name, frames=2)))) == 2
