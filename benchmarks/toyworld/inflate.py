"""Inflate and tune the toy model with the node pack's own inflation policy (``ei2.inflation``).

The options, the temporal modules (built in block order from the seed), the train sets, the query
deltas, the refusal when nothing would train and the settle after tuning all come from
``ei2.inflation``, exactly what ``nodes/adapter`` applies to SD; this module only knows where the toy
model keeps them:
- ``attn1.frame_options``: self-attention runs ``ei2.ffam.frame_attention`` (``per_frame``: the image
  model's own attention, as the pack adds no patch for it);
- ``temporal`` and ``temporal_placement`` of every transformer block;
- query deltas: while tuning, each ``attn1``/``attn2`` ``to_q`` of a training copy computes with
  ``weight + delta`` (the pack's weight patch); :func:`tuned_model` adds the deltas into the weights of
  a copy of the untuned model, as the pack returns a clone and drops its trainer.
The input model is never changed: inflation returns a deep copy.
"""
from __future__ import annotations

import copy

import torch
from torch.nn.utils import parametrize

from ei2.inflation import InflateOptions, TuningParameters, build_temporal_modules, finish_tuning, tuning_parameters

from .model import ToyT2I

def inflate(model: ToyT2I, options: InflateOptions) -> ToyT2I:
    """A frame-aware copy of ``model``; its image weights are frozen, the new temporal modules are fp32."""
    video = copy.deepcopy(model).requires_grad_(False)
    blocks = video.transformer_blocks()
    modules = build_temporal_modules({name: (b.attn1.to_q.in_features, b.attn1.heads) for name, b in blocks.items()},
                                     options)
    for name, block in blocks.items():
        block.attn1.frame_options = options.frame_attention_options()
        block.temporal = modules[name] if name in modules else None
        block.temporal_placement = options.temporal_placement
    return video


def temporal_modules(video: ToyT2I) -> torch.nn.ModuleDict:
    return torch.nn.ModuleDict({name: b.temporal for name, b in video.transformer_blocks().items() if b.temporal is not None})


def query_projections(video: ToyT2I) -> dict[str, torch.nn.Linear]:
    """The ``attn1``/``attn2`` query projections, keyed by their weight's name (``<block>.attn1.to_q.weight``)."""
    return {f"{name}.{attn}.to_q.weight": getattr(block, attn).to_q
            for name, block in video.transformer_blocks().items() for attn in ("attn1", "attn2")}


def query_weights(video: ToyT2I) -> dict[str, torch.Tensor]:
    """The query weights the pack tunes, by name."""
    return {key: projection.weight for key, projection in query_projections(video).items()}


class _PlusDelta(torch.nn.Module):
    def __init__(self, delta: torch.Tensor):
        super().__init__()
        self.delta = delta

    def forward(self, weight):
        return weight + self.delta.to(weight.dtype)


def start_tuning(video: ToyT2I, train: str) -> TuningParameters:
    """The pack's train set ``train`` of ``video`` (a training copy), with its query deltas wired into the ``to_q`` layers."""
    tuning = tuning_parameters(temporal_modules(video), query_weights(video), train)
    for p in tuning.frozen:
        p.requires_grad_(False)
    projections = query_projections(video)
    for key, delta in tuning.deltas.items():
        parametrize.register_parametrization(projections[key], "weight", _PlusDelta(delta), unsafe=True)
    return tuning


def tuned_model(inflated: ToyT2I, trainer: ToyT2I, tuning: TuningParameters) -> ToyT2I:
    """A copy of the untuned ``inflated`` model with what tuning has changed in ``trainer`` so far.

    The temporal modules' state is copied, the query deltas are added into the weights (the pack's weight
    patches), and the temporal modules are settled. ``trainer`` is left as it is, so tuning can go on.
    """
    tuned = copy.deepcopy(inflated)
    temporal_modules(tuned).load_state_dict(temporal_modules(trainer).state_dict())
    with torch.no_grad():
        weights = query_weights(tuned)
        for key, delta in tuning.deltas.items():
            weights[key] += delta
    finish_tuning(temporal_modules(tuned), tuning)
    return tuned.requires_grad_(False).eval()
