"""Temporal attention: attention across the F frames at each spatial position of a clip.

``FrameSequenceAttention`` is what every temporal module shares: the reshape to per-position
frame sequences, the multi-head q/k/v/out projections and scores, and the residual returned in
the caller's dtype. ``VanillaTemporalAttention`` is Tune-A-Video's module (the baseline EI²
replaces with STAM, see ``ei2.stam``); ``make_temporal`` builds either from a name.
"""

import torch
from einops import rearrange
from torch import nn

TEMPORAL_TYPES = ("stam", "vanilla", "none")


class FrameSequenceAttention(nn.Module):
    """``hidden + branch(x)`` where x holds, per clip and position, the sequence of its F frames.

    Subclasses implement ``branch(x)``: ``(B·N, F, C) -> (B·N, F, C)``. The math runs in the
    parameters' dtype (fp32 master weights under an fp16 UNet); the result has ``hidden``'s dtype.
    """

    def __init__(self, channels, heads, *, out_bias, projection=nn.Linear):
        super().__init__()
        if heads < 1 or channels % heads:
            raise ValueError(f"channels={channels} do not split into heads={heads}")
        self.heads = heads
        self.to_q = nn.Linear(channels, channels, bias=False)
        self.to_k = nn.Linear(channels, channels, bias=False)
        # ``projection`` builds the value and output maps (STAM clips their spectral norm).
        self.to_v = projection(channels, channels, bias=False)
        self.to_out = projection(channels, channels, bias=out_bias)

    def forward(self, hidden, frames):
        if hidden.ndim != 3 or frames < 1 or hidden.shape[0] % frames:
            raise ValueError(
                f"hidden of shape {tuple(hidden.shape)} is not (clips·frames, tokens, channels) with frames={frames}"
            )
        tokens = hidden.shape[1]
        x = rearrange(hidden.to(self.to_q.weight.dtype), "(b f) n c -> (b n) f c", f=frames)
        branch = rearrange(self.branch(x), "(b n) f c -> (b f) n c", n=tokens)
        return hidden + branch.to(hidden.dtype)

    def branch(self, x):
        raise NotImplementedError

    def scores(self, x):
        """Scaled dot products between the frames, ``(B·N, heads, F, F)``, in at least fp32."""
        compute = torch.promote_types(x.dtype, torch.float32)
        q = self._split_heads(self.to_q(x)).to(compute)
        k = self._split_heads(self.to_k(x)).to(compute)
        return torch.einsum("shtd,shud->shtu", q, k) * q.shape[-1] ** -0.5

    def mix(self, weights, values):
        """Apply ``(B·N, heads, F, F)`` weights to ``(B·N, F, C)`` values, per head."""
        out = torch.einsum("shtu,shud->shtd", weights, self._split_heads(values).to(weights.dtype))
        return rearrange(out, "s h f d -> s f (h d)").to(values.dtype)

    def _split_heads(self, x):
        return rearrange(x, "s f (h d) -> s h f d", h=self.heads)


class VanillaTemporalAttention(FrameSequenceAttention):
    """Tune-A-Video's temporal attention: ``hidden + out(softmax-attention(LayerNorm(hidden)))``.

    Initialised and trained as Tune-A-Video's ``attn_temp`` / ``norm_temp``: only the output
    weight is zeroed (the output bias keeps ``nn.Linear``'s random init, a small constant shift
    from the start), and the LayerNorm is frozen at γ=1, β=0 (Tune-A-Video's trainable modules
    match ``attn_temp`` only).
    """

    def __init__(self, channels, heads):
        super().__init__(channels, heads, out_bias=True)
        self.norm = nn.LayerNorm(channels)
        self.norm.requires_grad_(False)
        nn.init.zeros_(self.to_out.weight)

    def branch(self, x):
        x = self.norm(x)
        weights = self.scores(x).softmax(dim=-1)
        return self.to_out(self.mix(weights, self.to_v(x)))


def make_temporal(temporal_type, channels, heads, **stam_options):
    """The temporal module named by ``temporal_type``, or ``None`` for ``"none"``."""
    if temporal_type not in TEMPORAL_TYPES:
        raise ValueError(f"unknown temporal_type {temporal_type!r}; choose one of {TEMPORAL_TYPES}")
    if temporal_type != "stam" and stam_options:
        raise ValueError(f"options {sorted(stam_options)} only apply to temporal_type='stam', not {temporal_type!r}")
    if temporal_type == "none":
        return None
    if temporal_type == "vanilla":
        return VanillaTemporalAttention(channels, heads)
    from .stam import STAM  # imported here because ei2.stam builds on this module

    return STAM(channels, heads, **stam_options)
