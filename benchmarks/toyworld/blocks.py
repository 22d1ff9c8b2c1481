"""The toy UNet's layers, in Stable Diffusion's pattern, with the two places the EI² core plugs in.

``TransformerBlock`` is SD's ``BasicTransformerBlock``: self-attention (``attn1``) →
cross-attention (``attn2``) → GEGLU feed-forward, each pre-normed with a residual. Inflation
(``inflate.py``) changes exactly what the pack changes in SD:
- ``attn1.frame_options``: when set, self-attention runs ``ei2.ffam.frame_attention`` on the
  projected q, k, v of the whole clip (what the pack's attn1 replace patch does);
- ``temporal``: a module ``(hidden (B·F, N, C), frames) -> hidden`` that runs after the
  feed-forward (Tune-A-Video's place, the pack's default) or, with ``temporal_placement =
  "after_self_attention"``, right after self-attention (the pack's middle patch).
Un-inflated, both are ``None`` and every image is processed alone.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ei2.ffam import frame_attention, sdpa_attention


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(16, channels // 4), channels)


class Attention(nn.Module):
    """Multi-head attention with SD's projection names (to_q, to_k, to_v, to_out)."""

    def __init__(self, dim: int, heads: int, context_dim: int | None = None):
        super().__init__()
        context_dim = context_dim or dim
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(context_dim, dim, bias=False)
        self.to_v = nn.Linear(context_dim, dim, bias=False)
        self.to_out = nn.Linear(dim, dim)
        self.frame_options: dict | None = None  # set by inflation: frame_attention's keyword options
        self.exchange = None  # set during structure reuse (reuse.py): ``(key, tensor) -> tensor`` for q and k

    def forward(self, x, context=None, *, frames: int = 1, size: tuple[int, int] | None = None):
        source = x if context is None else context
        q, k, v = self.to_q(x), self.to_k(source), self.to_v(source)
        if self.exchange is not None and context is None:
            q, k = self.exchange("q", q), self.exchange("k", k)
        if self.frame_options is not None and context is None:
            out = frame_attention(q, k, v, frames=frames, heads=self.heads, size=size, **self.frame_options)
        else:
            out = sdpa_attention(q, k, v, self.heads)
        return self.to_out(out)


class FeedForward(nn.Module):
    """SD's GEGLU feed-forward: ``Linear(dim, 2·inner)`` → value·GELU(gate) → ``Linear(inner, dim)``."""

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.proj_in = nn.Linear(dim, 2 * dim * mult)
        self.proj_out = nn.Linear(dim * mult, dim)

    def forward(self, x):
        value, gate = self.proj_in(x).chunk(2, dim=-1)
        return self.proj_out(value * F.gelu(gate))


class TransformerBlock(nn.Module):
    """SD's BasicTransformerBlock, with a temporal-module slot after the feed-forward (or after self-attention)."""

    def __init__(self, dim: int, heads: int, context_dim: int):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads)
        self.attn2 = Attention(dim, heads, context_dim)
        self.ff = FeedForward(dim)
        self.temporal: nn.Module | None = None  # set by inflation
        self.temporal_placement = "after_feedforward"  # or "after_self_attention" (ei2.inflation.TEMPORAL_PLACEMENTS)

    def forward(self, x, context, *, frames: int, size: tuple[int, int]):
        x = x + self.attn1(self.norm1(x), frames=frames, size=size)
        if self.temporal is not None and self.temporal_placement == "after_self_attention":
            x = self.temporal(x, frames)
        x = x + self.attn2(self.norm2(x), context)
        x = x + self.ff(self.norm3(x))
        if self.temporal is not None and self.temporal_placement == "after_feedforward":
            x = self.temporal(x, frames)
        return x


class SpatialTransformer(nn.Module):
    """SD's SpatialTransformer: GroupNorm → linear in → one TransformerBlock → linear out (zero-init) + input."""

    def __init__(self, channels: int, heads: int, context_dim: int):
        super().__init__()
        self.norm = group_norm(channels)
        self.proj_in = nn.Linear(channels, channels)
        self.block = TransformerBlock(channels, heads, context_dim)
        self.proj_out = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x, context, *, frames: int):
        height, width = x.shape[-2:]
        tokens = rearrange(self.norm(x), "b c h w -> b (h w) c")
        # Each image's context row is repeated per frame by the caller: rows stay (clip, frame)-major.
        tokens = self.block(self.proj_in(tokens), context, frames=frames, size=(height, width))
        return x + rearrange(self.proj_out(tokens), "b (h w) c -> b c h w", h=height, w=width)


class ResBlock(nn.Module):
    """SD's ResBlock: norm → SiLU → conv, plus the noise-level embedding, norm → SiLU → conv (zero-init), skip."""

    def __init__(self, in_channels: int, out_channels: int, embedding_dim: int):
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.embedding = nn.Linear(embedding_dim, out_channels)
        self.norm2 = group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        self.exchange = None  # set during structure reuse (reuse.py): ``(key, tensor) -> tensor`` for the residual

    def forward(self, x, embedding):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + rearrange(self.embedding(F.silu(embedding)), "b c -> b c 1 1")
        h = self.conv2(F.silu(self.norm2(h)))
        if self.exchange is not None:
            h = self.exchange("residual", h)
        return self.skip(x) + h


def noise_embedding(c_noise: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding ``(B, dim)`` of the per-sample noise conditioning ``c_noise`` ``(B,)``."""
    half = dim // 2
    frequencies = torch.exp(-torch.log(torch.tensor(1000.0)) * torch.arange(half, device=c_noise.device) / half)
    angles = rearrange(c_noise.float(), "b -> b 1") * frequencies * 100
    return torch.cat([angles.cos(), angles.sin()], dim=-1)
