"""Tolerances that follow from the dtype and the operation, not from one machine's run."""
from __future__ import annotations

import torch


def batching_tolerance(reference: torch.Tensor, ulps: int = 1024) -> dict:
    """``assert_close`` tolerances for a float result computed in batches of another size than ``reference``.

    BLAS picks its kernels, and so the order of every sum, by the shapes it gets (and by the CPU), so a batched
    and a one-frame run of the same computation differ by about √n units in the last place per reduction of n
    terms (n ≈ 10³ channels or tokens in the UNet), carried through its tens of layers and the sampler's steps,
    on activations larger than the result. Allow ``ulps`` (2¹⁰) units in the last place of the result's largest
    value: ~1e-4 of it in float32. A real error (a wrong blend, frames leaking into each other) is of the order of
    the values themselves.
    """
    return dict(atol=ulps * torch.finfo(reference.dtype).eps * float(reference.abs().max()), rtol=0)
