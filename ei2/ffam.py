"""Frame attention: how the frames of a clip see each other inside the UNet's self-attention.

EI²'s Fine-coarse Frame Attention Module (FFAM) lets every token of frame i attend to all fine
tokens of its own frame plus a coarse, down-sampled grid of every other frame of the clip.
The baselines are Tune-A-Video's sparse-causal attention, full attention over the whole clip,
and plain per-image self-attention.

All variants take the already projected ``q, k, v`` of shape ``(B·F, N, heads·d)`` with the batch
clip-major (row ``b·F + f``) and ``N = h·w`` tokens in row-major order of the latent grid, and
run one multi-head attention without a mask per key set (``scaled_dot_product_attention``, or the
``attention`` callable given, e.g. the backend a ComfyUI user chose); only ``"full"`` scores the
whole clip against itself.
"""

import math

import torch
import torch.nn.functional as F
from einops import rearrange

ATTENTION_TYPES = ("ffam", "sparse_causal", "full", "per_frame")
COARSE_TYPES = ("avg", "stride")


def frame_attention(
    q, k, v, *, frames, heads, size, attention_type="ffam", coarse_stride=2, coarse_type="avg", attention=None
):
    """Multi-head attention of ``(B·F, N, heads·d)`` tokens, frames mixed by ``attention_type``.

    ``"ffam"``: frame i attends to its N fine tokens and to the coarse tokens of every other
    frame j ≠ i of its clip. Coarse keys and values come from the h×w grid down-sampled by
    ``coarse_stride`` s: ``coarse_type="avg"`` averages each s×s cell, ``"stride"`` keeps the
    top-left token of each cell. Grids not divisible by s keep the partial border cells
    (ceil(h/s)·ceil(w/s) coarse tokens); an averaged border cell averages only its valid tokens.
    ``"sparse_causal"``: frame i attends to frames 0 and i−1 (frame 0 to itself).
    ``"full"``: every token attends to every token of the clip. ``"per_frame"``: per image.

    ``attention(q, k, v, heads)`` computes multi-head attention of ``(B, Nq, heads·d)`` queries over
    ``(B, Nk, heads·d)`` keys and values (default: ``scaled_dot_product_attention``).

    Clips never mix. Returns ``(B·F, N, heads·d)`` in ``q``'s dtype.
    """
    _check_arguments(q, k, v, frames, heads, size, attention_type, coarse_stride, coarse_type)
    attend = attention or sdpa_attention
    k, v = k.to(q.dtype), v.to(q.dtype)
    if attention_type == "per_frame" or frames == 1:
        # A single frame has no other frames: every variant reduces to image self-attention.
        return attend(q, k, v, heads)
    if attention_type == "ffam":
        return _ffam(q, k, v, frames=frames, heads=heads, size=size, stride=coarse_stride, coarse_type=coarse_type,
                     attend=attend)
    if attention_type == "sparse_causal":
        keys, values = (_first_and_former_frames(t, frames) for t in (k, v))
        return attend(q, keys, values, heads)
    # "full": each clip is one long token sequence.
    q, k, v = (rearrange(t, "(b f) n c -> b (f n) c", f=frames) for t in (q, k, v))
    return rearrange(attend(q, k, v, heads), "b (f n) c -> (b f) n c", f=frames)


def coarse_tokens(x, size, stride, coarse_type="avg"):
    """Down-sample ``(..., N, C)`` tokens on their h×w grid to ``ceil(h/s)·ceil(w/s)`` tokens."""
    h, w = size
    grid = rearrange(x, "... (h w) c -> ... c h w", h=h, w=w)
    lead = grid.shape[:-3]
    grid = grid.reshape(-1, *grid.shape[-3:])
    if coarse_type == "avg":
        # With padding 0, ceil_mode divides a border cell by its in-grid area: an honest mean.
        grid = F.avg_pool2d(grid, stride, stride, ceil_mode=True)
    else:
        grid = grid[..., ::stride, ::stride]
    return rearrange(grid.reshape(*lead, *grid.shape[-3:]), "... c h w -> ... (h w) c")


