"""The report's statistics: means with Student-t intervals, paired differences, percentile bootstrap.

* ``mean_interval(x)``: the sample mean and the two-sided 95% Student-t confidence interval
  ``mean +- t(0.975, n - 1) * s / sqrt(n)`` (``s`` the sample standard deviation, ddof 1); no interval for n < 2.
* ``paired_differences(a, b)``: ``a[seed] - b[seed]`` for the seeds both have (same data order per seed), sorted
  by seed; their mean and t-interval are ``mean_interval`` of those differences.
* ``bootstrap_interval(x)``: the percentile bootstrap 95% interval of the mean: ``resamples`` (10,000) draws of
  ``n`` values with replacement from ``x`` by ``numpy.random.default_rng(seed)`` (seed 0), the 2.5th and 97.5th
  percentiles (numpy's default linear interpolation) of the resampled means; no interval for n < 4
  (``MIN_BOOTSTRAP``): with n <= 3 a resample of n copies of the smallest value comes with probability
  ``1/n**n >= 1/27``, more than 2.5%, so the percentiles are the smallest and largest value themselves and the
  "interval" would only be the range of the values.

The t quantile is scipy's (imported only when a report is computed, so the runner needs no scipy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

CONFIDENCE = 0.95
RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
MIN_BOOTSTRAP = 4  # fewer values: the percentile interval is the values' range (module docstring)


def t_quantile(probability: float, df: int) -> float:
    """The ``probability`` quantile of Student's t with ``df`` >= 1 degrees of freedom (scipy)."""
    from scipy.stats import t

    if df < 1:
        raise ValueError(f"t_quantile needs df >= 1, got {df}")
    return float(t.ppf(probability, df))


@dataclass(frozen=True)
class Estimate:
    """A mean over ``n`` values and its 95% interval (``low``/``high`` None when n < 2)."""

    n: int
    mean: float
    low: float | None = None
    high: float | None = None


def mean_interval(values) -> Estimate:
    """The mean of ``values`` and its two-sided 95% Student-t interval (module docstring)."""
    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        raise ValueError("mean_interval needs at least one value")
    mean = sum(values) / n
    if n < 2:
        return Estimate(n, mean)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(0.5 + CONFIDENCE / 2, n - 1) * sd / math.sqrt(n)
    return Estimate(n, mean, mean - half, mean + half)


def paired_differences(arm: dict[int, float], baseline: dict[int, float]) -> dict[int, float]:
    """``arm[seed] - baseline[seed]`` for every seed both have, by seed."""
    return {seed: arm[seed] - baseline[seed] for seed in sorted(set(arm) & set(baseline))}


def bootstrap_interval(values, resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED) -> Estimate:
    """The mean of ``values`` and its percentile bootstrap 95% interval (module docstring); none for n < 4."""
    import numpy as np

    x = np.asarray([float(v) for v in values])
    if x.size == 0:
        raise ValueError("bootstrap_interval needs at least one value")
    if x.size < MIN_BOOTSTRAP:
        return Estimate(int(x.size), float(x.mean()))
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Estimate(int(x.size), float(x.mean()), float(low), float(high))
