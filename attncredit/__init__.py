"""attncredit: attention-aware credit assignment for GRPO and PPO fine-tuning of LLM reasoning (arXiv 2510.13554)."""

from .attention import AttentionStats, attention_stats
from .config import AnchorGRPOConfig
from .credit import compute_token_weights
from .ppo import AnchorPPOConfig, AnchorPPOTrainer, compute_gae
from .trainer import AnchorGRPOTrainer

__version__ = "0.1.0"
__all__ = [
    "AnchorGRPOConfig",
    "AnchorGRPOTrainer",
    "AnchorPPOConfig",
    "AnchorPPOTrainer",
    "AttentionStats",
    "attention_stats",
    "compute_gae",
    "compute_token_weights",
]
