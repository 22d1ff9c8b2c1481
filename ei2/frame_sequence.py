"""What every temporal module shares: attention across the F frames at each spatial position of a clip.

``FrameSequenceAttention`` does the reshape to per-position frame sequences, the multi-head
q/k/v/out projections and scores, and returns the residual in the caller's dtype; subclasses
(``ei2.stam.STAM``, ``ei2.vanilla.VanillaTemporalAttention``) say what the branch computes.
"""

import torch
from einops import rearrange
from torch import nn


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
