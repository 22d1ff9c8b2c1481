"""The image-level gate: does the toy model draw what it is told? Scored by ``scorer.read_image``.

Every caption of the world (4 colours × 3 shapes × 3 backgrounds = 36) is sampled ``per_caption``
times from seeded noise; the gate passes when the prompted colour is read in ≥ 90 % of the
samples and the prompted shape in ≥ 80 %. Background accuracy is reported too.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import torch

from .model import ToyT2I
from .sampling import sample_images
from .scorer import read_image
from .world import BACKGROUNDS, COLOURS, SHAPES, Scene, caption, from_tensor_range

COLOUR_GATE, SHAPE_GATE = 0.90, 0.80


@dataclass
class GateResult:
    samples: int
    colour: float
    shape: float
    background: float
    per_shape: dict = field(default_factory=dict)  # shape -> fraction of its samples read as that shape
    images: np.ndarray | None = None  # (N, H, W, 3) uint8, captions in ``prompts`` order
    prompts: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.colour >= COLOUR_GATE and self.shape >= SHAPE_GATE

    def summary(self) -> str:
        shapes = ", ".join(f"{k} {v:.0%}" for k, v in self.per_shape.items())
        verdict = "PASS" if self.passed else "FAIL"
        return (f"{verdict}: colour {self.colour:.1%} (gate {COLOUR_GATE:.0%}), shape {self.shape:.1%} "
                f"(gate {SHAPE_GATE:.0%}), background {self.background:.1%} over {self.samples} samples [{shapes}]")


def all_captions() -> list[tuple[str, str, str]]:
    return list(itertools.product(COLOURS, SHAPES, BACKGROUNDS))


def evaluate_gate(model: ToyT2I, *, per_caption: int = 4, seed: int = 0, steps: int = 25, guidance: float = 3.0,
                  batch: int = 36) -> GateResult:
    attributes = [a for a in all_captions() for _ in range(per_caption)]
    prompts = [caption(Scene(c, s, b, (0.0, 0.0))) for c, s, b in attributes]
    images = []
    for start in range(0, len(prompts), batch):
        pixels = sample_images(model, prompts[start:start + batch], seed=seed + start, steps=steps, guidance=guidance)
        images.append(from_tensor_range(pixels.numpy()))
    images = np.concatenate(images)
    readings = [read_image(image) for image in images]
    hits = {key: np.array([getattr(r, key) == a[i] for r, a in zip(readings, attributes)])
            for i, key in enumerate(("colour", "shape", "background"))}
    per_shape = {shape: float(hits["shape"][[a[1] == shape for a in attributes]].mean()) for shape in SHAPES}
    return GateResult(len(prompts), float(hits["colour"].mean()), float(hits["shape"].mean()),
                      float(hits["background"].mean()), per_shape, images, prompts)


def contact_sheet(images: np.ndarray, columns: int = 12, scale: int = 2) -> np.ndarray:
    """Tile ``(N, H, W, 3)`` images into one uint8 image (for looking at samples)."""
    rows = -(-len(images) // columns)
    h, w = images.shape[1:3]
    sheet = np.full((rows * (h + 1), columns * (w + 1), 3), 255, np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        sheet[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = image
    return sheet.repeat(scale, 0).repeat(scale, 1)


def gate_cli(weights, per_caption: int, seed: int, steps: int, guidance: float, sheet=None) -> GateResult:
    from .weights_io import load_model, read_metadata

    torch.manual_seed(0)
    result = evaluate_gate(load_model(weights), per_caption=per_caption, seed=seed, steps=steps, guidance=guidance)
    trained = read_metadata(weights).get("steps")
    print(f"{weights} (trained {trained} steps), DDIM {steps} steps, guidance {guidance}: {result.summary()}")
    if sheet is not None:
        from PIL import Image

        Image.fromarray(contact_sheet(result.images)).save(sheet)
        print(f"samples: {sheet}")
    return result
