"""Sample-based accuracy metrics: avg@k and the unbiased pass@k estimator.

For a problem with ``n`` sampled answers of which ``c`` are correct:

* ``avg@n`` = c / n, the mean accuracy over the samples (the paper's AIME metric, avg@16);
* ``pass@k`` = 1 - C(n - c, k) / C(n, k), the probability that at least one of ``k`` answers drawn without
  replacement from the ``n`` is correct (Chen et al. 2021, "Evaluating Large Language Models Trained on Code",
  Eq. 1). ``pass@1`` equals ``avg@n``; with ``n = 1`` both are the plain accuracy (the paper's pass@1).

A benchmark's value is the mean over its problems. Every function here returns a fraction in [0, 1]; callers
print percentages.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from attncredit.errors import ConfigError


def _check_counts(n: int, c: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"number of samples n must be a positive integer, got {n!r}")
    if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c <= n:
        raise ConfigError(f"number of correct samples c must be an integer in 0..n={n}, got {c!r}")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with ``c`` correct answers among ``n`` samples (needs 1 <= k <= n).

    Computed as 1 - prod_{i=n-c+1}^{n} (1 - k / i), the numerically stable form of 1 - C(n-c, k) / C(n, k).

    >>> pass_at_k(16, 4, 1), round(pass_at_k(4, 1, 2), 4)
    (0.25, 0.5)
    """
    _check_counts(n, c)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
        raise ConfigError(f"pass@k needs an integer k in 1..n={n} (the number of samples), got k={k!r}")
    if n - c < k:
        return 1.0
    value = 1.0
    for i in range(n - c + 1, n + 1):
        value *= 1.0 - k / i
    return 1.0 - value


def avg_at_k(scores: Sequence[float]) -> float:
    """avg@k of one problem: the mean of its ``k`` per-sample accuracies (0/1, or partial scores)."""
    scores = list(scores)
    if not scores:
        raise ConfigError("avg@k needs at least one sample score")
    return sum(float(s) for s in scores) / len(scores)


def default_ks(n: int) -> list[int]:
    """The pass@k values reported for ``n`` samples: 1, 2, 4, ... up to n, and n itself."""
    ks, k = [], 1
    while k <= n:
        ks.append(k)
        k *= 2
    if ks[-1] != n:
        ks.append(n)
    return ks


def benchmark_metrics(correct: Iterable[Sequence[bool | float]], ks: Iterable[int] | None = None) -> dict[str, float]:
    """Per-benchmark metrics from per-problem sample accuracies (one list of 0/1 per problem, all of length n).

    Returns ``{"avg@n": ..., "pass@k": ... for k in ks}`` (means over problems, fractions in [0, 1]), plus
    ``num_problems`` and ``num_samples``. ``ks`` defaults to ``default_ks(n)``; each must be in 1..n.
    """
    problems = [list(p) for p in correct]
    if not problems:
        return {"num_problems": 0, "num_samples": 0}
    n = len(problems[0])
    if n == 0 or any(len(p) != n for p in problems):
        raise ConfigError("every problem needs the same positive number of samples")
    ks = default_ks(n) if ks is None else sorted(set(ks))
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
            raise ConfigError(f"pass@k needs k in 1..{n} (the number of samples per problem), got k={k!r}")
    counts = [sum(1 for s in p if float(s) >= 1.0) for p in problems]
    out: dict[str, float] = {f"avg@{n}": sum(avg_at_k(p) for p in problems) / len(problems)}
    for k in ks:
        out[f"pass@{k}"] = sum(pass_at_k(n, c, k) for c in counts) / len(problems)
    out["num_problems"] = len(problems)
    out["num_samples"] = n
    return out
