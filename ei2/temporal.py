"""The temporal modules by name: ``make_temporal("stam" | "vanilla" | "none", …)``.

The modules themselves: ``ei2.stam`` (EI²), ``ei2.vanilla`` (Tune-A-Video's), both built on
``ei2.frame_sequence``.
"""

from .stam import STAM
from .vanilla import VanillaTemporalAttention

TEMPORAL_TYPES = ("stam", "vanilla", "none")


def make_temporal(temporal_type, channels, heads, **stam_options):
    """The temporal module named by ``temporal_type``, or ``None`` for ``"none"``."""
    if temporal_type not in TEMPORAL_TYPES:
        raise ValueError(f"unknown temporal_type {temporal_type!r}; choose one of {TEMPORAL_TYPES}")
    if temporal_type != "stam" and stam_options:
        raise ValueError(f"options {sorted(stam_options)} only apply to temporal_type='stam', not {temporal_type!r}")
    if temporal_type == "none":
        return None
    if temporal_type == "vanilla":
        return VanillaTemporalAttention(channels, heads)
    return STAM(channels, heads, **stam_options)
