"""``AnchorPPOTrainer``: PPO with a learned critic and GAE on TRL's GRPOTrainer machinery, with attention credit.

One step:

1. TRL generates and scores the rollouts (``_generate_and_score_completions``; its ``_calculate_rewards`` gives the
   per-function rewards, combined with ``reward_weights`` into the outcome reward ``R``).
2. ``_rollout_advantages``: the critic's values ``V_t`` (no-grad forward), token rewards (``R`` on the last
   completion token, minus ``kl_coef * (log pi_old - log pi_ref)`` per token when ``kl_coef > 0``), GAE advantages
   with ``gae_lambda`` (or VAPO's length-adaptive lambda) and returns with ``critic_gae_lambda``, then whitening over
   the batch's valid tokens. These (B, C) advantages take the place of GRPO's group-normalised ones.
3. ``AnchorGRPOTrainer`` scales them by the attention credit gamma, read in a forward TRL already runs:
   ``A~_t = A^GAE_t * gamma_t`` (the same strategies, sign modes and recording path as GRPO).
4. TRL's clipped surrogate loss (``loss_type``) updates the policy; after each micro-batch the critic takes the
   clipped value loss on the same rows, and its own AdamW steps with the policy's optimizer.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch
from accelerate.utils import DistributedType
from transformers import get_scheduler
from trl.trainer.utils import use_adapter

from ..errors import ConfigError, first_line
from ..model_card import PPO_PAPER
from ..models import resolve_model_name
from ..output_dir import CRITIC_FOLDER
from ..trainer import AnchorGRPOTrainer
from .config import AnchorPPOConfig
from .critic import ValueModel
from .gae import compute_gae, length_adaptive_lambda, outcome_token_rewards
from .losses import clipped_value_loss, explained_variance, masked_mean_var, whiten

#: Why DeepSpeed is refused (accelerate 1.16, transformers' Trainer, TRL 1.16): ``Accelerator.backward`` under DeepSpeed
#: calls ``deepspeed_engine_wrapped.backward(loss)`` (backward, then ``engine.step()`` at the accumulation boundary)
#: on ONE engine, the first one ``prepare`` built; a later prepare only logs "A wrapped DeepSpeed engine reference is
#: currently tied", and several ``deepspeed_plugins`` change the config of a prepare, not that engine. The critic is
#: prepared in ``__init__``, the policy by the Trainer in ``train()`` (``deepspeed_init``), so the policy's loss would
#: run and step the critic's engine; ``clip_grad_norm_`` returns that one engine's norm too. The critic's checkpoint
#: code (``torch.distributed.checkpoint`` full state dicts) does not read ZeRO-3's partitioned parameters or ZeRO's
#: flat optimizer partitions either. Making it sound needs a second Accelerator with its own engine for the critic.
UNSUPPORTED_DEEPSPEED = (
    "AnchorPPOTrainer does not support DeepSpeed (ZeRO-2/3): accelerate routes every accelerator.backward() to one "
    "DeepSpeed engine (Accelerator.deepspeed_engine_wrapped, the first one prepared), which would be the critic's "
    "(prepared when the trainer is built, before the Trainer prepares the policy in train()), so the policy's loss "
    "would run and step the critic's engine, and the critic's checkpoint code cannot read ZeRO's partitioned state; "
    "for PPO on several GPUs use FSDP2 (recipes/accelerate/fsdp2.yaml: policy and critic both sharded) or DDP "
    "(recipes/accelerate/multi_gpu.yaml)"
)
UNSUPPORTED_FSDP1 = (
    "AnchorPPOTrainer supports FSDP2 only (fsdp_version: 2, recipes/accelerate/fsdp2.yaml), not FSDP1: the critic is "
    "sharded, saved and resumed through FSDP2's per-parameter state dicts"
)
CRITIC_STATE_FILE = "critic_optimizer.pt"
# The image inputs of a TRL 1.16 rollout and of its micro-batches, as the model's forward takes them (token type ids
# already cover the completion); TRL's bookkeeping (num_images, num_tiles) is not among them.
VISION_INPUTS = ("pixel_values", "image_grid_thw", "pixel_attention_mask", "spatial_shapes", "image_sizes",
                 "token_type_ids", "mm_token_type_ids", "image_position_ids")  # fmt: skip


class AnchorPPOTrainer(AnchorGRPOTrainer):
    """PPO trainer: critic + GAE advantages, attention credit on top (``AnchorPPOConfig``).

    ``critic``: an optional ``ValueModel`` to train instead of the one ``critic_model_name_or_path`` names.
    Distributed: single process, DDP and FSDP2 (the critic is prepared by accelerate with its optimizer); DeepSpeed
    is refused (:data:`UNSUPPORTED_DEEPSPEED` says why).
    """

    checkpoint_kind = "ppo"  # its checkpoints hold the critic: a GRPO trainer refuses them, and this one GRPO's
    _tag_names = ["trl", "ppo", "attncredit"]  # the model card (TRL's, with attncredit's sections) says PPO
    _name = "PPO"
    _paper = PPO_PAPER

    def __init__(self, model, reward_funcs=None, args: AnchorPPOConfig | None = None, *pargs, critic: ValueModel | None = None, **kwargs):
        if args is None:
            name = model if isinstance(model, str) else model.config._name_or_path
            args = AnchorPPOConfig(output_dir=f"{str(name).rstrip('/').split('/')[-1]}-AnchorPPO")
        if not isinstance(args, AnchorPPOConfig):
            raise ConfigError(f"args must be an AnchorPPOConfig, got {type(args).__name__}")
        state = args.distributed_state  # accelerate's, known before the models load
        if state is not None and state.distributed_type == DistributedType.DEEPSPEED:
            raise ConfigError(UNSUPPORTED_DEEPSPEED)
        self._critic_given = critic  # loaded, when None, by _before_loading: after the input checks, before the policy
        # kl_coef needs reference log-probs, which TRL sets up (reference model, or the PEFT adapter switched off) only
        # when its KL loss is on: build the trainer with beta = kl_coef, then switch TRL's KL loss back off.
        borrow_beta = args.kl_coef > 0 and args.beta == 0.0
        if borrow_beta:
            args.beta = args.kl_coef
        try:
            super().__init__(model, reward_funcs, args, *pargs, **kwargs)
        finally:
            if borrow_beta:
                args.beta = 0.0
        if borrow_beta:
            self.beta = 0.0
        critic = self._critic_given
        del self._critic_given
        if self.is_deepspeed_enabled:
            raise ConfigError(UNSUPPORTED_DEEPSPEED)
        if self.is_fsdp_enabled and getattr(self.accelerator.state.fsdp_plugin, "fsdp_version", 1) != 2:
            raise ConfigError(UNSUPPORTED_FSDP1)
        if args.disable_dropout:
            from trl.trainer.utils import disable_dropout_in_model

            disable_dropout_in_model(critic)
        if args.gradient_checkpointing:
            checkpointing_kwargs = args.gradient_checkpointing_kwargs or {"use_reentrant": False}
            if hasattr(critic.backbone, "activation_checkpointing_enable"):  # transformers >= 5.20: the old name warns
                critic.backbone.activation_checkpointing_enable(activation_checkpointing_kwargs=checkpointing_kwargs)
            else:
                critic.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpointing_kwargs)
        optimizer = torch.optim.AdamW(
            [p for p in critic.parameters() if p.requires_grad],
            lr=args.critic_learning_rate,
            betas=(args.adam_beta1, args.adam_beta2),
            eps=args.adam_epsilon,
            weight_decay=args.weight_decay,
        )
        self.critic, self.critic_optimizer = self.accelerator.prepare(critic, optimizer)
        self.critic_lr_scheduler = None  # made with the policy's scheduler, once the number of steps is known
        self._rewards_per_func: torch.Tensor | None = None  # all ranks' rewards of the batch being scored
        self._critic_batch: dict | None = None  # the micro-batch of the policy loss, for the critic update

    def _before_loading(self, model, reward_funcs, args, kwargs: dict) -> None:
        """The GRPO trainer's checks of run folder and data, then the critic (a bad critic fails before the policy
        loads)."""
        super()._before_loading(model, reward_funcs, args, kwargs)
        if self._critic_given is None:
            self._critic_given = self._load_critic(model, args)

    @staticmethod
    def _load_critic(model, args: AnchorPPOConfig) -> ValueModel:
        init_kwargs = {k: v for k, v in (args.model_init_kwargs or {}).items() if k in ("dtype", "attn_implementation", "trust_remote_code", "revision")}
        name = args.critic_model_name_or_path
        if name is not None:
            if name.startswith(("/", ".", "~")) and not Path(name).expanduser().is_dir():
                raise ConfigError(
                    f"critic_model_name_or_path={name!r} is not a folder; allowed: a critic or causal-LM folder, a hub "
                    "id, or an embedded model name"
                )
            try:
                path = resolve_model_name(name)
            except ValueError as e:  # ConfigError, or the hub's id validation
                raise ConfigError(f"critic_model_name_or_path: {first_line(e)}") from e
            return ValueModel.from_pretrained(path, **init_kwargs)
        if isinstance(model, str):
            return ValueModel.from_pretrained(resolve_model_name(model), **init_kwargs)
        if hasattr(model, "peft_config"):
            raise ConfigError(
                "a PEFT model instance as policy needs critic= or critic_model_name_or_path (its weights carry adapters); "
                "or pass the model name with peft_config"
            )
        return ValueModel.from_causal_lm(model)

    # ----------------------------------------------------------------------------------------------------
    # Rollout: rewards, values, GAE
    # ----------------------------------------------------------------------------------------------------
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._rewards_per_func = rewards_per_func
        return rewards_per_func

    def _local_outcome_rewards(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's rows of the weighted reward sum (as TRL combines them) and which rows are scorable."""
        rewards_per_func, self._rewards_per_func = self._rewards_per_func, None
        start = self.accelerator.process_index * batch_size
        local = rewards_per_func[start : start + batch_size]
        scorable = ~torch.isnan(local).all(dim=1)  # TRL: every reward function returned None -> no learning signal
        rewards = (local * self.reward_weights.to(local.device)[None]).nansum(dim=1)
        return rewards, scorable

    @torch.no_grad()
    def _critic_values(self, input_ids, attention_mask, logits_to_keep, vision_inputs: dict) -> torch.Tensor:
        """The critic's values of a rollout, in eval mode (no dropout), chunk by chunk; with images in one forward
        (image inputs are indexed by image or patch, not by row: as the policy's recorded rollout forward)."""
        batch_size = self.args.per_device_train_batch_size if self.model.training else self.args.per_device_eval_batch_size
        if vision_inputs:
            batch_size = input_ids.size(0)
        training = self.critic.training
        self.critic.eval()
        try:
            return torch.cat(
                [
                    self.critic(
                        input_ids[i : i + batch_size], attention_mask[i : i + batch_size], logits_to_keep,
                        **vision_inputs,
                    )
                    for i in range(0, input_ids.size(0), batch_size)
                ]
            )
        finally:
            self.critic.train(training)

    @torch.no_grad()
    def _rollout_kl(self, output, input_ids, attention_mask, logits_to_keep) -> torch.Tensor:
        """``log pi_old - log pi_ref`` per completion token, reusing TRL's old/reference log-probs when it has them."""
        batch_size = self.args.per_device_train_batch_size if self.model.training else self.args.per_device_eval_batch_size
        old = output.get("old_per_token_logps")
        if old is None:  # generation aligned with optimizer steps: TRL ran no old-log-prob forward
            old, _, _ = self._get_per_token_logps_and_entropies(
                self.model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size
            )
        ref = output.get("ref_per_token_logps")
        if ref is None:
            if self.ref_model is not None:
                ref, _, _ = self._get_per_token_logps_and_entropies(
                    self.ref_model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size
                )
            else:  # PEFT: the reference is the policy with its adapter off (or TRL's "ref" adapter)
                model = self.accelerator.unwrap_model(self.model)
                with use_adapter(model, adapter_name="ref" if "ref" in model.peft_config else None):
                    ref, _, _ = self._get_per_token_logps_and_entropies(
                        self.model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size
                    )
        return old - ref

    @torch.no_grad()
    def _rollout_advantages(self, output: dict) -> torch.Tensor:
        """Whitened GAE advantages (B, C) of the rollout; stores the critic's targets in ``output``.

        Adds ``old_values`` (V of the rollout), ``returns`` (the critic's targets) and ``value_mask`` (valid tokens
        of scorable rows) to the batch, which TRL then shuffles and splits with the rest.
        """
        args = self.args
        mode = "train" if self.model.training else "eval"
        completion_mask = output["completion_mask"]
        if "tool_mask" in output:
            completion_mask = completion_mask * output["tool_mask"]
        logits_to_keep = completion_mask.size(1)
        rewards, scorable = self._local_outcome_rewards(completion_mask.size(0))
        mask = completion_mask.bool() & scorable[:, None]
        input_ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
        attention_mask = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
        values = self._critic_values(input_ids, attention_mask, logits_to_keep, _vision_inputs(output))
        values = torch.where(mask, values, 0.0)
        kl = self._rollout_kl(output, input_ids, attention_mask, logits_to_keep) if args.kl_coef > 0 else None
        token_rewards = outcome_token_rewards(rewards, mask, kl=kl, kl_coef=args.kl_coef)
        lam = args.gae_lambda
        if args.gae_lambda_length_alpha is not None:
            lam = length_adaptive_lambda(mask, args.gae_lambda_length_alpha)
        advantages, returns = compute_gae(token_rewards, values, mask, gamma=args.gae_gamma, lam=lam)
        if args.gae_lambda_length_alpha is not None or args.critic_gae_lambda != args.gae_lambda:
            _, returns = compute_gae(token_rewards, values, mask, gamma=args.gae_gamma, lam=args.critic_gae_lambda)

        def reduce(x):
            return self.accelerator.reduce(x, reduction="sum")

        if args.advantage_whitening == "batch":
            advantages = whiten(advantages, mask, reduce)
        output["old_values"], output["returns"], output["value_mask"] = values, returns, mask.to(values.dtype)
        self._log_completion_advantages(advantages, mask)

        metrics = self._metrics[mode]
        returns_mean, _ = masked_mean_var(returns, mask, reduce)
        advantages_mean, advantages_var = masked_mean_var(advantages, mask, reduce)
        metrics["critic/returns_mean"].append(returns_mean.item())
        metrics["critic/explained_variance"].append(explained_variance(values, returns, mask, reduce).item())
        metrics["ppo/advantages_mean"].append(advantages_mean.item())
        metrics["ppo/advantages_std"].append(advantages_var.sqrt().item())
        if kl is not None:
            kl_mean, _ = masked_mean_var(kl, mask, reduce)
            metrics["ppo/reward_kl"].append(kl_mean.item())
        return advantages

    def _log_completion_advantages(self, advantages: torch.Tensor, mask: torch.Tensor) -> None:
        """Put each completion's mean GAE advantage over its valid tokens (before credit) in TRL's completions
        table instead of the group advantage TRL logged for it (TRL 1.16: ``_generate_and_score_completions``
        extends the deque ``_logs["advantages"]`` with the gathered group advantages of this batch, in process
        order), which PPO does not use."""
        per_completion = (advantages * mask).sum(1) / mask.sum(1).clamp(min=1)
        gathered = self.accelerator.gather(per_completion).tolist()
        logged = self._logs["advantages"]
        for _ in range(min(len(gathered), len(logged))):
            logged.pop()
        logged.extend(gathered)

    # ----------------------------------------------------------------------------------------------------
    # Update: policy (TRL's loss), then the critic on the same micro-batch
    # ----------------------------------------------------------------------------------------------------
    def _compute_loss(self, model, inputs):
        if self.model.training:
            self._critic_batch = inputs
        return super()._compute_loss(model, inputs)

    def training_step(self, model, inputs, num_items_in_batch):
        loss = super().training_step(model, inputs, num_items_in_batch)
        batch, self._critic_batch = self._critic_batch, None
        if self.state.global_step < self.args.critic_warmup_steps:
            for p in model.parameters():  # critic warm-up: the policy keeps its weights (optimizers skip grad None)
                p.grad = None
        self._critic_step(batch)
        return loss

    def _critic_step(self, batch: dict) -> None:
        """Clipped value loss on one micro-batch; the critic's optimizer steps with the policy's (last micro-batch)."""
        args = self.args
        logits_to_keep = batch["completion_ids"].size(1)
        input_ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
        attention_mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
        sync = self.accelerator.sync_gradients
        with contextlib.nullcontext() if sync else self.accelerator.no_sync(self.critic):
            values = self.critic(input_ids, attention_mask, logits_to_keep, **_vision_inputs(batch))
            out = clipped_value_loss(values, batch["old_values"], batch["returns"], batch["value_mask"], args.cliprange_value)
            self.accelerator.backward(args.vf_coef * out.loss / self.current_gradient_accumulation_steps)
        stats = self.accelerator.reduce(torch.stack([out.loss.detach(), out.clipfrac, out.vpred_mean]), reduction="mean")
        metrics = self._metrics["train"]
        for name, value in zip(("critic/value_loss", "critic/clipfrac", "critic/vpred_mean"), stats.tolist()):
            metrics[name].append(value)
        if sync:
            if args.max_grad_norm > 0:
                grad_norm = self.accelerator.clip_grad_norm_(self.critic.parameters(), args.max_grad_norm)
                metrics["critic/grad_norm"].append(float(grad_norm))
            # The learning rate this step used, read before the scheduler steps: transformers logs learning_rate the
            # same way, and like it only the logging step's value is kept (not a mean over the logging period).
            metrics["critic/lr"] = [self.critic_lr_scheduler.get_last_lr()[0]]
            self.critic_optimizer.step()
            self.critic_lr_scheduler.step()
            self.critic_optimizer.zero_grad()

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        scheduler = super().create_scheduler(num_training_steps, optimizer)
        self.critic_lr_scheduler = get_scheduler(
            self.args.lr_scheduler_type,
            optimizer=self.critic_optimizer,
            num_warmup_steps=self.args.get_warmup_steps(num_training_steps),
            num_training_steps=num_training_steps,
            scheduler_specific_kwargs=self.args.lr_scheduler_kwargs,
        )
        return scheduler

    # ----------------------------------------------------------------------------------------------------
    # Saving and resuming the critic
    # ----------------------------------------------------------------------------------------------------
    def _critic_state(self, with_optimizer: bool):
        """Full (unsharded) critic and optimizer state dicts on CPU, gathered from every rank (collective)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model_state = get_model_state_dict(self.critic, options=options)
        optim_state = None
        if with_optimizer:
            optim_state = get_optimizer_state_dict(self.critic, self.critic_optimizer.optimizer, options=options)
        return model_state, optim_state

    def save_critic(self, folder: str, with_optimizer: bool = False) -> None:
        """Write the critic (``ValueModel`` folder) and optionally its optimizer and scheduler state to ``folder``.
        Every rank must call it."""
        model_state, optim_state = self._critic_state(with_optimizer)
        if self.accelerator.is_main_process:
            self.accelerator.unwrap_model(self.critic).save_pretrained(folder, state_dict=model_state)
            if with_optimizer:
                torch.save(
                    {"optimizer": optim_state, "scheduler": self.critic_lr_scheduler.state_dict()},
                    os.path.join(folder, CRITIC_STATE_FILE),
                )
        self.accelerator.wait_for_everyone()

    def _write_checkpoint(self, model, trial):
        # The critic goes in first: the Trainer writes trainer_state.json last, and a checkpoint that has it must be
        # complete (a run killed right after it resumes from there). A failed save of either is handled as one by
        # AnchorGRPOTrainer._save_checkpoint.
        checkpoint = os.path.join(self._get_output_dir(trial=trial), f"checkpoint-{self.state.global_step}")
        self.save_critic(os.path.join(checkpoint, CRITIC_FOLDER), with_optimizer=not self.args.save_only_model)
        super()._write_checkpoint(model, trial)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        super().save_model(output_dir, _internal_call)
        if not _internal_call:  # the final model; checkpoints save the critic with its optimizer above
            self.save_critic(os.path.join(output_dir or self.args.output_dir, CRITIC_FOLDER))

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        from safetensors.torch import load_file
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict

        folder = os.path.join(checkpoint, CRITIC_FOLDER)
        if not os.path.isdir(folder):
            raise ConfigError(f"checkpoint {checkpoint} has no {CRITIC_FOLDER}/ folder: it was not written by AnchorPPOTrainer")
        state = {f"backbone.{k}": v for k, v in _load_backbone_state(folder).items()}
        state.update({f"value_head.{k}": v for k, v in load_file(os.path.join(folder, "value_head.safetensors")).items()})
        options = StateDictOptions(full_state_dict=True)
        set_model_state_dict(self.critic, state, options=options)
        saved = torch.load(os.path.join(folder, CRITIC_STATE_FILE), map_location="cpu", weights_only=True)
        set_optimizer_state_dict(self.critic, self.critic_optimizer.optimizer, saved["optimizer"], options=options)
        self.critic_lr_scheduler.load_state_dict(saved["scheduler"])


def _load_backbone_state(folder: str) -> dict:
    """The backbone weights a ``save_pretrained`` wrote to ``folder`` (one or several safetensors files)."""
    from safetensors.torch import load_file

    files = sorted(f for f in os.listdir(folder) if f.endswith(".safetensors") and f != "value_head.safetensors")
    state = {}
    for f in files:
        state.update(load_file(os.path.join(folder, f)))
    return state


def _vision_inputs(batch: dict) -> dict:
    """The :data:`VISION_INPUTS` a rollout or micro-batch carries (none for text-only models)."""
    return {key: batch[key] for key in VISION_INPUTS if batch.get(key) is not None}
