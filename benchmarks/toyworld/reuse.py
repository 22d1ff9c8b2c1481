"""Structure reuse (``ei2.structure_reuse``) on the toy model: where it keeps what the pack exchanges in SD.

- the decoder's self-attention queries and keys: ``up2`` and ``up1``'s transformer blocks (SD: every
  transformer block of ``output_blocks``);
- the residual branch of the middle ResBlock of the coarsest decoder level with attention: ``up2``'s only
  ResBlock (SD 1.x: ``output_blocks[4]``, Plug-and-Play's choice).
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

from ei2.structure_reuse import StructureReuse

from .model import ToyT2I

DECODER = ("up2", "up1")
FEATURES = ("queries_keys", "residual")


def _exchanger(reuse: StructureReuse, prefix: str):
    return lambda key, value: reuse.exchange(f"{prefix}.{key}", value)


@contextmanager
def reusing_structure(video: ToyT2I, reuse: StructureReuse, features=FEATURES):
    """``video`` exchanges ``features`` through ``reuse`` while the context lasts (then it is as it was)."""
    blocks = video.transformer_blocks()
    layers = [(blocks[name].attn1, name) for name in DECODER] if "queries_keys" in features else []
    layers += [(video.up2[0], "up2.resblock")] if "residual" in features else []
    for layer, name in layers:
        layer.exchange = _exchanger(reuse, name)
    try:
        yield
    finally:
        for layer, _ in layers:
            layer.exchange = None


def reuse_denoiser(video: ToyT2I, edit, reuse: StructureReuse, source_context: torch.Tensor):
    """``edit(x, sigma)`` (the guided edit denoiser) preceded by a source pass with ``source_context`` where it reuses."""

    def denoise(x, sigma):
        def source_pass(step):
            source = reuse.source_latent(step, x)
            return video.denoise(source, sigma[:len(source)], source_context, len(source))

        return reuse.denoise(sigma, source_pass, lambda: edit(x, sigma))

    return denoise
