"""Honest statistics for small experiments: a Lottery Pools gain is a few tenths of a point, so one seed
says nothing until an interval says otherwise. Pure numpy and scipy (no Ray, no MLflow, no torch):

    paired_bootstrap_ci   mean of per-seed differences (method - LT) with a seeded percentile bootstrap
                          CI over seeds
    paired_t_ci           the same mean with a Student-t CI (wider, and honest, at 3-5 seeds)
    mcnemar_exact         exact two-sided McNemar test on two classifiers' per-example correctness
                          (scipy's exact binomial test on the discordant pairs)
    holm                  Holm's step-down correction of a family of p-values (e.g. across sparsities)
    compare_counts        better / equal / worse counts of paired values
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int  # paired observations (seeds)

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def paired_bootstrap_ci(
    method: Sequence[float],
    baseline: Sequence[float],
    confidence: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
) -> Interval:
    """Mean of `method[i] - baseline[i]` with a percentile bootstrap interval: the pairs (seeds) are
    resampled with replacement `resamples` times from a generator seeded by `seed`, so the same inputs
    always give the same interval. With one pair the interval is that single difference."""
    a, b = np.asarray(method, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"need two equally long, non-empty 1-D samples, got shapes {a.shape} and {b.shape}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    diff = a - b
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(diff), size=(resamples, len(diff)))
    means = diff[picks].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return Interval(float(diff.mean()), float(low), float(high), len(diff))


def t_ci(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Mean of `values` (e.g. one number per seed) with a Student-t interval (n - 1 degrees of freedom).
    Fewer than two values: no interval (nan bounds)."""
    from scipy.stats import t

    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    if n < 2:
        return Interval(float(x.mean()) if n else math.nan, math.nan, math.nan, n)
    half = float(t.ppf(0.5 + confidence / 2, n - 1)) * float(x.std(ddof=1)) / math.sqrt(n)
    return Interval(float(x.mean()), float(x.mean()) - half, float(x.mean()) + half, n)


def paired_t_ci(method: Sequence[float], baseline: Sequence[float], confidence: float = 0.95) -> Interval:
    """Mean of `method[i] - baseline[i]` with a Student-t interval (n - 1 degrees of freedom). With
    few seeds the percentile bootstrap's interval is too narrow (it never reaches beyond the observed
    differences and treats their spread as known); the t-interval is the classical, wider companion.
    Fewer than two pairs: no interval (nan bounds)."""
    diff = np.asarray(method, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)
    return t_ci(diff, confidence)


def mcnemar_exact(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> tuple[int, int, float]:
    """Exact two-sided McNemar test of two classifiers on the same examples. Returns (b, c, p): b the
    examples only A gets right, c those only B gets right, and p = P(a split at least as uneven as b:c
    | each discordant example goes either way with probability 1/2)."""
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"the two predictions cover different examples: {a.shape} vs {b.shape}")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    return only_a, only_b, mcnemar_p(only_a, only_b)


def mcnemar_p(only_a: int, only_b: int) -> float:
    """The exact McNemar p-value from the two discordant counts: a two-sided exact binomial test of
    `only_a` successes in `only_a + only_b` trials at 1/2 (scipy's binomtest)."""
    from scipy.stats import binomtest

    n = only_a + only_b
    if n == 0:
        return 1.0
    return float(binomtest(only_a, n, 0.5, alternative="two-sided").pvalue)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the input order: the i-th smallest is multiplied by (m - i), then made
    monotone (never below the one before it) and capped at 1. Reject where adjusted < alpha."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def compare_counts(method: Sequence[float], baseline: Sequence[float]) -> tuple[int, int, int]:
    """How many pairs the method is better / equal / worse at."""
    pairs = list(zip(method, baseline, strict=True))
    return sum(a > b for a, b in pairs), sum(a == b for a, b in pairs), sum(a < b for a, b in pairs)
