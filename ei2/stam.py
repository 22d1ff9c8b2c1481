"""STAM: EI²'s Shift-restricted Temporal Attention Module.

Per the paper, the temporal attention added to a text-to-image UNet shifts the feature
distribution (LayerNorm being the main culprit). STAM replaces LayerNorm by instance centering
and bounds the attention's mapping. With ``mapping_type="spectral"`` the branch added to the
features (i) keeps every position's mean over frames unchanged and (ii) has at most the
frame-variance of the centred input (up to the lag of the spectral-norm estimate, see
``ei2.spectral``); docs/method.md has the argument.
"""

import torch
from torch import nn

from .spectral import SpectrallyClippedLinear
from .frame_sequence import FrameSequenceAttention

CENTERING_TYPES = ("frames", "channels")
MAPPING_TYPES = ("spectral", "none")


def instance_center(x, centering_type="frames"):
    """Subtract the mean of ``(..., F, C)`` over frames (per channel) or over channels (per frame).

    Unlike LayerNorm nothing is divided: the feature scale, whose change is the variance shift,
    is kept.
    """
    return x - x.mean(dim=-2 if centering_type == "frames" else -1, keepdim=True)


def symmetric_attention(scores):
    """``exp(S_ts) / sqrt(r_t·c_s)`` with row sums r and column sums c of exp(S); ``‖·‖₂ ≤ 1``.

    A row softmax can amplify (its spectral norm reaches sqrt(F)); this one cannot (Schur test).
    Computed in log space so large scores do not overflow.
    """
    rows = scores.logsumexp(dim=-1, keepdim=True)
    columns = scores.logsumexp(dim=-2, keepdim=True)
    return torch.exp(scores - 0.5 * rows - 0.5 * columns)


class STAM(FrameSequenceAttention):
    """``hidden + out(attention(instance_center(hidden)))`` over the frames of each position.

    ``centering_type``: ``"frames"`` (default) removes each position's mean over frames, so the
    branch sees only temporal variation and a single frame is left untouched; ``"channels"``
    removes each token's mean over channels (LayerNorm without scaling or affine, the ablation).
    ``mapping_type``: ``"spectral"`` (default) clips the value and output weights to spectral
    norm ≤ 1, uses symmetric attention and re-centres the output over frames; ``"none"`` is plain
    softmax attention with free weights.

    The output weight starts at zero, so STAM starts as the exact identity; its C weights per
    output channel then grow together under any optimiser (a lone per-channel gate could only move
    by about the learning rate per step). The value weight starts orthogonal: every singular value
    is 1, so the values keep the centred input's norm and the clip starts inactive.
    """

    def __init__(self, channels, heads, *, centering_type="frames", mapping_type="spectral"):
        if centering_type not in CENTERING_TYPES:
            raise ValueError(f"unknown centering_type {centering_type!r}; choose one of {CENTERING_TYPES}")
        if mapping_type not in MAPPING_TYPES:
            raise ValueError(f"unknown mapping_type {mapping_type!r}; choose one of {MAPPING_TYPES}")
        # No output bias: under "spectral" the re-centring would cancel it anyway.
        projection = SpectrallyClippedLinear if mapping_type == "spectral" else nn.Linear
        super().__init__(channels, heads, out_bias=False, projection=projection)
        self.centering_type = centering_type
        self.mapping_type = mapping_type
        nn.init.orthogonal_(self.to_v.weight)
        nn.init.zeros_(self.to_out.weight)

    def branch(self, x):
        x = instance_center(x, self.centering_type)
        if self.mapping_type == "spectral":
            mixed = self.mix(symmetric_attention(self.scores(x)), self.to_v(x))
            return instance_center(self.to_out(mixed), "frames")
        return self.to_out(self.mix(self.scores(x).softmax(dim=-1), self.to_v(x)))

    def extra_repr(self):
        return f"heads={self.heads}, centering_type={self.centering_type!r}, mapping_type={self.mapping_type!r}"
