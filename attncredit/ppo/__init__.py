"""PPO with a learned critic, GAE and attention credit: ``AnchorPPOConfig``, ``AnchorPPOTrainer`` and the maths
(``compute_gae``, token rewards, the clipped value loss, whitening) usable without the trainer. docs/ppo.md has the
equations."""

from .config import AnchorPPOConfig
from .critic import ValueModel
from .gae import compute_gae, length_adaptive_lambda, outcome_token_rewards
from .losses import ValueLoss, clipped_value_loss, explained_variance, masked_mean_var, whiten
from .trainer import AnchorPPOTrainer

__all__ = [
    "AnchorPPOConfig",
    "AnchorPPOTrainer",
    "ValueLoss",
    "ValueModel",
    "clipped_value_loss",
    "compute_gae",
    "explained_variance",
    "length_adaptive_lambda",
    "masked_mean_var",
    "outcome_token_rewards",
    "whiten",
]
