"""Spectral clipping: a linear map whose weight is used as ``W / max(1, σ̂(W))``, so it never amplifies.

STAM's normalised mapping (``ei2.stam``) bounds what its value and output projections can do to
the temporal variance. The exact largest singular value σ (an SVD) on every training step would
cost more than the attention itself; σ̂ comes from a power iteration whose singular-vector
estimates persist between steps (Miyato et al., "Spectral Normalization for GANs", 2018), kept as
buffers so that they move, save and load with the module and ComfyUI counts them.

Clipping rather than normalising (``W / σ``) keeps small weights as they are: a zero weight stays
zero, so a module can start as the exact identity and grow from there under any optimiser.

What the estimate guarantees: ``σ̂ = uᵀWv`` with unit ``u, v`` is a Rayleigh quotient, so
``σ̂ ≤ σ`` always, and the clipped weight's true norm is ``σ / max(1, σ̂)``: at most 1 once the
estimate has caught up with the weight. While training it runs one power step per weight update
(one matrix-vector product each way, nothing more), so it lags a fast-moving weight;
:func:`settle` runs enough steps to make the bound hold to ~1e-4 once training is over
(docs/method.md gives the measured lag).
"""

import torch
import torch.nn.functional as F
from torch import nn

SETTLE_STEPS = 200


class SpectrallyClippedLinear(nn.Linear):
    """``nn.Linear`` (no bias) computing ``x · (W / max(1, σ̂(W)))ᵀ``.

    While gradients flow to ``weight`` (training), every new version of the weight gets one power
    step before it is used; a recomputation of the same version (gradient checkpointing) or any
    call without gradients (sampling) uses the stored estimate and changes nothing.
    """

    def __init__(self, in_features, out_features, bias=False, device=None, dtype=None):
        if bias:
            raise ValueError("a spectrally clipped map has no bias (a bias would not be bounded by the clip)")
        super().__init__(in_features, out_features, bias=False, device=device, dtype=dtype)
        self.register_buffer("left_vector", F.normalize(torch.randn(out_features, device=device, dtype=dtype), dim=0))
        self.register_buffer("right_vector", F.normalize(torch.randn(in_features, device=device, dtype=dtype), dim=0))
        self._estimated_version = None

    def forward(self, x):
        return F.linear(x, self.clipped_weight())

    def clipped_weight(self):
        weight = self.weight
        if torch.is_grad_enabled() and weight.requires_grad:
            version = (weight.data_ptr(), weight._version)
            if version != self._estimated_version:
                self.power_step()
                self._estimated_version = version
        # u and v are constants to autograd: dσ̂/dW = uvᵀ, the gradient of σ at the estimate.
        return weight / self.norm_estimate(weight).clamp_min(1.0)

    def norm_estimate(self, weight=None):
        """σ̂ = uᵀWv ≤ ‖W‖₂."""
        weight = self.weight if weight is None else weight
        return torch.dot(self.left_vector, weight @ self.right_vector)

    @torch.no_grad()
    def power_step(self):
        weight = self.weight.detach()
        # A zero weight (the output map at init) keeps the previous vectors instead of collapsing to 0.
        self.right_vector.copy_(_unit_or(weight.mT @ self.left_vector, self.right_vector))
        self.left_vector.copy_(_unit_or(weight @ self.right_vector, self.left_vector))

    def extra_repr(self):
        return f"{super().extra_repr()}, clipped to spectral norm ≤ 1"


def _unit_or(vector, fallback):
    """``vector`` scaled to unit length, or ``fallback`` where it is zero (no host sync: ``torch.where``)."""
    norm, tiny = vector.norm(), torch.finfo(vector.dtype).tiny
    return torch.where(norm > tiny, vector / norm.clamp_min(tiny), fallback)


@torch.no_grad()
def settle(module, steps=SETTLE_STEPS):
    """Run ``steps`` power steps on every spectrally clipped map in ``module`` (after training).

    Sampling then uses weights whose true spectral norm is within ~1e-4 of the clip even where the
    top singular values crowd together (Adam's sign-like updates raise many of them at once).
    """
    for layer in module.modules():
        if isinstance(layer, SpectrallyClippedLinear):
            for _ in range(steps):
                layer.power_step()
