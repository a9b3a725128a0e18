"""See and measure the preplan-and-anchor rhythm of a model (PAPER.md §4-5, Tables 1-2).

Modules (matplotlib is imported only by ``plots`` and when a token view is drawn):

* ``forward``: one recorded forward over prompt + response: per-head statistics, entropy, attention bands;
* ``rhythm``: per-response traces, selected preplan / anchor tokens, gamma, Table 2 counts;
* ``peaks``: what a "peak" is (a parameter: PAPER.md §9 A8);
* ``coupling``: the Table 2 statistics, receiver heads, random baselines and lifts;
* ``perturbation``: the Table 1 perturbation test (content-word Jaccard);
* ``plots`` / ``html``: PNG plots and the self-contained token page;
* ``token_view``: :func:`log_token_view`, the training-time token view (HTML + PNG, logged to trackers).

The command line is ``scripts/analyze_rhythm.py``.
"""

from .coupling import (
    PAPER_TABLE2,
    ResponseCoupling,
    cooccurrence,
    excess_kurtosis,
    follows_or_coincides,
    lift,
    receiver_heads,
    response_coupling,
    shuffled_follows_or_coincides,
    table2,
)
from .peaks import PEAK_METHODS, PeakRule, find_peaks
from .perturbation import STOP_WORDS, content_words, jaccard
from .token_view import log_token_view

__all__ = [
    "PAPER_TABLE2",
    "PEAK_METHODS",
    "PeakRule",
    "ResponseCoupling",
    "STOP_WORDS",
    "cooccurrence",
    "content_words",
    "excess_kurtosis",
    "find_peaks",
    "follows_or_coincides",
    "jaccard",
    "lift",
    "log_token_view",
    "receiver_heads",
    "response_coupling",
    "shuffled_follows_or_coincides",
    "table2",
]
