"""STAM: EI²'s Shift-restricted Temporal Attention Module.

Per the paper, the temporal attention added to a text-to-image UNet shifts the feature
distribution (LayerNorm being the main culprit). STAM replaces LayerNorm by instance centering
and bounds the attention's mapping. With ``mapping_type="spectral"`` the branch added to the
features provably (i) keeps every position's mean over frames unchanged and (ii) has at most the
frame-variance of the centred input, for any parameter values; docs/method.md has the argument.
"""

import torch
import torch.nn.functional as F
from torch import nn

from .temporal import FrameSequenceAttention

CENTERING_TYPES = ("frames", "channels")
MAPPING_TYPES = ("spectral", "none")


def instance_center(x, centering_type="frames"):
    """Subtract the mean of ``(..., F, C)`` over frames (per channel) or over channels (per frame).

    Unlike LayerNorm nothing is divided: the feature scale, whose change is the variance shift,
    is kept.
    """
    return x - x.mean(dim=-2 if centering_type == "frames" else -1, keepdim=True)


def spectral_normalized(weight):
    """``weight`` divided by its largest singular value, so that ``‖weight‖₂ = 1``."""
    # The clamp keeps an all-zero weight zero instead of 0/0.
    return weight / torch.linalg.matrix_norm(weight, ord=2).clamp_min(torch.finfo(weight.dtype).tiny)


def symmetric_attention(scores):
    """``exp(S_ts) / sqrt(r_t·c_s)`` with row sums r and column sums c of exp(S); ``‖·‖₂ ≤ 1``.

    A row softmax can amplify (its spectral norm reaches sqrt(F)); this one cannot (Schur test).
    Computed in log space so large scores do not overflow.
    """
    rows = scores.logsumexp(dim=-1, keepdim=True)
    columns = scores.logsumexp(dim=-2, keepdim=True)
    return torch.exp(scores - 0.5 * rows - 0.5 * columns)


class STAM(FrameSequenceAttention):
    """``hidden + tanh(γ)·attention(instance_center(hidden))`` over the frames of each position.

    ``centering_type``: ``"frames"`` (default) removes each position's mean over frames, so the
    branch sees only temporal variation and a single frame is left untouched; ``"channels"``
    removes each token's mean over channels (LayerNorm without scaling or affine, the ablation).
    ``mapping_type``: ``"spectral"`` (default) normalises the value and output weights to spectral
    norm 1, uses symmetric attention and re-centres the output over frames; ``"none"`` is plain
    softmax attention with free weights. The per-channel gate γ starts at 0: STAM starts as the
    identity.
    """

    def __init__(self, channels, heads, *, centering_type="frames", mapping_type="spectral"):
        if centering_type not in CENTERING_TYPES:
            raise ValueError(f"unknown centering_type {centering_type!r}; choose one of {CENTERING_TYPES}")
        if mapping_type not in MAPPING_TYPES:
            raise ValueError(f"unknown mapping_type {mapping_type!r}; choose one of {MAPPING_TYPES}")
        # No output bias: under "spectral" the re-centring would cancel it anyway.
        super().__init__(channels, heads, out_bias=False)
        self.centering_type = centering_type
        self.mapping_type = mapping_type
        self.gate = nn.Parameter(torch.zeros(channels))
        self._normalized_cache = {}

    def normalized_weight(self, linear):
        """``spectral_normalized(linear.weight)``, computed once per weight version when no gradient is needed.

        The SVD behind it costs more than the attention itself; sampling reuses the same weights
        for every step, so it is cached, keyed by the weight's storage, version, device and dtype.
        """
        weight = linear.weight
        if torch.is_grad_enabled() and weight.requires_grad:
            return spectral_normalized(weight)
        key = (weight.data_ptr(), weight._version, weight.device, weight.dtype)
        cached = self._normalized_cache.get(id(linear))
        if cached is None or cached[0] != key:
            cached = self._normalized_cache[id(linear)] = (key, spectral_normalized(weight.detach()))
        return cached[1]

    def branch(self, x):
        x = instance_center(x, self.centering_type)
        if self.mapping_type == "spectral":
            values = F.linear(x, self.normalized_weight(self.to_v))
            mixed = self.mix(symmetric_attention(self.scores(x)), values)
            out = instance_center(F.linear(mixed, self.normalized_weight(self.to_out)), "frames")
        else:
            mixed = self.mix(self.scores(x).softmax(dim=-1), self.to_v(x))
            out = self.to_out(mixed)
        return out * torch.tanh(self.gate)

    def extra_repr(self):
        return f"heads={self.heads}, centering_type={self.centering_type!r}, mapping_type={self.mapping_type!r}"
