"""Training is deterministic, resumes exactly, and its weights file round-trips."""
import torch

from benchmarks.toyworld.model import ToyConfig
from benchmarks.toyworld.train import TrainSettings, train, training_batch
from benchmarks.toyworld.weights_io import load_model, read_metadata

TINY = ToyConfig(channels=(8, 16), heads=2, context_dim=16, embedding_dim=16)
SETTINGS = dict(batch=4, warmup=2, checkpoint_every=2, seed=3)


def quiet(_):
    pass


def test_a_step_batch_depends_only_on_seed_and_step():
    a, b, c = training_batch(0, 5, 8, 0.1), training_batch(0, 5, 8, 0.1), training_batch(0, 6, 8, 0.1)
    assert torch.equal(a[0], b[0]) and a[1] == b[1] and torch.equal(a[3], b[3])
    assert not torch.equal(a[0], c[0])


def test_training_is_reproducible_and_resumes_exactly(tmp_path):
    straight = train(TrainSettings(steps=4, **SETTINGS), tmp_path / "a", tmp_path / "a.safetensors", TINY, log=quiet)
    again = train(TrainSettings(steps=4, **SETTINGS), tmp_path / "b", tmp_path / "b.safetensors", TINY, log=quiet)
    train(TrainSettings(steps=2, **SETTINGS), tmp_path / "c", tmp_path / "c.safetensors", TINY, log=quiet)
    resumed = train(TrainSettings(steps=4, **SETTINGS), tmp_path / "c", tmp_path / "c.safetensors", TINY, log=quiet)
    for p, q, r in zip(straight.state_dict().values(), again.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(p, q) and torch.equal(p, r)
    # Training moved the weights away from the seed's initialisation.
    torch.manual_seed(SETTINGS["seed"])
    from benchmarks.toyworld.model import ToyT2I
    initial = ToyT2I(TINY)
    assert any(not torch.equal(p, q) for p, q in zip(initial.state_dict().values(), straight.state_dict().values()))


def test_weights_file_holds_the_ema_model_and_its_facts(tmp_path):
    ema = train(TrainSettings(steps=2, **SETTINGS), tmp_path / "run", tmp_path / "w.safetensors", TINY, log=quiet)
    loaded = load_model(tmp_path / "w.safetensors")
    assert loaded.config == TINY
    assert read_metadata(tmp_path / "w.safetensors")["steps"] == 2
    for p, q in zip(ema.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(p, q)


def test_fine_tuning_starts_from_its_init_weights_and_is_reproducible(tmp_path):
    import pytest

    train(TrainSettings(steps=2, **SETTINGS), tmp_path / "base", tmp_path / "base.safetensors", TINY, log=quiet)
    init = str(tmp_path / "base.safetensors")
    untouched = train(TrainSettings(steps=0, init=init, **SETTINGS), tmp_path / "zero", tmp_path / "zero.safetensors",
                      log=quiet)
    for p, q in zip(load_model(tmp_path / "base.safetensors").state_dict().values(), untouched.state_dict().values()):
        assert torch.equal(p, q)
    a = train(TrainSettings(steps=3, init=init, **SETTINGS), tmp_path / "a", tmp_path / "a.safetensors", log=quiet)
    b = train(TrainSettings(steps=3, init=init, **SETTINGS), tmp_path / "b", tmp_path / "b.safetensors", log=quiet)
    assert a.config == TINY  # the init file's config, not the default
    for p, q in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(p, q)
    facts = read_metadata(tmp_path / "a.safetensors")
    assert (facts["steps"], facts["init"], facts["init_steps"]) == (3, "base.safetensors", 2)
    with pytest.raises(ValueError, match="another run"):  # a run dir remembers what it was initialised from
        train(TrainSettings(steps=4, **SETTINGS), tmp_path / "a", tmp_path / "a.safetensors", TINY, log=quiet)
