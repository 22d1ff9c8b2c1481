"""Inflating the toy model does what the pack does to SD: frame attention in attn1, a temporal module after the FF."""
import pytest
import torch

from benchmarks.toyworld.inflate import Inflation, inflate, settle_temporal, trainable_parameters
from benchmarks.toyworld.model import ToyConfig, ToyT2I
from ei2.stam import STAM
from ei2.vanilla import VanillaTemporalAttention

TINY = ToyConfig(channels=(8, 16), heads=2, context_dim=16, embedding_dim=16)


def image_model():
    torch.manual_seed(0)
    return ToyT2I(TINY).eval()


def test_inflation_copies_and_leaves_the_image_model_alone():
    model = image_model()
    video = inflate(model, Inflation("ffam", "stam", coarse_stride=2))
    assert all(b.temporal is None and b.attn1.frame_options is None for b in model.transformer_blocks().values())
    for block in video.transformer_blocks().values():
        assert isinstance(block.temporal, STAM)
        assert block.attn1.frame_options == {"attention_type": "ffam", "coarse_stride": 2, "coarse_type": "avg"}
    assert video.transformer_blocks()["down1"].attn1.to_q.weight is not model.transformer_blocks()["down1"].attn1.to_q.weight


def test_per_frame_without_temporal_is_the_image_model():
    video = inflate(image_model(), Inflation("per_frame", "none"))
    assert all(b.temporal is None and b.attn1.frame_options is None for b in video.transformer_blocks().values())


def test_same_seed_same_temporal_weights_other_seed_other_weights():
    model = image_model()
    videos = [inflate(model, Inflation("sparse_causal", "vanilla", seed=s)) for s in (1, 1, 2)]
    first = [video.transformer_blocks()["middle"].temporal for video in videos]
    assert all(isinstance(t, VanillaTemporalAttention) for t in first)
    assert torch.equal(first[0].to_q.weight, first[1].to_q.weight)
    assert not torch.equal(first[0].to_q.weight, first[2].to_q.weight)


@pytest.mark.parametrize("train, expected", [("temporal_and_queries", {"temporal", "attn1.to_q", "attn2.to_q"}),
                                              ("temporal", {"temporal"}), ("queries", {"attn1.to_q", "attn2.to_q"})])
def test_trainable_parameters_are_the_packs_train_sets(train, expected):
    video = inflate(image_model(), Inflation("ffam", "vanilla"))
    params = {id(p) for p in trainable_parameters(video, train)}
    kinds = set()
    for name, p in video.named_parameters():
        assert p.requires_grad == (id(p) in params), name
        if p.requires_grad:
            kinds.add("temporal" if ".temporal." in name else name.split(".block.")[1].rsplit(".", 1)[0])
            assert ".temporal.norm." not in name  # Tune-A-Video keeps the LayerNorm frozen
    assert kinds == expected


def test_nothing_to_tune_is_an_error():
    with pytest.raises(ValueError, match="nothing to tune"):
        trainable_parameters(inflate(image_model(), Inflation("ffam", "none")), "temporal")


def test_unknown_options_are_refused():
    with pytest.raises(ValueError, match="attention_type"):
        Inflation("sparse", "stam")
    with pytest.raises(ValueError, match="coarse_stride"):
        Inflation("ffam", "stam", coarse_stride=0)


def test_settle_keeps_a_fresh_stam_model_unchanged():
    video = inflate(image_model(), Inflation("ffam", "stam"))
    x, context = torch.randn(4, 3, 32, 32), video.text.encode([""])
    before = video.denoise(x, 1.0, context, frames=4)
    settle_temporal(video)
    assert torch.allclose(video.denoise(x, 1.0, context, frames=4), before)
