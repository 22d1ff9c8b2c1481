"""STAM: identity at init, the variance bound under adversarial training, dtypes, clip separation."""

import itertools
import math

import pytest
import torch

from ei2.stam import CENTERING_TYPES, MAPPING_TYPES, STAM, instance_center, spectral_normalized, symmetric_attention

ALL_OPTIONS = list(itertools.product(CENTERING_TYPES, MAPPING_TYPES))
CHANNELS, HEADS = 16, 2


def make_stam(centering_type="frames", mapping_type="spectral", seed=0, gate=None):
    torch.manual_seed(seed)
    stam = STAM(CHANNELS, HEADS, centering_type=centering_type, mapping_type=mapping_type)
    if gate is not None:
        with torch.no_grad():
            stam.gate.copy_(gate * torch.randn(CHANNELS))
    return stam


def random_hidden(clips, frames, tokens=6, seed=1, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    # A shared offset per clip and position: the static content centering should remove.
    static = 3 * torch.randn(clips, 1, tokens, CHANNELS, generator=generator)
    moving = torch.randn(clips, frames, tokens, CHANNELS, generator=generator)
    return (static + moving).reshape(clips * frames, tokens, CHANNELS).to(dtype)


def per_clip(x, frames):
    """(B·F, N, C) -> (B, F, N, C)."""
    return x.reshape(-1, frames, *x.shape[1:])


def naive_centred(hidden, frames, centering_type):
    x = per_clip(hidden, frames)
    return x - (x.mean(dim=1, keepdim=True) if centering_type == "frames" else x.mean(dim=-1, keepdim=True))


def naive_stam(stam, hidden, frames):
    """The STAM formula written out per clip, position and head, with explicit normalisations."""
    x = naive_centred(hidden, frames, stam.centering_type)
    d = CHANNELS // HEADS
    wq, wk, wv, wo = (m.weight for m in (stam.to_q, stam.to_k, stam.to_v, stam.to_out))
    spectral = stam.mapping_type == "spectral"
    if spectral:
        wv = wv / torch.linalg.svdvals(wv)[0]
        wo = wo / torch.linalg.svdvals(wo)[0]
    out = torch.zeros_like(x)
    for b, n in itertools.product(range(x.shape[0]), range(x.shape[2])):
        seq = x[b, :, n]  # (F, C)
        heads = []
        for h in range(HEADS):
            cols = slice(h * d, (h + 1) * d)
            scores = (seq @ wq.T)[:, cols] @ (seq @ wk.T)[:, cols].T / math.sqrt(d)
            if spectral:
                e = scores.exp()
                weights = e / torch.sqrt(e.sum(1, keepdim=True) * e.sum(0, keepdim=True))
            else:
                weights = scores.softmax(dim=1)
            heads.append(weights @ (seq @ wv.T)[:, cols])
        mapped = torch.cat(heads, dim=1) @ wo.T
        if spectral:
            mapped = mapped - mapped.mean(0)
        out[b, :, n] = mapped * torch.tanh(stam.gate)
    return hidden + out.reshape(hidden.shape)


def branch_energy_ratio(stam, hidden, frames):
    """Σ_t‖branch_t‖² / Σ_t‖x̃_t‖² per clip and position."""
    with torch.no_grad():
        branch = per_clip(stam(hidden, frames) - hidden, frames)
    centred = naive_centred(hidden, frames, stam.centering_type)
    return branch.pow(2).sum(dim=(1, 3)) / centred.pow(2).sum(dim=(1, 3))


def train_to_maximise_output_variance(stam, hidden, frames, steps=20, lr=0.1):
    optimiser = torch.optim.Adam(stam.parameters(), lr=lr)
    for _ in range(steps):
        out = per_clip(stam(hidden, frames), frames)
        loss = -(out - out.mean(dim=1, keepdim=True)).pow(2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()


# ---------------------------------------------------------------- building blocks


@pytest.mark.parametrize("centering_type, axis", [("frames", -2), ("channels", -1)])
def test_instance_center_zeroes_the_mean_and_keeps_the_deviations(centering_type, axis):
    x = 5 + 2 * torch.randn(7, 6, 16)
    centred = instance_center(x, centering_type)
    assert centred.mean(dim=axis).abs().max() < 1e-5
    # No rescaling, unlike LayerNorm: differences along the axis are untouched.
    torch.testing.assert_close(centred.diff(dim=axis), x.diff(dim=axis), atol=1e-5, rtol=0)


def test_spectral_normalized_has_unit_largest_singular_value():
    weight = 3 * torch.randn(16, 16)
    assert torch.linalg.svdvals(spectral_normalized(weight))[0].item() == pytest.approx(1.0, abs=1e-5)
    assert torch.equal(spectral_normalized(torch.zeros(4, 4)), torch.zeros(4, 4))


def test_symmetric_attention_matches_definition_and_never_amplifies():
    scores = 4 * torch.randn(50, 3, 6, 6)
    e = scores.double().exp()
    expected = e / torch.sqrt(e.sum(-1, keepdim=True) * e.sum(-2, keepdim=True))
    kernel = symmetric_attention(scores)
    torch.testing.assert_close(kernel.double(), expected, atol=1e-6, rtol=1e-5)
    assert torch.linalg.matrix_norm(kernel, ord=2).max() <= 1 + 1e-5
    # The row softmax it replaces does amplify: spectral norms above 1 occur.
    assert torch.linalg.matrix_norm(scores.softmax(-1), ord=2).max() > 1.2
    # Huge scores stay finite because the normalisation runs in log space.
    assert torch.isfinite(symmetric_attention(1e4 * torch.randn(4, 6, 6))).all()


# ---------------------------------------------------------------- the module


@pytest.mark.parametrize("centering_type, mapping_type", ALL_OPTIONS)
def test_matches_naive_formula(centering_type, mapping_type):
    stam = make_stam(centering_type, mapping_type, gate=1.0)
    hidden = random_hidden(2, 4, tokens=3)
    with torch.no_grad():
        torch.testing.assert_close(stam(hidden, 4), naive_stam(stam, hidden, 4), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("centering_type, mapping_type", ALL_OPTIONS)
def test_identity_at_init(centering_type, mapping_type):
    hidden = random_hidden(2, 5)
    assert torch.equal(make_stam(centering_type, mapping_type)(hidden, 5), hidden)


@pytest.mark.parametrize("mapping_type", MAPPING_TYPES)
def test_single_frame_is_untouched_even_when_trained(mapping_type):
    stam = make_stam("frames", mapping_type, gate=2.0)
    hidden = random_hidden(3, 1)
    assert torch.equal(stam(hidden, 1), hidden)


@pytest.mark.parametrize("centering_type", CENTERING_TYPES)
def test_spectral_mapping_bounds_the_branch_after_adversarial_training(centering_type):
    frames = 5
    stam = make_stam(centering_type, "spectral")
    hidden = random_hidden(2, frames)
    train_to_maximise_output_variance(stam, hidden, frames)
    assert stam.gate.abs().min() > 0.5  # training really moved the gate off its zero start
    assert branch_energy_ratio(stam, hidden, frames).max() <= 1 + 1e-5
    # Shift-restricted: the mean over frames of every clip and position is unchanged.
    with torch.no_grad():
        out = per_clip(stam(hidden, frames), frames)
    torch.testing.assert_close(out.mean(dim=1), per_clip(hidden, frames).mean(dim=1), atol=1e-5, rtol=0)


@pytest.mark.parametrize("centering_type", CENTERING_TYPES)
def test_unnormalised_mapping_breaks_the_bound_under_the_same_training(centering_type):
    frames = 5
    stam = make_stam(centering_type, "none")
    hidden = random_hidden(2, frames)
    train_to_maximise_output_variance(stam, hidden, frames)
    assert branch_energy_ratio(stam, hidden, frames).max() > 2


@pytest.mark.parametrize("centering_type, mapping_type", ALL_OPTIONS)
def test_only_the_gate_learns_at_init_then_every_parameter_does(centering_type, mapping_type):
    hidden = random_hidden(2, 4)
    stam = make_stam(centering_type, mapping_type)
    stam(hidden, 4).pow(2).sum().backward()
    for name, parameter in stam.named_parameters():
        if name == "gate":
            assert parameter.grad.abs().min() > 0
        else:
            assert torch.equal(parameter.grad, torch.zeros_like(parameter)), name

    stam = make_stam(centering_type, mapping_type, gate=0.5)
    stam(hidden, 4).pow(2).sum().backward()
    for name, parameter in stam.named_parameters():
        assert torch.isfinite(parameter.grad).all() and parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("centering_type, mapping_type", ALL_OPTIONS)
def test_half_hidden_with_fp32_parameters(dtype, centering_type, mapping_type):
    stam = make_stam(centering_type, mapping_type, gate=1.0)
    hidden = random_hidden(2, 4)
    with torch.no_grad():
        out = stam(hidden.to(dtype), 4)
        reference = stam(hidden.to(dtype).float(), 4)
    assert out.dtype == dtype and stam.gate.dtype == torch.float32
    assert torch.isfinite(out).all()
    # The math runs in fp32 either way; only the rounding of the branch to the half type differs.
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(out.float(), reference, atol=4 * eps, rtol=4 * eps)


@pytest.mark.parametrize("centering_type, mapping_type", ALL_OPTIONS)
def test_clips_never_mix(centering_type, mapping_type):
    stam = make_stam(centering_type, mapping_type, gate=1.0)
    hidden = random_hidden(2, 4)
    changed = hidden.clone()
    changed[4:] += torch.randn_like(changed[4:])
    with torch.no_grad():
        before, after = stam(hidden, 4), stam(changed, 4)
    assert torch.equal(after[:4], before[:4])
    assert not torch.allclose(after[4:], before[4:])


@pytest.mark.parametrize("option", [dict(centering_type="layer"), dict(mapping_type="softmax")])
def test_unknown_options_name_the_choices(option):
    with pytest.raises(ValueError, match="choose one of"):
        STAM(CHANNELS, HEADS, **option)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="heads"):
        STAM(10, 3)
    with pytest.raises(ValueError, match="frames=3"):
        make_stam()(random_hidden(2, 2), 3)


def test_normalized_weights_are_cached_without_grad_and_follow_weight_updates():
    torch.manual_seed(0)
    stam = STAM(8, 2)
    with torch.no_grad():
        stam.gate.fill_(1.0)
    x = torch.randn(2 * 3, 5, 8)
    with torch.no_grad():
        first = stam(x, 3)
        cached = stam.normalized_weight(stam.to_v)
        assert stam.normalized_weight(stam.to_v) is cached  # no second SVD for the same weights
        torch.testing.assert_close(cached, spectral_normalized(stam.to_v.weight))
        stam.to_v.weight.mul_(2.0).add_(0.1)  # an in-place update bumps the version: recomputed
        assert stam.normalized_weight(stam.to_v) is not cached
        torch.testing.assert_close(stam.normalized_weight(stam.to_v), spectral_normalized(stam.to_v.weight))
        assert not torch.equal(stam(x, 3), first)
    # With gradients the normalisation stays in the graph.
    stam(x, 3).square().sum().backward()
    assert stam.to_v.weight.grad is not None and stam.to_v.weight.grad.abs().sum() > 0
