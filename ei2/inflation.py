"""The inflation policy: how an image model becomes a video model, and what one-shot tuning changes.

One place for everyone who inflates a UNet — the ComfyUI glue (``nodes/adapter``) patching SD and the
toy world (``benchmarks/toyworld``) measuring edit quality — so both run the same method:
- the options and their validation (:class:`InflateOptions`);
- the temporal modules, fp32, built in block order from the seed (:func:`build_temporal_modules`);
- the train sets: which temporal parameters train (what the modules leave ``requires_grad``; vanilla's
  LayerNorm stays frozen, as in Tune-A-Video), and the query projections, tuned as fp32 *deltas* on the
  image model's ``attn1``/``attn2`` ``to_q`` weights, so weight decay pulls them back to the image model
  (:func:`tuning_parameters`), with one refusal when nothing would train;
- the settle after tuning (:func:`finish_tuning`).
The caller only knows its model: which transformer blocks it has and where their query weights are.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import torch

from .ffam import ATTENTION_TYPES, COARSE_TYPES
from .spectral import settle
from .stam import CENTERING_TYPES, MAPPING_TYPES
from .temporal import TEMPORAL_TYPES, make_temporal
from .tuning import TRAIN_SETS

TEMPORAL_PLACEMENTS = ("after_feedforward", "after_self_attention")


@dataclass(frozen=True)
class InflateOptions:
    attention_type: str = "ffam"
    coarse_stride: int = 2
    coarse_type: str = "avg"
    temporal_type: str = "stam"
    temporal_placement: str = "after_feedforward"
    centering_type: str = "frames"
    mapping_type: str = "spectral"
    seed: int = 0

    def __post_init__(self):
        for name, allowed in (("attention_type", ATTENTION_TYPES), ("coarse_type", COARSE_TYPES),
                              ("temporal_type", TEMPORAL_TYPES), ("temporal_placement", TEMPORAL_PLACEMENTS),
                              ("centering_type", CENTERING_TYPES), ("mapping_type", MAPPING_TYPES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r} is not supported; choose one of {', '.join(allowed)}.")
        if self.coarse_stride < 1:
            raise ValueError(f"coarse_stride must be at least 1, got {self.coarse_stride}.")

    def frame_attention_options(self) -> dict | None:
        """``ei2.ffam.frame_attention``'s keyword options for ``attn1``; ``None``: per_frame keeps the image model's own."""
        if self.attention_type == "per_frame":
            return None
        return dict(attention_type=self.attention_type, coarse_stride=self.coarse_stride, coarse_type=self.coarse_type)


def build_temporal_modules(blocks: Mapping[str, tuple[int, int]], options: InflateOptions) -> torch.nn.ModuleDict:
    """Fresh fp32 temporal modules for ``blocks`` (name -> (channels, heads), in the order the UNet runs them).

    Seeded by ``options.seed`` without touching the global generator; real tensors even under inference
    mode (ComfyUI runs nodes in it). Empty for ``temporal_type="none"``.
    """
    stam_options = {}
    if options.temporal_type == "stam":
        stam_options = dict(centering_type=options.centering_type, mapping_type=options.mapping_type)
    modules = torch.nn.ModuleDict()
    with torch.inference_mode(False), torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.seed)
        for name, (channels, heads) in blocks.items():
            module = make_temporal(options.temporal_type, channels, heads, **stam_options)
            if module is not None:
                modules[name] = module.float()
    return modules


@dataclass
class TuningParameters:
    """What one-shot tuning updates: temporal parameters and query deltas (keyed like the query weights)."""
    trained: list = field(default_factory=list)
    frozen: list = field(default_factory=list)  # temporal parameters that must get no gradient (train=queries)
    deltas: dict = field(default_factory=dict)

    @property
    def params(self) -> list:
        return self.trained + list(self.deltas.values())


def check_train(train: str) -> None:
    if train not in TRAIN_SETS:
        raise ValueError(f"train={train!r} is not supported; choose one of {', '.join(TRAIN_SETS)}.")


def tuning_parameters(modules: torch.nn.ModuleDict, query_weights: Mapping[str, torch.Tensor], train: str,
                      device=None) -> TuningParameters:
    """The train set ``train`` of an inflated model with temporal ``modules`` and ``query_weights`` (name -> weight).

    Query deltas start at zero in fp32 on ``device`` (default: each weight's device). Raises when ``train``
    is unknown or would train nothing.
    """
    check_train(train)
    trainable = [p for p in modules.parameters() if p.requires_grad]
    trained, frozen = (trainable, []) if train != "queries" else ([], trainable)
    deltas = {}
    if train in ("temporal_and_queries", "queries"):
        deltas = {name: torch.zeros(weight.shape, dtype=torch.float32, device=device or weight.device, requires_grad=True)
                  for name, weight in query_weights.items()}
    if not trained and not deltas:
        raise ValueError(f"Nothing to tune: train={train!r} but this MODEL has no temporal modules "
                         "(temporal_type none). Choose train=queries or inflate with stam/vanilla.")
    return TuningParameters(trained, frozen, deltas)


def finish_tuning(modules: torch.nn.ModuleDict, tuned: TuningParameters) -> None:
    """After tuning: bring STAM's spectral clips to their bound, so sampling holds it from its first step."""
    if tuned.trained:
        settle(modules)
