"""Tune-A-Video's vanilla temporal attention and the make_temporal factory."""

import math

import pytest
import torch
import torch.nn.functional as F

from ei2.stam import STAM
from ei2.temporal import TEMPORAL_TYPES, make_temporal
from ei2.vanilla import VanillaTemporalAttention

CHANNELS, HEADS = 16, 4


def random_hidden(clips, frames, tokens=5, seed=0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(clips * frames, tokens, CHANNELS, generator=generator).to(dtype)


def trained_vanilla(seed=0):
    """A vanilla module whose every parameter has been moved off its initial value."""
    torch.manual_seed(seed)
    module = VanillaTemporalAttention(CHANNELS, HEADS)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return module


def naive_vanilla(module, hidden, frames):
    """hidden + out(softmax-attention(LayerNorm(x))) over frames, looped per clip, position, head."""
    d = CHANNELS // HEADS
    out = hidden.clone()
    for first in range(0, hidden.shape[0], frames):
        for n in range(hidden.shape[1]):
            seq = F.layer_norm(hidden[first : first + frames, n], (CHANNELS,), module.norm.weight, module.norm.bias)
            q, k, v = seq @ module.to_q.weight.T, seq @ module.to_k.weight.T, seq @ module.to_v.weight.T
            heads = []
            for h in range(HEADS):
                cols = slice(h * d, (h + 1) * d)
                heads.append(torch.softmax(q[:, cols] @ k[:, cols].T / math.sqrt(d), dim=1) @ v[:, cols])
            out[first : first + frames, n] += module.to_out(torch.cat(heads, dim=1))
    return out


def test_vanilla_matches_naive_formula():
    module = trained_vanilla()
    hidden = random_hidden(2, 3)
    with torch.no_grad():
        torch.testing.assert_close(module(hidden, 3), naive_vanilla(module, hidden, 3), atol=1e-5, rtol=1e-5)


def test_vanilla_starts_as_tune_a_video_attn_temp():
    """Only the output weight is zeroed (the bias keeps nn.Linear's init) and the LayerNorm is frozen."""
    torch.manual_seed(0)
    module = VanillaTemporalAttention(CHANNELS, HEADS)
    assert torch.equal(module.to_out.weight, torch.zeros(CHANNELS, CHANNELS))
    bound = 1 / math.sqrt(CHANNELS)  # nn.Linear's default bias init: U(-1/√fan_in, 1/√fan_in)
    assert module.to_out.bias.abs().max() <= bound and module.to_out.bias.abs().min() > 0
    assert not any(p.requires_grad for p in module.norm.parameters())
    assert torch.equal(module.norm.weight, torch.ones(CHANNELS)) and torch.equal(module.norm.bias, torch.zeros(CHANNELS))
    assert {name for name, p in module.named_parameters() if p.requires_grad} == {
        "to_q.weight", "to_k.weight", "to_v.weight", "to_out.weight", "to_out.bias"}
    # So the inflated model starts with a constant shift: the output bias, at every frame and position.
    hidden = random_hidden(2, 4)
    with torch.no_grad():
        torch.testing.assert_close(module(hidden, 4), hidden + module.to_out.bias, atol=1e-6, rtol=0)


def test_vanilla_learns_a_frame_dependent_change_in_one_step():
    torch.manual_seed(0)
    module = VanillaTemporalAttention(CHANNELS, HEADS)
    hidden = random_hidden(1, 4)
    target = random_hidden(1, 4, seed=1)
    optimiser = torch.optim.AdamW(module.parameters(), lr=1e-2)
    F.mse_loss(module(hidden, 4), target).backward()
    optimiser.step()
    with torch.no_grad():
        branch = module(hidden, 4) - hidden
    assert branch.abs().max() > 1e-3
    assert not torch.allclose(branch[0], branch[1])  # not one constant offset for all frames


def test_vanilla_never_mixes_clips():
    module = trained_vanilla()
    hidden = random_hidden(2, 4)
    changed = hidden.clone()
    changed[4:] += 1
    with torch.no_grad():
        before, after = module(hidden, 4), module(changed, 4)
    assert torch.equal(after[:4], before[:4])
    assert not torch.allclose(after[4:], before[4:])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_vanilla_half_hidden_with_fp32_parameters(dtype):
    module = trained_vanilla()
    hidden = random_hidden(2, 4)
    with torch.no_grad():
        out = module(hidden.to(dtype), 4)
        reference = module(hidden.to(dtype).float(), 4)
    assert out.dtype == dtype and torch.isfinite(out).all()
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(out.float(), reference, atol=4 * eps, rtol=4 * eps)


def test_vanilla_rejects_a_batch_that_is_not_whole_clips():
    with pytest.raises(ValueError, match="frames=3"):
        VanillaTemporalAttention(CHANNELS, HEADS)(random_hidden(1, 4), 3)


# ---------------------------------------------------------------- factory


def test_make_temporal_builds_each_type():
    assert make_temporal("none", CHANNELS, HEADS) is None
    assert type(make_temporal("vanilla", CHANNELS, HEADS)) is VanillaTemporalAttention
    stam = make_temporal("stam", CHANNELS, HEADS, centering_type="channels", mapping_type="none")
    assert type(stam) is STAM and (stam.centering_type, stam.mapping_type) == ("channels", "none")
    assert stam.heads == HEADS and stam.to_out.weight.shape == (CHANNELS, CHANNELS)
    assert set(TEMPORAL_TYPES) == {"stam", "vanilla", "none"}


def test_make_temporal_errors_name_the_options():
    with pytest.raises(ValueError, match="choose one of .*stam.*vanilla.*none"):
        make_temporal("tav", CHANNELS, HEADS)
    for temporal_type in ("vanilla", "none"):
        with pytest.raises(ValueError, match="centering_type.*only apply to temporal_type='stam'"):
            make_temporal(temporal_type, CHANNELS, HEADS, centering_type="frames")
    with pytest.raises(ValueError, match="choose one of"):
        make_temporal("stam", CHANNELS, HEADS, mapping_type="softmax")
    with pytest.raises(TypeError):
        make_temporal("stam", CHANNELS, HEADS, centring="frames")
