"""The toy model's text encoder: whole words of the world's vocabulary, a learned embedding each.

A caption is split on spaces, every word must be in ``VOCABULARY``, and the sequence is padded
to ``MAX_WORDS`` with ``<pad>``; the empty prompt "" is all padding (the unconditional input of
classifier-free guidance). Each position adds a learned position embedding, so "a red circle"
and "on a red background" can differ although "red" is one token.
"""
from __future__ import annotations

import torch
from torch import nn

from .world import BACKGROUNDS, COLOURS, SHAPES

PAD = "<pad>"
VOCABULARY = (PAD, "a", "on", "background", *COLOURS, *SHAPES, *BACKGROUNDS)
MAX_WORDS = 8
WORD_IDS = {word: index for index, word in enumerate(VOCABULARY)}


def tokenize(prompts: list[str]) -> torch.Tensor:
    """``(B, MAX_WORDS)`` long token ids of ``prompts``."""
    rows = []
    for prompt in prompts:
        words = prompt.split()
        unknown = [w for w in words if w not in WORD_IDS]
        if unknown:
            raise ValueError(f"prompt {prompt!r} has words outside the toy vocabulary: {unknown}; "
                             f"the vocabulary is {VOCABULARY[1:]}")
        if len(words) > MAX_WORDS:
            raise ValueError(f"prompt {prompt!r} has {len(words)} words; at most {MAX_WORDS} fit")
        rows.append([WORD_IDS[w] for w in words] + [WORD_IDS[PAD]] * (MAX_WORDS - len(words)))
    return torch.tensor(rows, dtype=torch.long)


class TextEncoder(nn.Module):
    """Token ids ``(B, L)`` → context ``(B, L, dim)`` for the UNet's cross-attention."""

    def __init__(self, dim: int):
        super().__init__()
        self.words = nn.Embedding(len(VOCABULARY), dim)
        self.positions = nn.Parameter(torch.zeros(MAX_WORDS, dim))
        self.norm = nn.LayerNorm(dim)
        nn.init.normal_(self.words.weight, std=0.02 * dim**0.5)
        nn.init.normal_(self.positions, std=0.02 * dim**0.5)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        return self.norm(self.words(token_ids) + self.positions[: token_ids.shape[1]])

    def encode(self, prompts: list[str]) -> torch.Tensor:
        return self(tokenize(prompts).to(self.positions.device))
