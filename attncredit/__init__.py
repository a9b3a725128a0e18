"""attncredit: attention-aware credit assignment for GRPO and PPO fine-tuning of LLM reasoning (arXiv 2510.13554).

The public names below are imported on first use (PEP 562), so ``import attncredit`` and the light commands
(``attncredit --help``, ``attncredit env``) do not import TRL, transformers or torch: ``attncredit env`` must
report even an environment in which those fail to import.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"
_EXPORTS = {  # public name -> module that defines it
    "AnchorGRPOConfig": ".config",
    "AnchorGRPOTrainer": ".trainer",
    "AnchorPPOConfig": ".ppo",
    "AnchorPPOTrainer": ".ppo",
    "AttentionStats": ".attention",
    "attention_stats": ".attention",
    "compute_gae": ".ppo",
    "compute_token_weights": ".credit",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'attncredit' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
