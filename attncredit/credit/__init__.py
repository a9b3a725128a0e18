"""Credit assignment: per-token advantage weights gamma from attention statistics (docs/method.md).

``compute_token_weights(strategy, ...)`` turns group-averaged WAAD / FAI (or entropy) into gamma [B, N];
``token_advantages`` multiplies the sequence advantages by it, with a sign mode and an optional
normalisation. Strategies live in a registry: ``list_strategies()``, ``register_strategy``.
"""

from . import strategies  # noqa: F401  (registers the built-in strategies)
from .advantages import NORMALIZATIONS, SIGN_MODES, token_advantages
from .registry import STRATEGIES, CreditBatch, check_options, list_strategies, register_strategy, required_statistics
from .selection import quantile_count, top_quantile_mask
from .weights import NonFiniteStatisticError, compute_token_weights

__all__ = [
    "NORMALIZATIONS",
    "NonFiniteStatisticError",
    "SIGN_MODES",
    "STRATEGIES",
    "CreditBatch",
    "check_options",
    "compute_token_weights",
    "list_strategies",
    "quantile_count",
    "register_strategy",
    "required_statistics",
    "token_advantages",
    "top_quantile_mask",
]
