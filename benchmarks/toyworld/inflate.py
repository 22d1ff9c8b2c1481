"""Inflate the toy model into a video model exactly as the node pack inflates SD (``nodes/adapter/patching.py``).

- Self-attention (``attn1``) of every transformer block becomes ``ei2.ffam.frame_attention`` with
  the chosen ``attention_type`` (``per_frame`` keeps the image model's own attention, as the pack
  adds no patch for it).
- Every transformer block gets ``make_temporal(temporal_type, …)`` after its feed-forward
  (``temporal_placement="after_feedforward"``), built in block order under ``seed``.
- Tuning trains what the pack trains (``ei2.tuning.TRAIN_SETS``): the temporal modules' trainable
  parameters and/or the ``attn1.to_q`` and ``attn2.to_q`` weights.
The input model is never changed: inflation returns a deep copy.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from ei2.ffam import ATTENTION_TYPES, COARSE_TYPES
from ei2.spectral import settle
from ei2.stam import CENTERING_TYPES, MAPPING_TYPES
from ei2.temporal import TEMPORAL_TYPES, make_temporal
from ei2.tuning import TRAIN_SETS

from .model import ToyT2I


@dataclass(frozen=True)
class Inflation:
    attention_type: str = "ffam"
    temporal_type: str = "stam"
    coarse_stride: int = 2
    coarse_type: str = "avg"
    centering_type: str = "frames"
    mapping_type: str = "spectral"
    seed: int = 0

    def __post_init__(self):
        for name, allowed in (("attention_type", ATTENTION_TYPES), ("temporal_type", TEMPORAL_TYPES),
                              ("coarse_type", COARSE_TYPES), ("centering_type", CENTERING_TYPES),
                              ("mapping_type", MAPPING_TYPES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r} is not supported; choose one of {', '.join(allowed)}")
        if self.coarse_stride < 1:
            raise ValueError(f"coarse_stride must be at least 1, got {self.coarse_stride}")


def inflate(model: ToyT2I, inflation: Inflation) -> ToyT2I:
    """A frame-aware copy of ``model``; its image weights are frozen, the new temporal modules are fp32."""
    video = copy.deepcopy(model).requires_grad_(False)
    stam_options = {}
    if inflation.temporal_type == "stam":
        stam_options = dict(centering_type=inflation.centering_type, mapping_type=inflation.mapping_type)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(inflation.seed)
        for block in video.transformer_blocks().values():
            if inflation.attention_type != "per_frame":
                block.attn1.frame_options = dict(attention_type=inflation.attention_type,
                                                 coarse_stride=inflation.coarse_stride,
                                                 coarse_type=inflation.coarse_type)
            channels = block.attn1.to_q.in_features
            block.temporal = make_temporal(inflation.temporal_type, channels, block.attn1.heads, **stam_options)
    return video


def trainable_parameters(video: ToyT2I, train: str = "temporal_and_queries") -> list[torch.nn.Parameter]:
    """The parameters one-shot tuning updates, with ``requires_grad`` switched on for them alone."""
    if train not in TRAIN_SETS:
        raise ValueError(f"train={train!r} is not supported; choose one of {', '.join(TRAIN_SETS)}")
    video.requires_grad_(False)
    params = []
    for block in video.transformer_blocks().values():
        if train in ("temporal_and_queries", "temporal") and block.temporal is not None:
            # Vanilla's LayerNorm stays frozen (Tune-A-Video trains attn_temp only).
            params += [p for name, p in block.temporal.named_parameters() if not name.startswith("norm.")]
        if train in ("temporal_and_queries", "queries"):
            params += [block.attn1.to_q.weight, block.attn2.to_q.weight]
    if not params:
        raise ValueError(f"nothing to tune: train={train!r} but the model has no temporal modules")
    for p in params:
        p.requires_grad_(True)
    return params


def settle_temporal(video: ToyT2I) -> None:
    """After tuning: bring STAM's spectral clips to their bound before sampling (as the pack does)."""
    for block in video.transformer_blocks().values():
        if block.temporal is not None:
            settle(block.temporal)
