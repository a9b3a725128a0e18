"""See and measure the preplan-and-anchor rhythm of a model (Tables 1-2 of the paper; the definitions are in
"Analysis definitions" of ``docs/method.md``).

Modules (matplotlib is imported only by ``plots`` and when a token view is drawn):

* ``rhythm_analysis``: :func:`run_rhythm_analysis`, the analysis end to end (what ``attncredit analyze``
  runs);
* ``responses``: responses sampled through the evaluation generator (the trainer's prompt ids and end tokens)
  and packed into batches;
* ``forward``: one recorded forward over prompt + response: per-head statistics, entropy, attention bands;
* ``rhythm``: per-response traces, selected preplan / anchor tokens, gamma, Table 2 counts;
* ``peaks``: what a "peak" is (a parameter: the paper leaves it undefined);
* ``coupling``: the Table 2 statistics, receiver heads, random baselines and lifts;
* ``perturbation``: the Table 1 perturbation test (content-word Jaccard);
* ``plots`` / ``html``: PNG plots and the self-contained token page; ``report``: ``summary.md`` and page text;
* ``token_view``: :func:`log_token_view`, the training-time token view (HTML + PNG, logged to trackers);
* ``runs``: training runs compared from their ``metrics.jsonl`` (the paper's EMA of the running peak, plots, a
  table; ``attncredit compare``).
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
from .rhythm_analysis import RhythmConfig, run_rhythm_analysis
from .token_view import log_token_view

__all__ = [
    "PAPER_TABLE2",
    "PEAK_METHODS",
    "PeakRule",
    "ResponseCoupling",
    "RhythmConfig",
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
    "run_rhythm_analysis",
    "shuffled_follows_or_coincides",
    "table2",
]
