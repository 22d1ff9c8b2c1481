"""Frame attention against naive per-clip, per-frame, per-head references written out here."""

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ei2.ffam import ATTENTION_TYPES, COARSE_TYPES, _fine_coarse_keys, coarse_tokens, frame_attention


# ---------------------------------------------------------------- naive references


def naive_pool(tokens, size, stride, coarse_type):
    """(N, C) tokens of an h×w grid -> one token per s×s cell, border cells cut at the grid edge."""
    h, w = size
    grid = tokens.reshape(h, w, -1)
    cells = []
    for top in range(0, h, stride):
        for left in range(0, w, stride):
            if coarse_type == "avg":
                cell = [grid[i, j] for i in range(top, min(top + stride, h)) for j in range(left, min(left + stride, w))]
                cells.append(sum(cell) / len(cell))
            else:
                cells.append(grid[top, left])
    return torch.stack(cells)


def naive_attention(q, k, v, heads):
    """softmax(q kᵀ/√d) v, one head at a time, for (n, C) queries and (m, C) keys/values."""
    d = q.shape[-1] // heads
    outs = []
    for head in range(heads):
        cols = slice(head * d, (head + 1) * d)
        weights = torch.softmax(q[:, cols] @ k[:, cols].T / math.sqrt(d), dim=-1)
        outs.append(weights @ v[:, cols])
    return torch.cat(outs, dim=-1)


def naive_frame_attention(q, k, v, *, frames, heads, size, attention_type, coarse_stride=2, coarse_type="avg"):
    out = torch.empty_like(q)
    for first in range(0, q.shape[0], frames):  # first row of each clip
        for i in range(frames):
            if attention_type == "ffam":
                others = [first + j for j in range(frames) if j != i]
                keys = [k[first + i]] + [naive_pool(k[j], size, coarse_stride, coarse_type) for j in others]
                values = [v[first + i]] + [naive_pool(v[j], size, coarse_stride, coarse_type) for j in others]
            else:
                seen = {"sparse_causal": [0, max(i - 1, 0)], "full": range(frames), "per_frame": [i]}[attention_type]
                keys, values = [k[first + j] for j in seen], [v[first + j] for j in seen]
            out[first + i] = naive_attention(q[first + i], torch.cat(keys), torch.cat(values), heads)
    return out


