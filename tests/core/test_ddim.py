"""DDIM sampling and inversion against diffusers' DDIMScheduler / DDIMInverseScheduler as the oracle."""
from __future__ import annotations

import pytest
import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler

from ei2.ddim import ddim_invert, ddim_sample, ddim_sigmas, ddim_timesteps

SD15 = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
            clip_sample=False, set_alpha_to_one=True, steps_offset=1, timestep_spacing="leading")


def sd15_alphas_cumprod():
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, dim=0)


ALPHAS = sd15_alphas_cumprod()
SIGMAS = ((1 - ALPHAS) / ALPHAS).sqrt()  # what ComfyUI's model_sampling.sigmas holds for SD 1.x


class ToyEps(torch.nn.Module):
    """A smooth, nonlinear, timestep-dependent ε-model on DDPM-space inputs (the oracle's view)."""

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.mix = torch.randn(4, 4, generator=generator, dtype=torch.float64) * 0.5

    def forward(self, x_t, t):
        phase = float(t) / 1000
        return torch.tanh(torch.einsum("oc,bchw->bohw", self.mix, x_t) + phase) * 0.8 + 0.1 * x_t


def sigma_space(model):
    """The same model seen from σ-space, as ComfyUI presents it: x_σ is scaled by √ᾱ = 1/√(1+σ²)."""
    def eps(x, sigma):
        t = int(torch.argmin((SIGMAS - sigma).abs()))
        return model(x / torch.sqrt(1 + sigma**2), t)
    return eps


def test_timesteps_match_diffusers_leading_spacing():
    for steps in (1, 7, 20, 30, 50, 999):
        scheduler = DDIMScheduler(**SD15)
        scheduler.set_timesteps(steps)
        assert torch.equal(ddim_timesteps(steps).flip(0), scheduler.timesteps)
    assert ddim_timesteps(50)[[0, -1]].tolist() == [1, 981]
    with pytest.raises(ValueError, match="steps must be between 1 and 1000"):
        ddim_timesteps(0)


@pytest.mark.parametrize("steps", [10, 30, 50])
@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_sampling_matches_diffusers(steps, eta):
    model = ToyEps()
    scheduler = DDIMScheduler(**SD15)
    scheduler.set_timesteps(steps)
    generator = torch.Generator().manual_seed(1)
    x_t = torch.randn(2, 4, 5, 6, generator=generator, dtype=torch.float64)
    noises = [torch.randn(x_t.shape, generator=generator, dtype=torch.float64) for _ in range(steps)]

    expected = x_t
    for t, noise in zip(scheduler.timesteps, noises):
        expected = scheduler.step(model(expected, t), t, expected, eta=eta, variance_noise=noise).prev_sample

    sigmas = ddim_sigmas(SIGMAS, steps)
    replay = iter(noises)  # ddim_sample gets the oracle's noise draws, in order
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch, "randn", lambda *a, **k: next(replay))
        ours = ddim_sample(sigma_space(model), x_t * torch.sqrt(1 + sigmas[0] ** 2), sigmas, eta=eta)
    # diffusers returns the DDPM-space sample at ᾱ = 1, which is the σ-space sample at σ = 0.
    torch.testing.assert_close(ours, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("steps", [10, 50])
def test_inversion_matches_diffusers(steps):
    model = ToyEps()
    scheduler = DDIMInverseScheduler(**SD15)
    scheduler.set_timesteps(steps)
    x0 = torch.randn(2, 4, 5, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)

    expected = x0
    for t in scheduler.timesteps:
        expected = scheduler.step(model(expected, t), t, expected).prev_sample

    sigmas = ddim_sigmas(SIGMAS, steps).flip(0)
    ours = ddim_invert(sigma_space(model), x0, sigmas)  # σ-space result ...
    ours = ours / torch.sqrt(1 + sigmas[-1] ** 2)  # ... in DDPM space, as diffusers returns it
    torch.testing.assert_close(ours, expected, atol=1e-4, rtol=0)


def test_invert_then_sample_returns_near_the_start():
    model = ToyEps()
    x0 = torch.randn(1, 4, 6, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    errors = []
    for steps in (10, 50, 200):
        sigmas = ddim_sigmas(SIGMAS, steps)
        back = ddim_sample(sigma_space(model), ddim_invert(sigma_space(model), x0, sigmas.flip(0)), sigmas)
        errors.append((back - x0).abs().mean().item())
    fresh = ddim_sample(sigma_space(model), torch.randn_like(x0) * sigmas[0], ddim_sigmas(SIGMAS, 50))
    assert errors[-1] < errors[0] and errors[1] < 0.05 * (fresh - x0).abs().mean().item()


def test_callback_sees_every_step():
    seen = []
    sigmas = ddim_sigmas(SIGMAS, 5)
    ddim_sample(sigma_space(ToyEps()), torch.zeros(1, 4, 2, 2, dtype=torch.float64), sigmas,
                callback=lambda i, x, denoised: seen.append(i))
    assert seen == [0, 1, 2, 3, 4]