def _ffam(q, k, v, *, frames, heads, size, stride, coarse_type, attend):
    """FFAM, a few frames at a time.

    Each frame needs its own key set (its fine tokens + the others' coarse ones), N + (F−1)·M
    tokens where full attention shares F·N among all frames. Gathering all frames at once would
    hold up to 1 + (F−1)/s² times full's keys and values; chunks of frames keep it at about full's.
    """
    tokens = q.shape[1]
    coarse_per_frame = math.ceil(size[0] / stride) * math.ceil(size[1] / stride)
    chunk = max(1, frames * tokens // (tokens + (frames - 1) * coarse_per_frame))
    clip_q = rearrange(q, "(b f) n c -> b f n c", f=frames)
    outputs = []
    for start in range(0, frames, chunk):
        selected = range(start, min(start + chunk, frames))
        keys, values = _fine_coarse_keys(k, v, frames=frames, size=size, stride=stride, coarse_type=coarse_type,
                                         selected=selected)
        queries = rearrange(clip_q[:, selected.start:selected.stop], "b f n c -> (b f) n c")
        outputs.append(rearrange(attend(queries, keys, values, heads), "(b f) n c -> b f n c", f=len(selected)))
    return rearrange(torch.cat(outputs, dim=1), "b f n c -> (b f) n c")


def _fine_coarse_keys(k, v, *, frames, size, stride, coarse_type, selected=None):
    """FFAM keys/values of the ``selected`` frames (default all): own fine tokens, then the coarse
    tokens of the F−1 other frames.

    Returns two ``(B·len(selected), N + (F−1)·M, C)`` tensors, M = ceil(h/s)·ceil(w/s).
    """
    selected = range(frames) if selected is None else selected
    # Row i lists the frames other than i; pooling runs once per frame, not once per pair.
    eye = torch.eye(frames, dtype=torch.bool, device=k.device)
    others = torch.arange(frames, device=k.device).expand(frames, frames)[~eye].view(frames, frames - 1)
    others = others[selected.start:selected.stop]

    def fine_then_coarse(x):
        per_frame = rearrange(x, "(b f) n c -> b f n c", f=frames)
        coarse = coarse_tokens(per_frame, size, stride, coarse_type)
        fine = rearrange(per_frame[:, selected.start:selected.stop], "b f n c -> (b f) n c")
        coarse_others = rearrange(coarse[:, others], "b f o m c -> (b f) (o m) c")
        return torch.cat([fine, coarse_others], dim=1)

    return fine_then_coarse(k), fine_then_coarse(v)


def _first_and_former_frames(x, frames):
    """Tune-A-Video's sparse-causal keys: frame i sees [frame 0, frame max(i−1, 0)]."""
    per_frame = rearrange(x, "(b f) n c -> b f n c", f=frames)
    former = [0] + list(range(frames - 1))
    keys = torch.cat([per_frame[:, [0] * frames], per_frame[:, former]], dim=2)
    return rearrange(keys, "b f n c -> (b f) n c")


def sdpa_attention(q, k, v, heads):
    """Multi-head attention with PyTorch's ``scaled_dot_product_attention``; ``(B, N, heads·d)`` in and out."""
    q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=heads) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v)
    return rearrange(out, "b h n d -> b n (h d)")


def _check_arguments(q, k, v, frames, heads, size, attention_type, coarse_stride, coarse_type):
    if attention_type not in ATTENTION_TYPES:
        raise ValueError(f"unknown attention_type {attention_type!r}; choose one of {ATTENTION_TYPES}")
    if coarse_type not in COARSE_TYPES:
        raise ValueError(f"unknown coarse_type {coarse_type!r}; choose one of {COARSE_TYPES}")
    if not isinstance(coarse_stride, int) or coarse_stride < 1:
        raise ValueError(f"coarse_stride must be an integer >= 1, got {coarse_stride!r}")
    if q.ndim != 3 or q.shape != k.shape or k.shape != v.shape:
        raise ValueError(
            f"q, k, v must share one (batch·frames, tokens, channels) shape, "
            f"got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    rows, tokens, channels = q.shape
    if frames < 1 or rows % frames:
        raise ValueError(f"batch {rows} is not a whole number of clips of frames={frames}; pass the clip length")
    h, w = size
    if tokens != h * w:
        raise ValueError(f"{tokens} tokens do not fill a size={tuple(size)} grid ({h * w} tokens); pass the latent (h, w)")
    if heads < 1 or channels % heads:
        raise ValueError(f"{channels} channels do not split into heads={heads}")
