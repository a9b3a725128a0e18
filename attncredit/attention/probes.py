"""Which layers the attention statistics are read from (docs/method.md, "Probe layers").

The paper samples "five evenly spaced layers within the middle third of the network (i.e., from layers
floor(L/3) to floor(2L/3))" and gives no indexing or rounding convention. Ours, stated once:

* layers are **0-indexed** (``model.model.layers[i]``, ``module.layer_idx``);
* ``lo = floor(L/3)``, ``hi = floor(2L/3)`` (both included);
* layer ``i`` of ``count`` is ``floor(lo + i * (hi - lo) / (count - 1) + 1/2)``, i.e. the evenly spaced point
  rounded **half up**, computed in exact integer arithmetic (no float round-half-to-even surprises);
  ``count == 1`` takes the midpoint ``floor((lo + hi) / 2 + 1/2)``;
* duplicates (when the range holds fewer than ``count`` layers) are dropped, so fewer layers may come back.

Examples: L=36 -> [12, 15, 18, 21, 24]; L=28 -> [9, 11, 14, 16, 18]; L=30 -> [10, 13, 15, 18, 20];
L=6 -> [2, 3, 4]; L=3 -> [1, 2]; L=1 -> [0].
"""

from __future__ import annotations

import operator
from collections.abc import Iterable


def _is_int(value) -> bool:
    """True for Python/NumPy integers (anything with ``__index__``), False for bools, floats and strings."""
    if isinstance(value, bool):
        return False
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


def probe_layers(num_layers: int, count: int = 5, explicit: Iterable[int] | None = None) -> list[int]:
    """Sorted 0-indexed probe layers of a model with ``num_layers`` layers.

    Default (``explicit is None``): ``count`` evenly spaced layers in ``[floor(L/3), floor(2L/3)]``, layer ``i`` =
    ``floor(floor(L/3) + i * (floor(2L/3) - floor(L/3)) / (count - 1) + 1/2)`` (rounded half up; the midpoint when
    ``count == 1``), duplicates removed. L=36 gives ``[12, 15, 18, 21, 24]``.

    ``explicit``: a list of 0-indexed layer ids used as given (sorted); ``count`` is then ignored. Each id must be an
    integer in ``[0, num_layers)`` and appear once.

    Raises:
        ValueError: ``num_layers`` or ``count`` not a positive integer, or a bad explicit list.
    """
    if not _is_int(num_layers) or num_layers < 1:
        raise ValueError(f"num_layers must be an integer >= 1, got {num_layers!r}")
    num_layers = operator.index(num_layers)
    if explicit is not None:
        if isinstance(explicit, (str, bytes)) or not isinstance(explicit, Iterable):
            raise ValueError(f"probe layers must be a list of layer ids, got {explicit!r}")
        layers = list(explicit)
        if not layers:
            raise ValueError("probe layers must not be empty")
        bad = [layer for layer in layers if not _is_int(layer) or not 0 <= layer < num_layers]
        if bad:
            raise ValueError(
                f"probe layers must be 0-indexed integers in [0, {num_layers - 1}] for a {num_layers}-layer model, "
                f"got {bad!r} in {layers!r}"
            )
        layers = [operator.index(layer) for layer in layers]
        if len(set(layers)) != len(layers):
            dups = sorted({layer for layer in layers if layers.count(layer) > 1})
            raise ValueError(f"probe layers must be distinct, got {dups!r} more than once in {layers!r}")
        return sorted(layers)
    if not _is_int(count) or count < 1:
        raise ValueError(f"probe layer count must be an integer >= 1, got {count!r}")
    lo, hi = num_layers // 3, (2 * num_layers) // 3
    if count == 1:
        return [(lo + hi + 1) // 2]
    span, steps = hi - lo, count - 1
    # floor(lo + i*span/steps + 1/2) in integers: lo + floor((2*i*span + steps) / (2*steps))
    return sorted({lo + (2 * i * span + steps) // (2 * steps) for i in range(count)})
