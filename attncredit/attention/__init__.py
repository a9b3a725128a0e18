"""Attention statistics of the policy: head distance (Eq. 7), WAAD (Eq. 9) and FAI (Eq. 10)."""

from .stats import AttentionStats, attention_stats

__all__ = ["AttentionStats", "attention_stats"]
