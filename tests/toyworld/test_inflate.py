"""The toy world inflates and tunes with the pack's own inflation policy (``ei2.inflation``), never a copy of it."""
import ast
import copy
import inspect
from pathlib import Path

import pytest
import torch

from benchmarks.toyworld.inflate import inflate, query_weights, start_tuning, temporal_modules, tuned_model
from benchmarks.toyworld.model import ToyConfig, ToyT2I
from ei2.inflation import InflateOptions
from ei2.spectral import settle
from ei2.stam import STAM
from ei2.tuning import TRAIN_SETS, one_shot_tune
from ei2.vanilla import VanillaTemporalAttention

ROOT = Path(__file__).resolve().parents[2]
TINY = ToyConfig(channels=(8, 16), heads=2, context_dim=16, embedding_dim=16)


def image_model():
    """A tiny model whose zero-initialised output layers are perturbed, so that every layer gets gradients."""
    torch.manual_seed(0)
    model = ToyT2I(TINY)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def tune_steps(video, train, steps=3, learning_rate=1e-2, weight_decay=1e-2):
    """A few real tuning steps of ``video`` on a random 4-frame clip, as ``edit.tune`` runs them."""
    trainer = copy.deepcopy(video)
    tuning = start_tuning(trainer, train)
    context = trainer.text.encode(["a red circle on a grey background"])
    x0 = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1

    def predict_eps(x, sigma):
        return trainer.predict_eps(x, sigma.expand(4), context.expand(4, -1, -1), 4)

    one_shot_tune(predict_eps, x0, torch.linspace(0.1, 10, 50), tuning.params, steps=steps,
                  learning_rate=learning_rate, seed=0, weight_decay=weight_decay)
    return trainer, tuning


def test_inflation_copies_and_leaves_the_image_model_alone():
    model = image_model()
    video = inflate(model, InflateOptions(attention_type="ffam", temporal_type="stam", coarse_stride=2))
    assert all(b.temporal is None and b.attn1.frame_options is None for b in model.transformer_blocks().values())
    for block in video.transformer_blocks().values():
        assert isinstance(block.temporal, STAM)
        assert block.attn1.frame_options == {"attention_type": "ffam", "coarse_stride": 2, "coarse_type": "avg"}
    assert video.transformer_blocks()["down1"].attn1.to_q.weight is not model.transformer_blocks()["down1"].attn1.to_q.weight


def test_per_frame_without_temporal_computes_what_the_image_model_computes():
    model = image_model()
    video = inflate(model, InflateOptions(attention_type="per_frame", temporal_type="none"))
    x, context = torch.randn(4, 3, 32, 32), model.text.encode(["a red circle on a grey background"])
    expected = model.denoise(x, 2.0, context, frames=4)
    assert not torch.allclose(expected, x, atol=1e-3)
    assert torch.equal(video.denoise(x, 2.0, context, frames=4), expected)


def test_same_seed_same_temporal_weights_other_seed_other_weights():
    model = image_model()
    videos = [inflate(model, InflateOptions(attention_type="sparse_causal", temporal_type="vanilla", seed=s))
              for s in (1, 1, 2)]
    first = [video.transformer_blocks()["middle"].temporal for video in videos]
    assert all(isinstance(t, VanillaTemporalAttention) for t in first)
    assert torch.equal(first[0].to_q.weight, first[1].to_q.weight)
    assert not torch.equal(first[0].to_q.weight, first[2].to_q.weight)


def test_after_self_attention_runs_the_temporal_module_in_the_other_place():
    model = image_model()
    outputs = []
    for placement in ("after_feedforward", "after_self_attention"):
        video = inflate(model, InflateOptions(attention_type="per_frame", temporal_type="vanilla", temporal_placement=placement))
        for module in temporal_modules(video).values():
            torch.nn.init.normal_(module.to_out.weight, std=0.5)  # an active branch: its place matters
        x, context = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1)), model.text.encode([""])
        outputs.append(video.denoise(x, 2.0, context, frames=4))
    assert not torch.allclose(outputs[0], outputs[1], atol=1e-4)


@pytest.mark.parametrize("train, temporal, queries", [("temporal_and_queries", True, True), ("temporal", True, False),
                                                      ("queries", False, True)])
def test_tuning_trains_the_packs_train_sets_with_query_deltas(train, temporal, queries):
    video = inflate(image_model(), InflateOptions(attention_type="ffam", temporal_type="vanilla"))
    trainer, tuning = tune_steps(video, train)
    tuned = tuned_model(video, trainer, tuning)
    before, after = temporal_modules(video), temporal_modules(tuned)
    for name, module in before.items():
        for key, value in module.state_dict().items():
            changed = not torch.equal(value, after[name].state_dict()[key])
            # Tune-A-Video keeps the LayerNorm frozen; the rest trains with train sets that hold "temporal".
            assert changed == (temporal and not key.startswith("norm.")), (train, name, key)
    original, now = query_weights(video), query_weights(tuned)
    assert set(tuning.deltas) == (set(original) if queries else set())
    for key, weight in original.items():
        if queries:  # the tuned weight is the image model's plus the trained delta: the pack's weight patch
            assert not torch.equal(now[key], weight)
            torch.testing.assert_close(now[key], weight + tuning.deltas[key].detach(), rtol=0, atol=0)
        else:
            assert torch.equal(now[key], weight)
    assert not any(p.requires_grad for p in tuned.parameters())
    assert all(not p.requires_grad for p in video.parameters() if p not in set(before.parameters()))


