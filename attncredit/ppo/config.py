"""``AnchorPPOConfig``: ``AnchorGRPOConfig`` (TRL's GRPOConfig + ``credit_*``) plus the critic, GAE and value-loss knobs."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import AnchorGRPOConfig
from ..errors import ConfigError, first_line

WHITENING = ("batch", "none")


@dataclass
class AnchorPPOConfig(AnchorGRPOConfig):
    r"""PPO with a learned critic, GAE and attention-aware credit.

    The per-token advantage handed to TRL's loss is ``A^GAE_t * gamma_t``: GAE advantages from the critic (whitened
    over the batch's valid tokens by default), scaled by the attention credit ``gamma_t`` of ``credit_strategy``
    exactly as in GRPO. TRL's fields keep their meaning; ``num_generations`` may be 1 (one completion per prompt,
    classic PPO) and ``beta`` still adds TRL's KL *loss*, while ``kl_coef`` puts a KL penalty into the reward.
    """

    critic_model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Critic initialisation: a critic folder saved by AnchorPPOTrainer (backbone + "
            "value_head.safetensors), or a causal-LM folder / hub id / embedded name whose backbone gets a fresh value "
            "head. Default: the policy's weights with a fresh head (initialised to 0)."
        },
    )
    critic_learning_rate: float = field(
        default=1e-5,
        metadata={"help": "Learning rate of the critic's own AdamW optimizer (same scheduler type and warm-up ratio as "
                  "the policy's)."},
    )
    critic_warmup_steps: int = field(
        default=0,
        metadata={
            "help": "Number of first optimizer steps during which only the critic trains (VAPO's value pre-training): "
            "the policy's gradients are dropped, its weights stay as loaded; its learning-rate schedule still "
            "advances."
        },
    )
    gae_gamma: float = field(default=1.0, metadata={"help": "GAE discount gamma in [0, 1] (1.0: undiscounted, as "
                                                             "verl/VAPO for reasoning)."})
    gae_lambda: float = field(
        default=0.95, metadata={"help": "GAE lambda in [0, 1] of the actor's advantages (VC-PPO's decoupled GAE)."}
    )
    critic_gae_lambda: float = field(
        default=1.0,
        metadata={"help": "GAE lambda in [0, 1] of the critic's returns (VC-PPO: 1.0, an unbiased value target)."},
    )
    gae_lambda_length_alpha: float | None = field(
        default=None,
        metadata={
            "help": "If set (VAPO: 0.05), the actor's lambda of each completion is 1 - 1 / (alpha * length) "
            "(length-adaptive GAE) instead of gae_lambda. Off by default."
        },
    )
    kl_coef: float = field(
        default=0.0,
        metadata={
            "help": "Weight of the per-token KL penalty to the reference model in the reward, "
            "r_t -= kl_coef * (log pi_old - log pi_ref). 0 (default, as the paper): outcome reward only."
        },
    )
    advantage_whitening: str = field(
        default="batch",
        metadata={"help": "'batch': GAE advantages whitened to mean 0, std 1 over the valid tokens of the whole "
                  "generation batch (all ranks); 'none': raw GAE advantages."},
    )
    cliprange_value: float | None = field(
        default=0.5,
        metadata={"help": "Value clipping range: V is kept within +-cliprange_value of the rollout's value in the "
                  "clipped value loss (verl default 0.5). None: plain squared error."},
    )
    vf_coef: float = field(
        default=1.0,
        metadata={"help": "Weight of the value loss 0.5 * max((V - R)^2, (V_clip - R)^2) in the critic's objective."},
    )

    def __post_init__(self):
        # TRL's GRPOConfig rejects num_generations < 2 (group baselines need a group); PPO's baseline is the critic, so
        # one completion per prompt is allowed. TRL checks the same divisibility rules with a group size that divides
        # every per-process generation batch, then the real value is put back.
        classic = self.num_generations == 1
        if classic:
            steps = self.steps_per_generation or self.gradient_accumulation_steps
            local = self.per_device_train_batch_size * steps if self.generation_batch_size is None else self.generation_batch_size
            if local < 2:
                raise ConfigError(
                    f"num_generations=1 needs at least 2 completions per generation batch; got "
                    f"per_device_train_batch_size={self.per_device_train_batch_size} x steps_per_generation={steps}"
                )
            self.num_generations = local
            if self.num_generations_eval is None:
                self.num_generations_eval = 1
        try:
            super().__post_init__()
        except ValueError as e:
            if isinstance(e, ConfigError):
                raise
            raise ConfigError(first_line(e)) from e
        finally:
            if classic:
                self.num_generations = 1
        self._check_ppo_fields()

    def _check_ppo_fields(self) -> None:
        def fail(name, value, allowed):
            raise ConfigError(f"{name}={value!r} is invalid; allowed: {allowed}")

        for name in ("gae_gamma", "gae_lambda", "critic_gae_lambda"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                fail(name, value, "a number in [0, 1]")
        if self.gae_lambda_length_alpha is not None and not self.gae_lambda_length_alpha > 0:
            fail("gae_lambda_length_alpha", self.gae_lambda_length_alpha, "a number > 0 (VAPO: 0.05), or None")
        if not self.critic_learning_rate > 0:
            fail("critic_learning_rate", self.critic_learning_rate, "a number > 0")
        if isinstance(self.critic_warmup_steps, bool) or not isinstance(self.critic_warmup_steps, int) or self.critic_warmup_steps < 0:
            fail("critic_warmup_steps", self.critic_warmup_steps, "an integer >= 0")
        if self.kl_coef < 0:
            fail("kl_coef", self.kl_coef, "a number >= 0")
        if self.advantage_whitening not in WHITENING:
            fail("advantage_whitening", self.advantage_whitening, ", ".join(WHITENING))
        if self.cliprange_value is not None and not self.cliprange_value > 0:
            fail("cliprange_value", self.cliprange_value, "a number > 0, or None for no clipping")
        if not self.vf_coef > 0:
            fail("vf_coef", self.vf_coef, "a number > 0")
        if self.fp16:  # one GradScaler would serve two optimizers: accelerate unscales both at the critic's clip
            fail("fp16", self.fp16, "False (AnchorPPOTrainer trains in bf16 or fp32)")
