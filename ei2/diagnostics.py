"""Covariate-shift probe: per-block hidden-state statistics of a model, and the shift between two models.

The paper's thesis (EI², §3) is that temporal modules added to an image model shift the
distribution of its hidden features, which erodes the edit prompt's effect, and that STAM keeps
that shift small. This module measures it, with nothing but torch:

* :func:`record_statistics` hooks the modules the caller names, runs ``run_fn()`` (any number of
  forward passes) and returns, per module, the per-channel mean and (population) variance of its
  output over every other dimension (batch, tokens, frames …), accumulated in float64;
* :func:`shift` compares two such records block by block:

  - ``mean_shift`` = mean over channels of ``|μ_other − μ_ref| / σ_ref`` (how many reference
    standard deviations the channel means moved);
  - ``var_ratio`` = geometric mean over channels of ``var_other / var_ref`` (1 = no change; a
    per-channel scale ``a`` gives ``a²``);

  and aggregates over blocks: the mean and max of ``mean_shift``, and the geometric mean of
  ``var_ratio`` (with ``max |log var_ratio|`` as the worst block).

Which modules to hook (e.g. each transformer block of a UNet) is the caller's business.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping

import torch

EPS = 1e-12  # variances at or below this count as zero


@dataclass
class Stats:
    """Per-channel statistics of one module's output."""

    count: int
    mean: torch.Tensor  # (C,) float64
    var: torch.Tensor  # (C,) float64, population variance

    @property
    def std(self) -> torch.Tensor:
        return self.var.sqrt()


class _Accumulator:
    def __init__(self, channel_dim: int):
        self.channel_dim = channel_dim
        self.count = 0
        self.total = None
        self.total_sq = None

    def __call__(self, module, inputs, output):
        if isinstance(output, (tuple, list)):
            output = output[0]
        x = output.detach().to(torch.float64).movedim(self.channel_dim, -1)
        x = x.reshape(-1, x.shape[-1])
        total, total_sq = x.sum(0), (x * x).sum(0)
        if self.total is None:
            self.total, self.total_sq = total, total_sq
        else:
            self.total, self.total_sq = self.total + total, self.total_sq + total_sq
        self.count += x.shape[0]

    def stats(self) -> Stats:
        mean = self.total / self.count
        var = (self.total_sq / self.count - mean * mean).clamp_min(0.0)
        return Stats(self.count, mean.cpu(), var.cpu())


def record_statistics(run_fn: Callable[[], object], modules: Mapping[str, torch.nn.Module], *,
                      channel_dim: int = -1) -> dict[str, Stats]:
    """Per-channel mean/variance of each named module's output over everything ``run_fn()`` runs.

    ``channel_dim`` is the channel dimension of the outputs (-1 for ``(B, tokens, C)`` transformer
    hidden states, 1 for ``(B, C, H, W)`` feature maps). Hooks are removed afterwards, also on error.
    A module that never ran is an error (a wrong module map would otherwise read as "no shift").
    """
    accumulators = {name: _Accumulator(channel_dim) for name in modules}
    handles = [module.register_forward_hook(accumulators[name]) for name, module in modules.items()]
    try:
        with torch.no_grad():
            run_fn()
    finally:
        for handle in handles:
            handle.remove()
    silent = [name for name, acc in accumulators.items() if acc.count == 0]
    if silent:
        raise RuntimeError(f"these modules never ran during run_fn: {silent[:5]}")
    return {name: acc.stats() for name, acc in accumulators.items()}


@dataclass
class BlockShift:
    mean_shift: float  # mean_c |Δμ_c| / σ_ref,c
    var_ratio: float  # geometric mean_c var_other,c / var_ref,c


@dataclass
class ShiftTable:
    blocks: dict[str, BlockShift]
    mean_shift: float  # mean over blocks
    max_mean_shift: float
    var_ratio: float  # geometric mean over blocks
    max_abs_log_var_ratio: float

    def rows(self):
        return [(name, b.mean_shift, b.var_ratio) for name, b in self.blocks.items()]


def block_shift(reference: Stats, other: Stats) -> BlockShift:
    if reference.mean.shape != other.mean.shape:
        raise ValueError(f"channel counts differ: {tuple(reference.mean.shape)} vs {tuple(other.mean.shape)}")
    delta = (other.mean - reference.mean).abs()
    live = reference.var > EPS  # a constant reference channel: only "no change" is measurable
    if not bool(live.all()) and bool((delta[~live] > 0).any() or (other.var[~live] > EPS).any()):
        raise ValueError("a reference channel is constant but the other model's is not; the shift is unbounded")
    if not bool(live.any()):
        return BlockShift(0.0, 1.0)
    mean_shift = (delta[live] / reference.var[live].sqrt()).sum() / delta.numel()
    log_ratio = (other.var[live].clamp_min(EPS).log() - reference.var[live].log()).sum() / delta.numel()
    return BlockShift(float(mean_shift), math.exp(float(log_ratio)))


def shift(reference: Mapping[str, Stats], other: Mapping[str, Stats]) -> ShiftTable:
    """Block-by-block shift of ``other`` from ``reference`` (both from :func:`record_statistics`)."""
    if set(reference) != set(other):
        raise ValueError(f"the records hold different blocks: {sorted(set(reference) ^ set(other))[:5]}")
    if not reference:
        raise ValueError("no blocks to compare")
    blocks = {name: block_shift(reference[name], other[name]) for name in reference}
    shifts = [b.mean_shift for b in blocks.values()]
    logs = [math.log(b.var_ratio) for b in blocks.values()]
    return ShiftTable(blocks=blocks, mean_shift=sum(shifts) / len(shifts), max_mean_shift=max(shifts),
                      var_ratio=math.exp(sum(logs) / len(logs)), max_abs_log_var_ratio=max(abs(v) for v in logs))
