"""Confidence intervals of the workbook's figures: of a median (binomial order statistics, no distribution
assumed) and of a ratio of two medians (percentile bootstrap). ``protocol`` puts them on every row.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def median_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free interval of the median from binomial order statistics.

    Of n independent samples, the number below the true median is Binomial(n, 1/2); so the sorted samples'
    ``[x_(j), x_(n+1-j)]`` (1-based) cover it with probability ``1 - 2 P(B <= j - 1)``. ``j`` is the largest rank
    that keeps this at or above ``confidence``. When even ``j = 1`` falls short (n < 6 at 95%), the sample range.
    """
    s = sorted(values)
    n = len(s)
    if n == 0:
        return math.nan, math.nan
    below, j = 0, 0
    while j < n // 2:  # grow the rank while P(B <= j) stays within alpha/2 (exact integer counts over 2^n)
        below += math.comb(n, j)
        if below / 2**n > (1 - confidence) / 2:
            break
        j += 1
    j = max(j, 1)
    return s[j - 1], s[n - j]


def min_samples(confidence: float = 0.95) -> int:
    """The fewest samples whose range covers the median with ``confidence`` (6 at 95%)."""
    return next(n for n in range(1, 64) if 1 - 2 * 0.5**n >= confidence)


@dataclass
class Ratio:
    """A ratio of two medians with its bootstrap interval."""

    value: float
    ci_low: float
    ci_high: float

    def columns(self, name: str) -> dict:
        """``{name, name_ci_low, name_ci_high}`` for a row: ``ratio_of_medians(...).columns("speedup")``."""
        return {name: self.value, f"{name}_ci_low": self.ci_low, f"{name}_ci_high": self.ci_high}

    def contains(self, x: float) -> bool:
        return self.ci_low <= x <= self.ci_high


def ratio_of_medians(
    numerator,
    denominator,
    *,
    confidence: float = 0.95,
    resamples: int = 4000,
    seed: int = 0,
) -> Ratio:
    """median(numerator) / median(denominator), e.g. ``ratio_of_medians(eager, sdpa)`` is SDPA's speed-up.

    The interval is a percentile bootstrap: both sample sets resampled with replacement ``resamples`` times, the
    ratio of the resampled medians each time, its ``(1 - confidence) / 2`` and ``(1 + confidence) / 2``
    quantiles. Either side: ``Samples`` (resampled by call: a generation's steps as one median, see
    ``Samples.units``), a row's ``*_samples_ms`` JSON text, or plain values; one value on either side (a memory
    peak) is resampled as itself."""
    a, b = _values(numerator), _values(denominator)
    if not (a.size and b.size):
        return Ratio(math.nan, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    ra = np.median(rng.choice(a, (resamples, a.size)), axis=1)
    rb = np.median(rng.choice(b, (resamples, b.size)), axis=1)
    lo, hi = np.quantile(ra / rb, [(1 - confidence) / 2, (1 + confidence) / 2])
    return Ratio(float(np.median(a) / np.median(b)), float(lo), float(hi))


def _values(x) -> np.ndarray:
    if hasattr(x, "units"):
        x = x.units()
    elif isinstance(x, str):
        x = json.loads(x)
    return np.asarray(x, dtype=float).reshape(-1)
