"""The toy model's weights file: safetensors with the model config and training facts in its metadata."""
from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file, save_file

from .model import ToyT2I, config_from_dict

DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "toy_t2i.safetensors"


def save_weights(model: ToyT2I, path: Path, **facts) -> None:
    """Write ``model``'s parameters (fp32) atomically; ``facts`` (steps, seed, …) go into the metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().float().contiguous() for name, t in model.state_dict().items()}
    metadata = {"config": json.dumps(model.config_dict()), **{k: json.dumps(v) for k, v in facts.items()}}
    partial = path.with_suffix(".partial")
    save_file(tensors, str(partial), metadata=metadata)
    partial.chmod(0o644)
    partial.replace(path)


def read_metadata(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return {k: json.loads(v) for k, v in (f.metadata() or {}).items()}


def load_model(path: Path = DEFAULT_WEIGHTS) -> ToyT2I:
    """The model stored at ``path``, in eval mode."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no toy weights at {path}; train them with `python -m benchmarks.toyworld train`")
    model = ToyT2I(config_from_dict(read_metadata(path)["config"]))
    model.load_state_dict(load_file(str(path)))
    return model.eval().requires_grad_(False)
