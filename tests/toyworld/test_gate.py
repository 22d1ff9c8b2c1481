"""The gate's arithmetic, on stand-in models whose answers are known: one draws the prompt, one ignores it."""
import numpy as np
import pytest
import torch

from benchmarks.toyworld.gate import contact_sheet, evaluate_gate
from benchmarks.toyworld.text import VOCABULARY, tokenize
from benchmarks.toyworld.world import Scene, render, to_tensor_range


class _Text:
    def encode(self, prompts):
        return tokenize(prompts).float().unsqueeze(-1)  # (B, words, 1): the word ids themselves


class DrawingModel:
    """A 'denoiser' that returns the exact render of its prompt (or of a fixed caption when told to ignore it)."""

    text = _Text()

    def __init__(self, fixed=None):
        self.fixed = fixed

    def denoise(self, x, sigma, context, frames=1):
        images = []
        for row in context[:, :, 0].long():
            colour, shape, background = (VOCABULARY[i] for i in row[[1, 2, 5]])
            scene = Scene(*(self.fixed or (colour, shape, background)), (16.0, 16.0), 7.0)
            images.append(to_tensor_range(render(scene)))
        return torch.from_numpy(np.stack(images))


def test_a_model_that_draws_the_prompt_passes():
    result = evaluate_gate(DrawingModel(), per_caption=1, steps=2, guidance=1.0)
    assert result.samples == 36 and result.passed
    assert (result.colour, result.shape, result.background) == (1.0, 1.0, 1.0)


def test_a_model_that_ignores_the_prompt_fails():
    result = evaluate_gate(DrawingModel(fixed=("red", "circle", "grey")), per_caption=1, steps=2, guidance=1.0)
    assert not result.passed
    assert result.colour == pytest.approx(1 / 4) and result.shape == pytest.approx(1 / 3)
    assert result.per_shape == {"circle": 1.0, "square": 0.0, "triangle": 0.0}
    assert "FAIL" in result.summary()


def test_contact_sheet_tiles_every_image():
    images = np.random.default_rng(0).integers(0, 255, (5, 4, 4, 3), dtype=np.uint8)
    sheet = contact_sheet(images, columns=2, scale=1)
    assert sheet.shape == (3 * 5, 2 * 5, 3)
    assert np.array_equal(sheet[5:9, 5:9], images[3])
