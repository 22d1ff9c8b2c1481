"""Context windows: a clip longer than memory allows, denoised a window of frames at a time.

Every call of the denoiser is split into windows of ``context_frames`` consecutive frames that
overlap by at least ``context_overlap``; the last window ends on the clip's last frame, so all
windows are equally long. Each window is denoised as a clip of its own and every frame's result
is the weighted mean over the windows that hold it, with weights that fall towards a window's
edges (1, 2, … at the ends), so a frame near a seam is led by the window it sits deep inside.
Blending happens at every step, so neighbouring windows keep each other in line while the clip
forms.

Anchor (optional, off by default): windows that do not start at frame 0 also get the clip's first
frame, prepended. Frame attention (FFAM's coarse set) and the temporal modules then see one frame
that every window shares, and neither depends on frame order (no positional encodings). Its result
there is dropped: frame 0 comes from its own window. In the toy world it gained nothing measurable
(docs/benchmarks.md), for one frame more per window.

A clip no longer than ``context_frames`` is one window: the denoiser is called exactly as without
windows.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ContextWindows:
    """How a clip is split: ``frames`` per window, at least ``overlap`` shared by neighbours, and the anchor or not.

    The defaults are the pack's (``DEFAULT_CONTEXT``): AnimateDiff's window length, so a clip up to 16 frames is one
    window; no anchor, which in the toy world gained nothing measurable for one frame more per window.
    """
    frames: int = 16
    overlap: int = 4
    anchor: bool = False

    def __post_init__(self):
        check_context(self.frames, self.overlap)

    def windows(self, clip_frames: int) -> list[range]:
        return context_windows(clip_frames, self.frames, self.overlap)

    def largest_call(self, clip_frames: int) -> int:
        """The most frames one model call gets: the clip, or a window and its anchor."""
        return clip_frames if clip_frames <= self.frames else self.frames + self.anchor

    def sampler(self, sampler, before_window=None):
        """A k-diffusion style ``sampler(model, x, sigmas, …)`` whose every model call runs in these windows."""

        def windowed_sampler(model, x, sigmas, *args, **kwargs):
            return sampler(windowed(model, self.windows(x.shape[0]), self.anchor, before_window), x, sigmas,
                           *args, **kwargs)

        return windowed_sampler


def check_context(context_frames: int, context_overlap: int) -> None:
    if context_frames < 1:
        raise ValueError(f"context_frames must be at least 1, got {context_frames}.")
    if not 0 <= context_overlap < context_frames:
        raise ValueError(f"context_overlap must be at least 0 and smaller than context_frames ({context_frames}), "
                         f"got {context_overlap}: windows that overlap completely never move along the clip.")


DEFAULT_CONTEXT = ContextWindows()  # the nodes' and the benchmarks' windows


def context_windows(frames: int, context_frames: int, context_overlap: int) -> list[range]:
    """The frames of each window, in order (without the anchor)."""
    check_context(context_frames, context_overlap)
    if frames <= context_frames:
        return [range(frames)]
    step = context_frames - context_overlap
    starts = [*range(0, frames - context_frames, step), frames - context_frames]
    return [range(start, start + context_frames) for start in starts]


def edge_weights(length: int) -> torch.Tensor:
    """1, 2, …, …, 2, 1: a frame's weight in a window of ``length`` is its distance to the nearer end, plus 1."""
    position = torch.arange(length)
    return torch.minimum(position + 1, length - position).float()


def windowed(denoiser, windows: list[range], anchor: bool = False, before_window=None):
    """``denoiser(x, sigma, **extra)`` on the frames of each window in turn, blended per frame.

    ``x`` and ``sigma`` are ``[frames, ...]`` and ``[frames]``; ``before_window(frames)`` runs before each
    window with the clip's frame numbers it holds, anchor first (e.g. to honour a cancel within a step, or to
    pick the window's part of a source clip). One window calls ``denoiser`` unchanged.
    """
    if len(windows) == 1:
        return denoiser

    def denoise(x, sigma, **extra):
        total = torch.zeros_like(x)
        weight_sum = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for window in windows:
            with_anchor = anchor and window.start > 0
            frames = [0] * with_anchor + list(window)
            if before_window is not None:
                before_window(frames)
            index = torch.tensor(frames, device=x.device)
            result = denoiser(x[index], sigma[index], **extra)[int(with_anchor):]  # the anchor's own result is dropped
            weight = edge_weights(len(window)).to(x)
            total[window.start:window.stop] += result * weight.view(-1, *[1] * (x.ndim - 1))
            weight_sum[window.start:window.stop] += weight
        return total / weight_sum.view(-1, *[1] * (x.ndim - 1))

    return denoise
