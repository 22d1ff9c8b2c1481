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
    """The same model as ComfyUI hands it to a sampler: a denoiser of σ-space samples (scaled by
    √ᾱ = 1/√(1+σ²) for the ε-model) at one σ per batch item, returning the x0 estimate."""
    def denoiser(x, sigma, **extra_args):
        assert sigma.shape == (x.shape[0],)
        t = int(torch.argmin((SIGMAS - sigma[0]).abs()))
        s = sigma.view(-1, 1, 1, 1)
        return x - s * model(x / torch.sqrt(1 + s**2), t)
    return denoiser


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
    ours = ddim_sample(sigma_space(model), x_t * torch.sqrt(1 + sigmas[0] ** 2), sigmas, eta=eta,
                       noise_sampler=lambda sigma, sigma_next: next(replay))
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


def test_extra_args_reach_the_model_and_the_callback_sees_every_step():
    """As k-diffusion samplers: ``model(x, sigma, **extra_args)`` and one dict per step for ComfyUI's previews."""
    denoiser, calls, seen = sigma_space(ToyEps()), [], []

    def model(x, sigma, **extra_args):
        calls.append(extra_args)
        return denoiser(x, sigma)

    def check(step):  # the step's denoised is the model's x0 estimate for the step's x at its σ
        torch.testing.assert_close(step["denoised"], denoiser(step["x"], step["sigma"].expand(2)))
        seen.append((step["i"], float(step["sigma"]), float(step["sigma_hat"])))

    sigmas, x = ddim_sigmas(SIGMAS, 5), torch.randn(2, 4, 2, 2, dtype=torch.float64)
    extra = {"model_options": {"marker": 1}, "seed": 3}
    ddim_sample(model, x, sigmas, extra_args=extra, callback=check, disable=True)
    assert calls == [extra] * 5
    assert seen == [(i, float(sigmas[i]), float(sigmas[i])) for i in range(5)]

    seen.clear()
    ascending = sigmas.flip(0)
    ddim_invert(model, x, ascending, extra_args=extra, callback=lambda step: seen.append(step["i"]), disable=True)
    assert calls == [extra] * 10 and seen == [0, 1, 2, 3, 4]


def test_eta_noise_defaults_to_the_seed_in_extra_args():
    """ComfyUI puts the sampler's seed in extra_args: the η-noise must follow it, but must not replay the
    starting noise ComfyUI draws from that same seed."""
    denoiser, x = sigma_space(ToyEps()), torch.randn(1, 4, 3, 3, dtype=torch.float64)
    sigmas = ddim_sigmas(SIGMAS, 10)

    def run(eta=0.7, **kwargs):
        return ddim_sample(denoiser, x, sigmas, eta=eta, **kwargs)

    assert torch.equal(run(extra_args={"seed": 5}), run(extra_args={"seed": 5}))
    assert not torch.allclose(run(extra_args={"seed": 5}), run(extra_args={"seed": 6}))
    starting_noise = torch.Generator().manual_seed(5)  # how ComfyUI draws a sampler's starting noise
    replayed = run(noise_sampler=lambda *_: torch.randn(x.shape, generator=starting_noise, dtype=x.dtype))
    assert not torch.allclose(run(extra_args={"seed": 5}), replayed)

    def no_noise(*_):
        raise AssertionError("η = 0 draws no noise")
    assert torch.equal(run(eta=0.0, noise_sampler=no_noise), run(eta=0.0, extra_args={"seed": 5}))
