"""The toy UNet: σ-space denoiser conventions, and the two places where the EI² core plugs in."""
import pytest
import torch

from benchmarks.toyworld.model import SIGMA_DATA, ToyConfig, ToyT2I
from benchmarks.toyworld.text import MAX_WORDS, VOCABULARY, tokenize
from ei2.temporal import make_temporal

TINY = ToyConfig(channels=(8, 16), heads=2, context_dim=16, embedding_dim=16)


def randomised(config=TINY, seed=0):
    """A model with every parameter random (the zero-initialised outputs would hide the attention)."""
    torch.manual_seed(seed)
    model = ToyT2I(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model.eval()


def test_untrained_model_is_the_optimal_denoiser_of_zero_mean_data():
    # Zero-initialised output: x0 estimate = c_skip·x, the MMSE denoiser of data with std σ_data.
    torch.manual_seed(0)
    model = ToyT2I(TINY)
    x, sigma = torch.randn(2, 3, 32, 32), torch.tensor([0.5, 3.0])
    context = model.text.encode(["a red circle on a grey background", ""])
    expected = x * (SIGMA_DATA**2 / (sigma**2 + SIGMA_DATA**2)).view(-1, 1, 1, 1)
    assert torch.allclose(model.denoise(x, sigma, context), expected)


def test_predict_eps_inverts_x_sigma():
    model = randomised()
    x0, eps, sigma = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32), torch.tensor([0.7, 2.0])
    context = model.text.encode(["", ""])
    x = x0 + sigma.view(-1, 1, 1, 1) * eps
    assert torch.allclose(x - sigma.view(-1, 1, 1, 1) * model.predict_eps(x, sigma, context),
                          model.denoise(x, sigma, context), atol=1e-5)


def test_prompt_changes_the_output():
    model = randomised()
    x = torch.randn(1, 3, 32, 32)
    red, blue = (model.denoise(x, 1.0, model.text.encode([p])) for p in
                 ("a red circle on a grey background", "a blue circle on a grey background"))
    assert not torch.allclose(red, blue)


def test_five_transformer_blocks_in_sd_order():
    blocks = ToyT2I(TINY).transformer_blocks()
    assert list(blocks) == ["down1", "down2", "middle", "up2", "up1"]
    for block in blocks.values():
        assert [name for name, _ in block.named_children()][:6] == ["norm1", "norm2", "norm3", "attn1", "attn2", "ff"]
        assert block.temporal is None and block.attn1.frame_options is None


def clip_batch(clips=2, frames=3, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(clips * frames, 3, 32, 32, generator=generator)


def set_frame_attention(model, **options):
    for block in model.transformer_blocks().values():
        block.attn1.frame_options = options


@pytest.mark.parametrize("attention_type", ["ffam", "sparse_causal", "full", "per_frame"])
def test_frame_attention_of_one_frame_is_image_attention(attention_type):
    model = randomised()
    x, context = clip_batch(clips=2, frames=1), model.text.encode(["", ""])
    before = model.denoise(x, 1.5, context, frames=1)
    set_frame_attention(model, attention_type=attention_type)
    assert torch.allclose(model.denoise(x, 1.5, context, frames=1), before, atol=1e-5)


@pytest.mark.parametrize("attention_type", ["ffam", "sparse_causal"])
def test_frame_attention_mixes_frames_of_a_clip_but_never_clips(attention_type):
    model = randomised()
    set_frame_attention(model, attention_type=attention_type, coarse_stride=2)
    x, context = clip_batch(clips=2, frames=3), model.text.encode([""])
    out = model.denoise(x, 1.5, context, frames=3)
    changed = x.clone()
    changed[0] += 1.0  # frame 0 of clip 0: every frame of clip 0 sees it (sparse-causal: as first frame)
    out_changed = model.denoise(changed, 1.5, context, frames=3)
    assert not torch.allclose(out_changed[1:3], out[1:3], atol=1e-4)
    assert torch.allclose(out_changed[3:], out[3:], atol=1e-5)


@pytest.mark.parametrize("temporal_type", ["stam", "vanilla"])
def test_temporal_module_runs_after_the_feed_forward(temporal_type, monkeypatch):
    model = randomised()
    x, context = clip_batch(clips=1, frames=4), model.text.encode([""])
    block = model.transformer_blocks()["middle"]
    seen = {}
    module = make_temporal(temporal_type, 16, 2)
    original_ff = block.ff.forward

    def ff(h):
        seen["ff_done"] = True
        return original_ff(h)

    def temporal(hidden, frames):
        seen["frames"], seen["after_ff"] = frames, seen.get("ff_done", False)
        return module(hidden, frames)

    monkeypatch.setattr(block.ff, "forward", ff)
    block.temporal = temporal
    model.denoise(x, 1.5, context, frames=4)
    assert seen == {"ff_done": True, "frames": 4, "after_ff": True}


def test_fresh_stam_leaves_the_model_unchanged():
    model = randomised()
    x, context = clip_batch(clips=1, frames=4), model.text.encode([""])
    before = model.denoise(x, 1.5, context, frames=4)
    for name, block in model.transformer_blocks().items():
        block.temporal = make_temporal("stam", block.attn1.to_q.in_features, 2)
    assert torch.allclose(model.denoise(x, 1.5, context, frames=4), before, atol=1e-5)


def test_tokenizer_pads_and_refuses_unknown_words():
    ids = tokenize(["a red circle on a grey background", ""])
    assert ids.shape == (2, MAX_WORDS)
    assert VOCABULARY[ids[0, 1]] == "red" and (ids[1] == 0).all() and VOCABULARY[0] == "<pad>"
    with pytest.raises(ValueError, match="purple"):
        tokenize(["a purple circle"])