def test_weight_decay_pulls_the_queries_back_to_the_image_model_not_to_zero():
    video = inflate(image_model(), InflateOptions(attention_type="per_frame", temporal_type="none"))
    trainer, tuning = tune_steps(video, "queries", steps=2, learning_rate=1e-12, weight_decay=1e9)
    tuned = tuned_model(video, trainer, tuning)
    for key, weight in query_weights(video).items():
        # Decay shrinks the zero deltas, which stay zero; decaying the weights themselves would shrink them.
        torch.testing.assert_close(query_weights(tuned)[key], weight, rtol=0, atol=1e-6)


def test_nothing_to_tune_is_refused_with_the_packs_message():
    video = inflate(image_model(), InflateOptions(attention_type="ffam", temporal_type="none"))
    with pytest.raises(ValueError, match=r"Nothing to tune: train='temporal' .* Choose train=queries"):
        start_tuning(video, "temporal")
    with pytest.raises(ValueError, match="train='everything' is not supported"):
        start_tuning(video, "everything")


def test_unknown_options_are_refused():
    with pytest.raises(ValueError, match="attention_type"):
        InflateOptions(attention_type="sparse")
    with pytest.raises(ValueError, match="coarse_stride"):
        InflateOptions(coarse_stride=0)
    with pytest.raises(ValueError, match="temporal_placement"):
        InflateOptions(temporal_placement="before_everything")


def test_the_tuned_model_is_settled_and_the_trainer_is_not():
    video = inflate(image_model(), InflateOptions(attention_type="ffam", temporal_type="stam"))
    trainer, tuning = tune_steps(video, "temporal", steps=5, learning_rate=3e-2)
    tuned = tuned_model(video, trainer, tuning)
    expected = copy.deepcopy(temporal_modules(trainer))
    settle(expected)
    for name, module in temporal_modules(tuned).items():
        for key, value in module.state_dict().items():
            torch.testing.assert_close(value, expected[name].state_dict()[key], rtol=0, atol=0)
    vectors = [k for k in temporal_modules(trainer)["down1"].state_dict() if k.endswith("_vector")]
    assert vectors and any(not torch.equal(temporal_modules(trainer)["down1"].state_dict()[k],
                                           temporal_modules(tuned)["down1"].state_dict()[k]) for k in vectors)


# --- one policy, no copies ------------------------------------------------------------------------------

POLICY_NAMES = {"InflateOptions", "TEMPORAL_PLACEMENTS", "TRAIN_SETS", "ATTENTION_TYPES", "COARSE_TYPES",
                "TEMPORAL_TYPES", "CENTERING_TYPES", "MAPPING_TYPES"}


def _modules(*folders):
    for folder in folders:
        yield from sorted((ROOT / folder).rglob("*.py"))


def test_the_glue_and_the_toy_world_use_the_one_inflation_policy(pack):
    """The node pack (imported inside ComfyUI, as users run it) and the toy world take the same functions."""
    from benchmarks.toyworld import inflate as toy

    policy = ROOT / "ei2" / "inflation.py"
    adapter = pack.nodes.adapter
    used = [adapter.patching.InflateOptions, adapter.patching.build_temporal_modules, adapter.training.tuning_parameters,
            adapter.training.finish_tuning, toy.InflateOptions, toy.build_temporal_modules, toy.tuning_parameters,
            toy.finish_tuning]
    assert {Path(inspect.getsourcefile(thing)).resolve() for thing in used} == {policy}


@pytest.mark.parametrize("path", list(_modules("nodes", "benchmarks/toyworld")), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_outside_the_core_grows_its_own_copy_of_the_policy(path):
    """No option lists, options class, train-set selection, temporal-module factory or settle outside ``ei2``."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = {t.id for t in targets if isinstance(t, ast.Name)}
            assert not names & POLICY_NAMES, f"{path}: defines {names & POLICY_NAMES}"
        if isinstance(node, ast.ClassDef):
            assert node.name not in POLICY_NAMES and "Inflation" not in node.name, f"{path}: class {node.name}"
        if isinstance(node, ast.Call):
            called = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
            assert called not in {"make_temporal", "settle", "STAM", "VanillaTemporalAttention"}, f"{path}: calls {called}"
        if isinstance(node, ast.Compare):  # selecting parameters by train set is the policy's job
            constants = {c.value for c in ast.walk(node) if isinstance(c, ast.Constant)}
            assert not constants & set(TRAIN_SETS), f"{path}: compares with a train set"
