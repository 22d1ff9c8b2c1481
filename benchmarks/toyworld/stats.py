"""Paired differences over clips with a bootstrap 95 % interval: how the benchmark decides that two runs differ.

Both runs are scored on the same clips; each clip gives one difference (run A − run B), and the interval
is the percentile bootstrap of their mean (clips resampled with replacement, seeded). A difference is
called a difference only when its interval excludes 0 and it rests on at least ``MIN_CLIPS`` clips: with
fewer, the percentile bootstrap's interval is far too narrow (three equal-signed differences already
"exclude 0").
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

RESAMPLES = 10_000
MIN_CLIPS = 10


@dataclass(frozen=True)
class Difference:
    mean: float
    low: float
    high: float
    clips: int

    @property
    def significant(self) -> bool:
        return self.clips >= MIN_CLIPS and (self.low > 0 or self.high < 0)


def paired_difference(a: dict, b: dict, resamples: int = RESAMPLES, seed: int = 0) -> Difference:
    """Mean of ``a[clip] − b[clip]`` over the clips both hold (NaN left out), with its bootstrap 95 % interval."""
    clips = sorted(clip for clip in a.keys() & b.keys() if not (math.isnan(a[clip]) or math.isnan(b[clip])))
    if not clips:
        return Difference(math.nan, math.nan, math.nan, 0)
    differences = np.array([a[clip] - b[clip] for clip in clips], dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = differences[rng.integers(0, len(differences), (resamples, len(differences)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return Difference(float(differences.mean()), float(low), float(high), len(clips))
