"""attncredit: attention-aware credit assignment for GRPO fine-tuning of LLM reasoning (arXiv 2510.13554)."""

from .attention import AttentionStats, attention_stats
from .config import AnchorGRPOConfig
from .credit import compute_token_weights
from .trainer import AnchorGRPOTrainer

__version__ = "0.1.0"
__all__ = ["AnchorGRPOConfig", "AnchorGRPOTrainer", "AttentionStats", "attention_stats", "compute_token_weights"]
