"""Spectral clipping: W / max(1, σ̂), σ̂ from a persistent power iteration, checked against the exact SVD."""

import copy

import pytest
import torch

from ei2.spectral import SpectrallyClippedLinear, settle


def exact_norm(weight):
    return torch.linalg.matrix_norm(weight.detach().double(), ord=2).item()


def clipped(rows=12, cols=9, scale=3.0, seed=0):
    torch.manual_seed(seed)
    layer = SpectrallyClippedLinear(cols, rows)
    with torch.no_grad():
        layer.weight.mul_(scale)
    return layer


def adam_step(layer, x, lr):
    """One training step that pushes the output norm up (and so the weight's norm)."""
    optimiser = torch.optim.Adam(layer.parameters(), lr=lr)
    loss = -layer(x).square().sum()
    optimiser.zero_grad()
    loss.backward()
    optimiser.step()


def test_settled_clip_is_the_exact_spectral_normalisation_above_one():
    layer = clipped(scale=3.0)
    assert exact_norm(layer.weight) > 1.5
    settle(layer)
    assert layer.norm_estimate().item() == pytest.approx(exact_norm(layer.weight), rel=1e-5)
    assert exact_norm(layer.clipped_weight()) == pytest.approx(1.0, abs=1e-5)
    x = torch.randn(5, 9)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), x @ (layer.weight / exact_norm(layer.weight)).T, atol=1e-5, rtol=1e-4)


def test_a_weight_with_norm_below_one_is_used_unchanged():
    torch.manual_seed(0)
    layer = SpectrallyClippedLinear(8, 8)
    with torch.no_grad():
        torch.nn.init.orthogonal_(layer.weight)
        layer.weight.mul_(0.7)
    settle(layer)
    assert torch.equal(layer.clipped_weight(), layer.weight)


def test_a_zero_weight_stays_zero_and_the_estimate_recovers_once_it_grows():
    layer = SpectrallyClippedLinear(6, 4)
    with torch.no_grad():
        layer.weight.zero_()
    settle(layer)
    assert torch.equal(layer.clipped_weight(), torch.zeros(4, 6))
    for vector in (layer.left_vector, layer.right_vector):
        assert vector.norm().item() == pytest.approx(1.0, abs=1e-6)  # kept, not collapsed to zero
    with torch.no_grad():
        layer.weight.copy_(5 * torch.randn(4, 6))
    settle(layer)
    assert layer.norm_estimate().item() == pytest.approx(exact_norm(layer.weight), rel=1e-5)


def test_the_estimate_never_exceeds_the_true_norm_while_training():
    """σ̂ = uᵀWv with unit u, v is a Rayleigh quotient: a lower bound, however the weight moves."""
    layer = clipped(scale=1.0)
    x = torch.randn(32, 9)
    for _ in range(40):
        adam_step(layer, x, lr=0.2)
        assert layer.norm_estimate().item() <= exact_norm(layer.weight) * (1 + 1e-6)


def test_one_power_step_per_weight_update_and_none_without_gradients():
    layer = clipped()
    x = torch.randn(3, 9)
    with torch.no_grad():
        layer(x)
    assert layer._estimated_version is None  # sampling never iterates

    vectors = lambda: (layer.left_vector.clone(), layer.right_vector.clone())  # noqa: E731
    before = vectors()
    layer(x).sum().backward()
    after_first = vectors()
    assert not torch.equal(before[0], after_first[0])
    layer(x).sum().backward()  # same weights (e.g. recomputed under gradient checkpointing): no step
    assert all(torch.equal(a, b) for a, b in zip(after_first, vectors()))
    with torch.no_grad():
        layer.weight.add_(0.1)  # an update bumps the weight's version
    layer(x).sum().backward()
    assert not torch.equal(after_first[0], vectors()[0])


def test_no_svd_runs_in_training_or_sampling(monkeypatch):
    """What docs/method.md claims: tuning steps (one_shot_tune: loss, backward, clipping, AdamW), the settle after
    tuning and DDIM sampling steps of a STAM model never call an SVD-based norm."""
    from einops import rearrange

    from ei2.ddim import ddim_sample, ddim_sigmas
    from ei2.inflation import InflateOptions, build_temporal_modules, finish_tuning, tuning_parameters
    from ei2.tuning import one_shot_tune

    modules = build_temporal_modules({"block": (8, 2)}, InflateOptions(mapping_type="spectral"))
    tuning = tuning_parameters(modules, {}, "temporal")
    spectral = [m for m in modules.modules() if isinstance(m, SpectrallyClippedLinear)]
    calls = []
    for layer in spectral:
        layer.register_forward_hook(lambda *_: calls.append(1))

    def refuse(*args, **kwargs):
        raise AssertionError("an SVD-based norm ran")

    for name in ("svd", "svdvals", "matrix_norm", "norm"):
        monkeypatch.setattr(torch.linalg, name, refuse)
    frames = 4

    def predict_eps(x, sigma):  # the latent's pixels as tokens through STAM: (F, C, H, W) -> (F, H·W, C)
        tokens = modules["block"](rearrange(x, "f c h w -> f (h w) c"), frames)
        return rearrange(tokens, "f (h w) c -> f c h w", h=x.shape[-2])

    x0 = torch.randn(frames, 8, 3, 3, generator=torch.Generator().manual_seed(0))
    one_shot_tune(predict_eps, x0, torch.linspace(0.1, 10.0, 50), tuning.params, steps=3, learning_rate=1e-3, seed=0)
    finish_tuning(modules, tuning)
    sigmas = ddim_sigmas(torch.linspace(0.1, 10.0, 50), 3)
    with torch.no_grad():
        ddim_sample(lambda x, sigma: x - sigma.view(-1, 1, 1, 1) * predict_eps(x, sigma), x0 * sigmas[0], sigmas)
    assert spectral and len(calls) >= len(spectral) * 6  # the spectral layers ran in every step


def test_estimates_are_buffers_that_move_save_and_copy_with_the_module():
    layer = clipped()
    settle(layer)
    state = layer.state_dict()
    assert {"weight", "left_vector", "right_vector"} <= set(state)
    restored = SpectrallyClippedLinear(9, 12)
    restored.load_state_dict(state)
    x = torch.randn(4, 9)
    with torch.no_grad():
        assert torch.equal(restored(x), layer(x))
        assert torch.equal(copy.deepcopy(layer)(x), layer(x))
    doubled = copy.deepcopy(layer).double()
    assert doubled.left_vector.dtype == torch.float64


def test_refuses_a_bias():
    with pytest.raises(ValueError, match="no bias"):
        SpectrallyClippedLinear(4, 4, bias=True)
