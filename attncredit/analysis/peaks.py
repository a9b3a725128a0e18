"""What a "peak" of a per-token trace is, for the rhythm statistics (Table 2 of the paper; "Analysis definitions"
in ``docs/method.md``).

The paper never defines the WAAD / FAI / entropy "peaks" of its analysis tables (training uses TopQ selection,
not peaks). attncredit makes the definition a parameter, applied to one response at a time over its *eligible*
positions (e.g. the response tokens that have an FAI at all):

* ``top_quantile`` (default, q = 0.2): the ``ceil(q * n)`` largest values of the n eligible positions, equal
  values going to the earlier position: the TopQ selection of training (Eq. 14 / 16), computed by
  ``attncredit.credit.selection.top_quantile_mask`` itself (:func:`top_quantile_peaks` is its numpy wrapper, so
  marks in plots and pages select exactly the tokens training selects). q = 0.2 is chosen
  because it reproduces the paper's random baselines: 22.41% of tokens are global-FAI peaks in Table 2, and a
  chance rate of 36.87% for "an FAI peak coincides with or follows a WAAD peak" is ``1 - (1 - p)^2`` at p = 0.2.
* ``local_max``: a strict local maximum of the eligible positions' sequence (greater than its left neighbour,
  at least its right neighbour, so a plateau counts once, at its first position; a missing neighbour at either
  end counts as -inf) whose value exceeds the response's ``mean + z * std`` over the eligible positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..credit.selection import top_quantile_mask

PEAK_METHODS = ("top_quantile", "local_max")

PEAK_HELP = (
    "How a peak of a per-token trace (WAAD, FAI, entropy) is defined in the rhythm statistics; the paper leaves it "
    "undefined (docs/method.md, 'Analysis definitions'). 'top_quantile': the ceil(q*n) largest values of the response's n eligible tokens "
    "(q = --peak-quantile, default 0.2, which reproduces the paper's random baselines: 22.41% of tokens are FAI "
    "peaks). "
    "'local_max': a local maximum (above the left neighbour, not below the right one) that also exceeds the "
    "response's mean + z*std (z = --peak-z, default 0)."
)


@dataclass(frozen=True)
class PeakRule:
    """A peak definition: ``method`` in :data:`PEAK_METHODS`, ``quantile`` (top_quantile) and ``z`` (local_max)."""

    method: str = "top_quantile"
    quantile: float = 0.2
    z: float = 0.0

    def __post_init__(self):
        if self.method not in PEAK_METHODS:
            raise ValueError(f"peak method must be one of {', '.join(PEAK_METHODS)}, got {self.method!r}")
        if isinstance(self.quantile, bool) or not 0.0 < float(self.quantile) <= 1.0:
            raise ValueError(f"peak quantile must be a number in (0, 1], got {self.quantile!r}")
        if not np.isfinite(float(self.z)):
            raise ValueError(f"peak z must be a finite number, got {self.z!r}")

    def find(self, values, eligible=None) -> np.ndarray:
        """Bool mask of the peaks of ``values`` [n] among ``eligible`` [n] (default: every position)."""
        return find_peaks(values, eligible, method=self.method, quantile=self.quantile, z=self.z)

    def describe(self) -> str:
        if self.method == "top_quantile":
            return f"top_quantile (the ceil({self.quantile:g} * n) largest of a response's n eligible tokens)"
        return f"local_max (local maxima above the response's mean + {self.z:g} * std)"


def top_quantile_peaks(values, eligible, quantile: float) -> np.ndarray:
    """TopQ of training on one response, in numpy: bool [n] mask of the ``ceil(q * n)`` largest ``values`` among
    the n ``eligible`` positions (ties to the earlier position), from ``credit.selection.top_quantile_mask``."""
    eligible = np.asarray(eligible, dtype=bool).reshape(1, -1)
    score = np.where(eligible, np.asarray(values, dtype=np.float64).reshape(1, -1), 0.0)
    return top_quantile_mask(torch.from_numpy(score), torch.from_numpy(eligible), quantile)[0].numpy()


def find_peaks(values, eligible=None, *, method: str = "top_quantile", quantile: float = 0.2, z: float = 0.0):
    """Peaks of one response's trace; see the module docstring for both definitions.

    Args:
        values: [n] numbers (non-finite values are never peaks and are left out of mean/std).
        eligible: [n] bool, the positions that may be peaks (default: all); others are skipped, so with
            ``local_max`` the neighbours of a position are the previous / next *eligible* positions.
        method, quantile, z: the peak rule.

    Returns:
        bool [n] mask of peaks.
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    n = values.shape[0]
    ok = np.isfinite(values) if eligible is None else np.asarray(eligible, dtype=bool).reshape(-1) & np.isfinite(values)
    if ok.shape[0] != n:
        raise ValueError(f"eligible has {ok.shape[0]} entries for {n} values")
    peaks = np.zeros(n, dtype=bool)
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        return peaks
    v = values[idx]
    if method == "top_quantile":
        return top_quantile_peaks(values, ok, quantile)
    if method == "local_max":
        left = np.concatenate([[-np.inf], v[:-1]])
        right = np.concatenate([v[1:], [-np.inf]])
        threshold = v.mean() + z * v.std()
        peaks[idx[(v > left) & (v >= right) & (v > threshold)]] = True
        return peaks
    raise ValueError(f"peak method must be one of {', '.join(PEAK_METHODS)}, got {method!r}")