def random_qkv(clips, frames, size, heads=2, head_dim=4, dtype=torch.float32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    shape = (clips * frames, size[0] * size[1], heads * head_dim)
    return [torch.randn(shape, generator=generator).to(dtype) for _ in range(3)]


# ---------------------------------------------------------------- agreement with the references


@pytest.mark.parametrize("size", [(5, 7), (3, 3), (4, 4)])
@pytest.mark.parametrize("frames", [1, 2, 5])
@pytest.mark.parametrize("clips", [1, 2])
def test_every_type_matches_naive_reference(size, frames, clips):
    q, k, v = random_qkv(clips, frames, size)
    cases = [("sparse_causal", 2, "avg"), ("full", 2, "avg"), ("per_frame", 2, "avg")]
    cases += [("ffam", s, c) for s, c in itertools.product([1, 2, 4], COARSE_TYPES)]
    for attention_type, stride, coarse_type in cases:
        options = dict(frames=frames, heads=2, size=size, attention_type=attention_type,
                       coarse_stride=stride, coarse_type=coarse_type)
        expected = naive_frame_attention(q, k, v, **options)
        torch.testing.assert_close(frame_attention(q, k, v, **options), expected, atol=1e-5, rtol=1e-5)


@settings(max_examples=25, deadline=None)
@given(
    clips=st.integers(1, 2),
    frames=st.integers(1, 4),
    h=st.integers(1, 6),
    w=st.integers(1, 6),
    heads=st.sampled_from([1, 2, 3]),
    head_dim=st.sampled_from([1, 5, 8]),
    stride=st.integers(1, 7),
    attention_type=st.sampled_from(ATTENTION_TYPES),
    coarse_type=st.sampled_from(COARSE_TYPES),
    seed=st.integers(0, 2**16),
)
def test_random_shapes_match_naive_reference(clips, frames, h, w, heads, head_dim, stride, attention_type, coarse_type, seed):
    q, k, v = random_qkv(clips, frames, (h, w), heads, head_dim, seed=seed)
    options = dict(frames=frames, heads=heads, size=(h, w), attention_type=attention_type,
                   coarse_stride=stride, coarse_type=coarse_type)
    expected = naive_frame_attention(q, k, v, **options)
    torch.testing.assert_close(frame_attention(q, k, v, **options), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("size, stride", [((7, 9), 4), ((5, 5), 2), ((6, 4), 3), ((3, 8), 5), ((2, 2), 4)])
@pytest.mark.parametrize("coarse_type", COARSE_TYPES)
def test_coarse_tokens_keep_partial_border_cells(size, stride, coarse_type):
    tokens = torch.randn(2, 3, size[0] * size[1], 6)
    pooled = coarse_tokens(tokens, size, stride, coarse_type)
    cells = math.ceil(size[0] / stride) * math.ceil(size[1] / stride)
    assert pooled.shape == (2, 3, cells, 6)
    for b, f in itertools.product(range(2), range(3)):
        torch.testing.assert_close(pooled[b, f], naive_pool(tokens[b, f], size, stride, coarse_type), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("frames, size, stride", [(5, (5, 7), 2), (3, (8, 8), 4), (2, (3, 3), 1), (4, (6, 6), 7)])
def test_ffam_key_length_is_fine_plus_coarse_others(frames, size, stride):
    _, k, v = random_qkv(2, frames, size)
    keys, values = _fine_coarse_keys(k, v, frames=frames, size=size, stride=stride, coarse_type="avg")
    tokens = size[0] * size[1]
    length = tokens + (frames - 1) * math.ceil(size[0] / stride) * math.ceil(size[1] / stride)
    assert keys.shape == values.shape == (2 * frames, length, k.shape[-1])
    assert torch.equal(keys[:, :tokens], k)  # the fine tokens of the frame itself come first


# ---------------------------------------------------------------- identities between the types


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_single_frame_is_exactly_per_frame(attention_type):
    q, k, v = random_qkv(3, 1, (4, 5))
    plain = frame_attention(q, k, v, frames=1, heads=2, size=(4, 5), attention_type="per_frame")
    assert torch.equal(frame_attention(q, k, v, frames=1, heads=2, size=(4, 5), attention_type=attention_type), plain)


@pytest.mark.parametrize("coarse_type", COARSE_TYPES)
def test_stride_one_ffam_equals_full(coarse_type):
    q, k, v = random_qkv(2, 4, (5, 6))
    options = dict(frames=4, heads=2, size=(5, 6))
    ffam = frame_attention(q, k, v, attention_type="ffam", coarse_stride=1, coarse_type=coarse_type, **options)
    torch.testing.assert_close(ffam, frame_attention(q, k, v, attention_type="full", **options), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- who sees whom


def perturbed(tensors, row):
    out = [t.clone() for t in tensors]
    for t in out:
        t[row] += torch.randn_like(t[row])
    return out


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_clips_never_mix(attention_type):
    frames = 5
    qkv = random_qkv(2, frames, (4, 4))
    before = frame_attention(*qkv, frames=frames, heads=2, size=(4, 4), attention_type=attention_type)
    changed = qkv
    for row in range(frames, 2 * frames):  # every frame of clip 1
        changed = perturbed(changed, row)
    after = frame_attention(*changed, frames=frames, heads=2, size=(4, 4), attention_type=attention_type)
    assert torch.equal(after[:frames], before[:frames])
    assert not torch.allclose(after[frames:], before[frames:])


# Which frames of a 5-frame clip change when frame 3 changes.
REACH_OF_FRAME_3 = {
    "ffam": {0, 1, 2, 3, 4},
    "full": {0, 1, 2, 3, 4},
    "sparse_causal": {3, 4},
    "per_frame": {3},
}


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_changing_frame_3_reaches_the_frames_its_rule_says(attention_type):
    qkv = random_qkv(1, 5, (4, 6))
    before = frame_attention(*qkv, frames=5, heads=2, size=(4, 6), attention_type=attention_type)
    after = frame_attention(*perturbed(qkv, 3), frames=5, heads=2, size=(4, 6), attention_type=attention_type)
    changed = {f for f in range(5) if not torch.equal(after[f], before[f])}
    assert changed == REACH_OF_FRAME_3[attention_type]


# ---------------------------------------------------------------- gradients and dtypes


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
@pytest.mark.parametrize("coarse_type", COARSE_TYPES)
def test_gradients_reach_q_k_v(attention_type, coarse_type):
    q, k, v = (t.requires_grad_() for t in random_qkv(2, 3, (5, 3)))
    out = frame_attention(q, k, v, frames=3, heads=2, size=(5, 3), attention_type=attention_type, coarse_type=coarse_type)
    (out * torch.randn_like(out)).sum().backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


@pytest.mark.parametrize("dtype, tolerance", [(torch.float16, 1e-2), (torch.bfloat16, 6e-2)])
@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
@pytest.mark.parametrize("coarse_type", COARSE_TYPES)
def test_half_precision_is_finite_and_close_to_fp32(dtype, tolerance, attention_type, coarse_type):
    q, k, v = random_qkv(2, 4, (6, 5), heads=2, head_dim=8)
    options = dict(frames=4, heads=2, size=(6, 5), attention_type=attention_type, coarse_type=coarse_type)
    half = frame_attention(q.to(dtype), k.to(dtype), v.to(dtype), **options)
    assert half.dtype == dtype and torch.isfinite(half).all()
    torch.testing.assert_close(half.float(), frame_attention(q, k, v, **options), atol=tolerance, rtol=tolerance)


# ---------------------------------------------------------------- argument errors


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(frames=3), "whole number of clips"),
        (dict(frames=0), "whole number of clips"),
        (dict(size=(4, 4)), "grid"),
        (dict(attention_type="sparse"), "ffam"),
        (dict(coarse_type="max"), "avg"),
        (dict(coarse_stride=0), "coarse_stride"),
        (dict(heads=3), "heads"),
    ],
)
def test_bad_arguments_raise_actionable_errors(change, message):
    q, k, v = random_qkv(1, 4, (4, 5), heads=2, head_dim=4)
    options = dict(frames=4, heads=2, size=(4, 5)) | change
    with pytest.raises(ValueError, match=message):
        frame_attention(q, k, v, **options)


def test_mismatched_key_shape_raises():
    q, k, v = random_qkv(1, 2, (2, 2))
    with pytest.raises(ValueError, match="shape"):
        frame_attention(q, k[:, :3], v, frames=2, heads=2, size=(2, 2))
