"""``AnchorGRPOTrainer``: TRL's GRPOTrainer with attention-aware per-token credit (PAPER.md §6).

One step, as in DESIGN.md:

1. TRL generates and scores the rollouts and computes the group-normalised advantage ``A`` (B,).
2. The attention statistics are read in the forward that already runs over prompt + completion with the
   rollout's weights:
   * when TRL computes old log-probs (vLLM importance-sampling correction, or generation not aligned
     with optimizer steps), from that no-grad forward, inside ``_generate_and_score_completions``;
   * otherwise from the loss forward of each micro-batch, before its loss is formed: generation is then
     aligned with optimizer steps, so the weights there are the ones that generated the rollout.
   Reference-model and PEFT-reference passes never record.
3. Head groups (Eq. 7-8) -> local WAAD and global FAI per token -> ``gamma`` (B, C) by ``credit_strategy``.
4. TRL's loss receives the 2-D advantages ``A[:, None] * gamma`` (Eq. 12-13).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import time

import torch
from torch import nn
from trl import GRPOTrainer

from .attention.groups import group_token_stats
from .attention.probes import probe_layers
from .attention.recording import enable_recording, record_attention
from .analysis.token_view import trainer_token_view
from .callbacks import MetricsJsonlCallback
from .config import AnchorGRPOConfig
from .credit import NonFiniteStatisticError, compute_token_weights, required_statistics, token_advantages
from .data.templates import has_prefill, prefill_prompt_ids
from .errors import ConfigError

logger = logging.getLogger(__name__)


class NonFiniteError(RuntimeError):
    """NaN or inf where a training step needs finite numbers (rewards, attention statistics)."""


class AnchorGRPOTrainer(GRPOTrainer):
    """GRPO trainer whose advantages are scaled per token by attention credit (``AnchorGRPOConfig``).

    With ``credit_strategy="none"`` it is TRL's GRPOTrainer, step for step.
    """

    def __init__(self, model, reward_funcs=None, args: AnchorGRPOConfig | None = None, *pargs, **kwargs):
        if args is None:
            name = model if isinstance(model, str) else model.config._name_or_path
            args = AnchorGRPOConfig(output_dir=f"{str(name).rstrip('/').split('/')[-1]}-AnchorGRPO")
        if not isinstance(args, AnchorGRPOConfig):
            raise ConfigError(f"args must be an AnchorGRPOConfig, got {type(args).__name__}")
        super().__init__(model, reward_funcs, args, *pargs, **kwargs)
        self.add_callback(MetricsJsonlCallback())
        self.reward_funcs = [_finite_rewards(f, name) for f, name in zip(self.reward_funcs, self.reward_func_names)]
        self.credit_on = args.credit_strategy != "none"
        needs = set(required_statistics(args.credit_strategy))
        self._needs_attention = bool(needs & {"waad", "fai"})
        self._needs_entropy = "entropy" in needs
        self.probe_layers: list[int] = []
        if self._needs_attention:
            base = self.accelerator.unwrap_model(self.model)
            # The check forward needs whole parameters: under ZeRO-3 / FSDP they are sharded until training starts,
            # so there the first recorded forward does the check instead.
            enable_recording(base, verify=not (self.is_deepspeed_enabled or self.is_fsdp_enabled))
            num_layers = base.config.get_text_config().num_hidden_layers
            self.probe_layers = probe_layers(num_layers, args.credit_num_probe_layers, args.credit_probe_layers)
            logger.info("attncredit: %s credit on probe layers %s", args.credit_strategy, self.probe_layers)
        self._record_rollout = False  # set while TRL's old-log-prob forward is the next policy forward
        self._rollout_gamma: torch.Tensor | None = None
        self._loss_inputs: dict | None = None  # micro-batch whose advantages the loss forward must scale
        self._credit_seconds = 0.0
        self._credit_calls = (-1, 0)  # (global step, index of the latest credit call in it): seeds random credit
        self._credit_clock = time.perf_counter()
        self._credit_summaries: list[dict[str, torch.Tensor]] = []
        self._stats_clocks = []  # StatsClock of every recorded forward since the last log
        self._latest_groups = None  # HeadGroups of the latest chunk, for the head-group log
        self._last_head_groups = None
        self._token_view_step = -1  # global step of the latest token view (one per step)

    def _tokenize_prompts(self, prompts: list):
        """TRL's prompt tokenization, except that a prompt ending with an assistant prefill (the ``r1`` template's
        "Let me solve this step by step.\\n<think>", as in TinyZero) is continued rather than closed."""
        if self._is_vlm or self.environment_factories is not None or not has_prefill(prompts):
            return super()._tokenize_prompts(prompts)
        ids = prefill_prompt_ids(
            self.processing_class,
            prompts,
            tools=self.tools or None,
            chat_template=self.chat_template,
            **self.chat_template_kwargs,
        )
        return ids, None, {}

    # ----------------------------------------------------------------------------------------------------
    # Where the statistics come from
    # ----------------------------------------------------------------------------------------------------
    def _trl_runs_old_logps_forward(self) -> bool:
        """Mirror of GRPOTrainer's rule for running a no-grad forward of the policy for old log-probs."""
        generate_every = self.args.steps_per_generation * self.num_iterations
        return self.args.gradient_accumulation_steps % generate_every != 0 or (
            self.use_vllm and self.vllm_importance_sampling_correction
        )

    def _reads_forward(self) -> bool:
        """Whether the strategy needs a statistic of the policy forward (attention or entropy)."""
        return self._needs_attention or self._needs_entropy

    def _generate_and_score_completions(self, inputs):
        credit_now = self.credit_on and self.model.training
        self._record_rollout = credit_now and self._reads_forward() and self._trl_runs_old_logps_forward()
        self._rollout_gamma = None
        try:
            output = super()._generate_and_score_completions(inputs)
        finally:
            self._record_rollout = False
        if credit_now and not self._reads_forward():  # e.g. random credit: no statistic of the forward
            self._rollout_gamma = self._credit_weights(None, output["completion_mask"], None)
        if self._rollout_gamma is not None:
            output["advantages"] = self._scaled_advantages(
                output["advantages"], self._rollout_gamma, output["completion_mask"]
            )
            self._rollout_gamma = None
        return output

    def _compute_loss(self, model, inputs):
        if self.credit_on and self.model.training and inputs["advantages"].dim() == 1:
            # No old-log-prob forward ran for these rollouts: read the statistics in this loss forward. The dict
            # is TRL's buffered micro-batch, so later iterations over it (num_iterations > 1) reuse the result.
            self._loss_inputs = inputs
        try:
            return super()._compute_loss(model, inputs)
        finally:
            self._loss_inputs = None

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
        if self._record_rollout:
            self._record_rollout = False  # only TRL's old-log-prob pass; the reference pass comes later
            logps, entropies, aux, gamma = self._recorded_forward(
                model, input_ids, attention_mask, logits_to_keep, *args, **kwargs
            )
            self._rollout_gamma = gamma
            if self.log_completions:  # TRL's completions table gets a column with the amplified tokens marked
                completion_mask = attention_mask[:, -logits_to_keep:]
                self._log_completion_extra("amplified", self._marked_completions(input_ids[:, -logits_to_keep:], gamma, completion_mask))
            return logps, entropies, aux
        if self._loss_inputs is not None:
            inputs, self._loss_inputs = self._loss_inputs, None
            logps, entropies, aux, gamma = self._recorded_forward(
                model, input_ids, attention_mask, logits_to_keep, *args, **kwargs
            )
            inputs["advantages"] = self._scaled_advantages(inputs["advantages"], gamma, inputs["completion_mask"])
            return logps, entropies, aux
        return super()._get_per_token_logps_and_entropies(model, input_ids, attention_mask, logits_to_keep, *args, **kwargs)

    def _recorded_forward(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None, compute_entropy=False, **kwargs):
        """TRL's log-prob forward, chunk by chunk, recording the probe layers; returns (logps, ent, aux, gamma)."""
        extra = {k: v for k, v in kwargs.items() if v is not None and k != "compute_aux_loss"}
        if extra:
            raise ConfigError(f"attention credit supports text-only models; got inputs {sorted(extra)}")
        need_entropy = compute_entropy or self._needs_entropy
        batch_size = batch_size or input_ids.size(0)
        logps, entropies, aux_losses, gammas = [], [], [], []
        for start in range(0, input_ids.size(0), batch_size):
            ids, mask = input_ids[start : start + batch_size], attention_mask[start : start + batch_size]
            response_mask = mask.clone()
            response_mask[:, : ids.size(1) - logits_to_keep] = 0
            recorder = (
                record_attention(
                    model,
                    self.probe_layers,
                    attention_mask=mask,
                    response_mask=response_mask,
                    window=self.args.credit_window,
                    fai_horizon=tuple(self.args.credit_fai_horizon),
                    backend=self.args.credit_stats_backend,
                )
                if self._needs_attention
                else contextlib.nullcontext()
            )
            with recorder:
                lp, ent, aux = super()._get_per_token_logps_and_entropies(
                    model, ids, mask, logits_to_keep, compute_entropy=need_entropy, **kwargs
                )
            logps.append(lp)
            entropies.append(ent)
            aux_losses.append(aux)
            stats = None
            if self._needs_attention:
                stats = recorder.stats
                self._stats_clocks.append(recorder.clock)
            gammas.append(self._credit_weights(stats, response_mask[:, -logits_to_keep:], ent))
            self._maybe_token_view(ids[:, -logits_to_keep:], gammas[-1], response_mask[:, -logits_to_keep:])
        entropy = torch.cat(entropies) if compute_entropy else None
        aux = torch.stack(aux_losses).mean() if aux_losses[0] is not None else None
        return torch.cat(logps), entropy, aux, torch.cat(gammas)

    # ----------------------------------------------------------------------------------------------------
    # From statistics to gamma and advantages
    # ----------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _credit_weights(self, layer_stats, completion_mask, entropy) -> torch.Tensor:
        """gamma [B, C] of one forward chunk from its probe-layer statistics and entropy (Eq. 7-10, 14-19)."""
        start = time.perf_counter()
        args = self.args
        groups = waad = fai = None
        if layer_stats is not None:
            groups = group_token_stats(layer_stats, quantile=args.credit_head_quantile, per=args.credit_head_grouping)
            c = completion_mask.size(1)
            waad, fai = groups.waad[:, -c:], groups.fai[:, -c:]
        # Seed from (global step, n-th credit call within it): both survive --resume_from_checkpoint (TRL's _step
        # restarts at 0) and every forward chunk of one step gets its own random numbers.
        step = self.state.global_step
        self._credit_calls = (step, self._credit_calls[1] + 1 if self._credit_calls[0] == step else 0)
        generator = torch.Generator(device=completion_mask.device).manual_seed(
            hash((args.seed, step, self._credit_calls[1], self.accelerator.process_index)) % (2**63)
        )
        try:
            gamma = compute_token_weights(
                args.credit_strategy,
                waad=waad,
                fai=fai,
                entropy=entropy.detach() if entropy is not None else None,
                response_mask=completion_mask,
                top_quantile=args.credit_top_quantile,
                gamma_amp=args.credit_gamma_amp,
                alpha=args.credit_alpha,
                k=args.credit_k,
                generator=generator,
                **args.credit_options,
            )
        except NonFiniteStatisticError as e:  # every statistic the strategy reads is checked for NaN/inf
            raise NonFiniteError(f"step {self.state.global_step}: {e}") from e
        self._record_credit_summary(gamma, waad, fai, completion_mask, groups)
        self._credit_seconds += time.perf_counter() - start
        return gamma

    def _maybe_token_view(self, completion_ids, gamma, completion_mask) -> None:
        """Every ``credit_log_every`` steps, the token view of this chunk's first completion (main process)."""
        every, step = self.args.credit_log_every, self.state.global_step
        if not every or step % every or step == self._token_view_step or not self.accelerator.is_main_process:
            return
        self._token_view_step = step
        groups, c = self._latest_groups, completion_mask.size(1)
        waad = groups.waad[:, -c:] if groups is not None else None
        fai = groups.fai[:, -c:] if groups is not None else None
        trainer_token_view(self, completion_ids, waad, fai, gamma, completion_mask, strategy=self.args.credit_strategy)

    def _marked_completions(self, completion_ids, gamma, completion_mask) -> list[str]:
        """Each completion's text with its amplified tokens (gamma != 1) wrapped as ``[[token]]``."""
        tokenizer = self.processing_class
        texts = []
        for ids, g, mask in zip(completion_ids.tolist(), gamma.tolist(), completion_mask.bool().tolist()):
            pieces = [tokenizer.decode([i]) for i, m in zip(ids, mask) if m]
            texts.append("".join(f"[[{p}]]" if w != 1 else p for p, w in zip(pieces, g)))
        return texts

    def _scaled_advantages(self, advantages, gamma, completion_mask):
        return token_advantages(
            advantages,
            gamma,
            completion_mask,
            sign=self.args.credit_advantage_sign,
            normalize=self.args.credit_normalize,
        )

    # ----------------------------------------------------------------------------------------------------
    # Observability
    # ----------------------------------------------------------------------------------------------------
    def _record_credit_summary(self, gamma, waad, fai, completion_mask, groups) -> None:
        """Keep this chunk's summaries as device tensors; ``log`` reduces them (no host sync on the hot path)."""
        mask = completion_mask.bool()
        n = mask.sum().clamp(min=1)
        summary = {"amplified_frac": (gamma != 1)[mask].float().sum() / n, "gamma_mean": gamma[mask].sum() / n}
        if groups is not None:
            summary.update(waad_mean=waad[mask].sum() / n, fai_mean=fai[mask].sum() / n)
            self._latest_groups = groups
        self._credit_summaries.append(summary)

    def _log_credit_summaries(self) -> None:
        """Means over this logging period and all ranks' chunks into ``attncredit/*`` metrics; head-group changes
        to ``attncredit_head_groups.jsonl``."""
        names = list(self._credit_summaries[0])
        local = torch.stack([torch.stack([s[k] for k in names]) for s in self._credit_summaries]).mean(0)
        self._credit_summaries = []
        for name, value in zip(names, self.accelerator.gather(local[None]).mean(0).tolist()):
            self._metrics["train"][f"attncredit/{name}"].append(value)
        groups, self._latest_groups = self._latest_groups, None
        if groups is None or not self.accelerator.is_main_process:
            return
        heads = groups.batch_groups(self.probe_layers)
        if heads != self._last_head_groups:
            self._last_head_groups = heads
            record = {"step": self.state.global_step, **heads}
            logger.info("attncredit head groups: %s", record)
            os.makedirs(self.args.output_dir, exist_ok=True)
            with open(os.path.join(self.args.output_dir, "attncredit_head_groups.jsonl"), "a") as f:
                f.write(json.dumps(record) + "\n")

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self.credit_on and self.model.training and self._credit_summaries:
            self._log_credit_summaries()
            now = time.perf_counter()
            wall = max(now - self._credit_clock, 1e-9)
            stats_seconds = sum(clock.seconds() for clock in self._stats_clocks)
            metrics = self._metrics["train"]
            metrics["attncredit/stats_seconds"].append(stats_seconds)
            metrics["attncredit/credit_seconds"].append(self._credit_seconds)
            metrics["attncredit/time_share"].append((stats_seconds + self._credit_seconds) / wall)
            self._credit_seconds, self._credit_clock, self._stats_clocks = 0.0, now, []
        super().log(logs, start_time)


def _finite_rewards(func, name):
    """Wrap a synchronous reward function so that a NaN or inf reward fails loudly (None stays 'unscorable')."""
    if isinstance(func, nn.Module) or not callable(func) or _is_async(func):
        return func

    @functools.wraps(func)
    def checked(*args, **kwargs):
        rewards = func(*args, **kwargs)
        trainer_state = kwargs.get("trainer_state")
        for i, r in enumerate(rewards):
            if r is not None and not math.isfinite(r):
                step = trainer_state.global_step if trainer_state is not None else "?"
                raise NonFiniteError(f"reward function {name!r} returned {r} for completion {i} at step {step}")
        return rewards

    return checked


def _is_async(func) -> bool:
    import inspect

    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(getattr(func, "__call__", None))
