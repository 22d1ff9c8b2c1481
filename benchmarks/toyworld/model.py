"""The toy text-to-image diffusion model: a small SD-pattern UNet on 32×32 RGB pixels.

The 32×32×3 image is folded to 16×16×12 (space-to-depth), so the transformer blocks see a
16×16 and an 8×8 token grid, like SD's latent grids in miniature. Stages (one ResBlock and one
SpatialTransformer each, as SD's ``depth=1``): down at 16×16 and 8×8, middle at 8×8, up at 8×8
and 16×16 — five transformer blocks in all.

Noise levels are k-diffusion's σ (``x_σ = x0 + σ·ε``), the same space as ``ei2.ddim``. Inside,
the network is EDM-preconditioned (Karras et al. 2022, σ_data = 0.5): it predicts a mix of
clean image and noise whose scale is the same at every σ, which a small model on pixels learns
with much less residual noise than a raw ε-prediction. ``denoise`` returns x0 (k-diffusion's
denoiser, what ``ei2.ddim`` calls); ``predict_eps`` returns ε (what ``ei2.tuning`` trains).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from einops import repeat
from torch import nn

from .blocks import ResBlock, SpatialTransformer, TransformerBlock, group_norm, noise_embedding
from .text import TextEncoder

SIGMA_DATA = 0.5


@dataclass(frozen=True)
class ToyConfig:
    # Small enough to train in about an hour on two shared CPU cores (0.84 M parameters).
    channels: tuple[int, int] = (32, 64)
    heads: int = 2
    context_dim: int = 64
    embedding_dim: int = 128
    fold: int = 2  # space-to-depth factor of the 32×32 image


class ToyT2I(nn.Module):
    def __init__(self, config: ToyConfig = ToyConfig()):
        super().__init__()
        self.config = config
        c1, c2 = config.channels
        embed, heads, context = config.embedding_dim, config.heads, config.context_dim
        pixels = 3 * config.fold**2
        self.text = TextEncoder(context)
        self.noise_mlp = nn.Sequential(nn.Linear(embed, embed), nn.SiLU(), nn.Linear(embed, embed))
        self.conv_in = nn.Conv2d(pixels, c1, 3, padding=1)
        self.down1 = ResBlock(c1, c1, embed), SpatialTransformer(c1, heads, context)
        self.downsample = nn.Conv2d(c1, c1, 3, stride=2, padding=1)
        self.down2 = ResBlock(c1, c2, embed), SpatialTransformer(c2, heads, context)
        self.middle = ResBlock(c2, c2, embed), SpatialTransformer(c2, heads, context), ResBlock(c2, c2, embed)
        self.up2 = ResBlock(2 * c2, c2, embed), SpatialTransformer(c2, heads, context)
        self.upsample = nn.Conv2d(c2, c2, 3, padding=1)
        self.up1 = ResBlock(c2 + c1, c1, embed), SpatialTransformer(c1, heads, context)
        self.norm_out = group_norm(c1)
        self.conv_out = nn.Conv2d(c1, pixels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        # Tuples are not registered as submodules: register every stage's layers explicitly.
        for name in ("down1", "down2", "middle", "up2", "up1"):
            setattr(self, name, nn.ModuleList(getattr(self, name)))

    def transformer_blocks(self) -> dict[str, TransformerBlock]:
        """Every transformer block by a stable name, in the order the UNet runs them."""
        stages = {"down1": self.down1, "down2": self.down2, "middle": self.middle, "up2": self.up2, "up1": self.up1}
        return {name: layer.block for name, stage in stages.items() for layer in stage
                if isinstance(layer, SpatialTransformer)}

    def network(self, x_in, c_noise, context, frames: int = 1):
        """The raw UNet: ``(B, 3, H, W)`` scaled input, ``(B,)`` noise conditioning, ``(B, L, D)`` context."""
        embedding = self.noise_mlp(noise_embedding(c_noise, self.config.embedding_dim))

        def run(stage, h):
            for layer in stage:
                h = layer(h, embedding) if isinstance(layer, ResBlock) else layer(h, context, frames=frames)
            return h

        h1 = run(self.down1, self.conv_in(F.pixel_unshuffle(x_in, self.config.fold)))
        h2 = run(self.down2, self.downsample(h1))
        h = run(self.middle, h2)
        h = run(self.up2, torch.cat([h, h2], dim=1))
        h = self.upsample(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        h = run(self.up1, torch.cat([h, h1], dim=1))
        return F.pixel_shuffle(self.conv_out(F.silu(self.norm_out(h))), self.config.fold)

    def denoise(self, x, sigma, context, frames: int = 1):
        """x0 estimate of the σ-space sample ``x`` ``(B, 3, H, W)``; ``sigma`` scalar or ``(B,)``.

        ``context`` is ``(B, L, D)`` or ``(1, L, D)`` (one prompt for the whole batch).
        With ``frames > 1`` the batch is clip-major (row ``b·F + f``), as ``ei2.ffam`` expects.
        """
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1).expand(x.shape[0])
        if context.shape[0] == 1 and x.shape[0] > 1:
            context = repeat(context, "1 l d -> b l d", b=x.shape[0])
        s = sigma.reshape(-1, 1, 1, 1)
        c_skip = SIGMA_DATA**2 / (s**2 + SIGMA_DATA**2)
        c_out = s * SIGMA_DATA / (s**2 + SIGMA_DATA**2).sqrt()
        c_in = 1 / (s**2 + SIGMA_DATA**2).sqrt()
        return c_skip * x + c_out * self.network(c_in * x, sigma.log() / 4, context, frames)

    def predict_eps(self, x, sigma, context, frames: int = 1):
        sigma_b = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1)
        return (x - self.denoise(x, sigma, context, frames)) / sigma_b

    def config_dict(self) -> dict:
        return asdict(self.config)


def config_from_dict(values: dict) -> ToyConfig:
    known = {f.name for f in fields(ToyConfig)}
    return ToyConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in known})


def training_loss(model: ToyT2I, x0, sigma, context, noise):
    """EDM's loss: the x0 error weighted so that the network's own target has unit scale at every σ."""
    s = sigma.reshape(-1, 1, 1, 1)
    weight = (s**2 + SIGMA_DATA**2) / (s * SIGMA_DATA) ** 2
    return (weight * (model.denoise(x0 + noise * s, sigma, context) - x0) ** 2).mean()
