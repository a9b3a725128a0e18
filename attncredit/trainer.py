"""``AnchorGRPOTrainer``: TRL's GRPOTrainer with attention-aware per-token credit (docs/method.md).

One step:

1. TRL generates and scores the rollouts; ``_rollout_advantages`` gives the advantages before credit
   (GRPO: the group-normalised ``A`` (B,), Eq. 6).
2. The attention statistics are read in the forward that already runs over prompt + completion with the
   rollout's weights (a :class:`CreditForward` marks which one):
   * when TRL computes old log-probs (vLLM importance-sampling correction, or generation not aligned
     with optimizer steps), from that no-grad forward, inside ``_generate_and_score_completions``;
   * otherwise from the loss forward of each micro-batch, before its loss is formed: generation is then
     aligned with optimizer steps, so the weights there are the ones that generated the rollout.
   Reference-model and PEFT-reference passes never record.
3. Head groups (Eq. 7-8) -> local WAAD and global FAI per token -> ``gamma`` (B, C) by ``credit_strategy``.
4. TRL's loss receives the 2-D advantages ``A * gamma`` (Eq. 12-13). The batch carries ``credit_gamma`` from
   then on, so a buffered micro-batch is never scaled twice.

Logging (metrics, head-group log, token views, the completions-table column) hangs off this path in
:class:`~attncredit.callbacks.CreditLoggingCallback`; it never changes what flows.
"""

from __future__ import annotations

import contextlib
import functools
import dataclasses
import json
import logging
import math
import os
import shutil
import time
import warnings
from dataclasses import dataclass

import torch
from torch import nn
from transformers.trainer_callback import ProgressCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import GRPOTrainer

from .attention.groups import group_token_stats
from .attention.recording import attention_layer_types, enable_recording, model_probe_layers, record_attention
from .callbacks import CreditChunk, CreditLoggingCallback, MetricsJsonlCallback
from .callbacks import CompleteCheckpointsCallback, NonFiniteGuardCallback, QuietProgressCallback
from .callbacks import append_metrics, non_finite_message
from .config import AnchorGRPOConfig
from .credit import NonFiniteStatisticError, compute_token_weights, required_statistics, token_advantages
from .data.checks import check_prompt_lengths, validate_rows
from .data.templates import has_prefill, prefill_prompt_ids
from .deferred import DeferredChecks
from .errors import CheckpointSaveError, ConfigError, NonFiniteTrainingError, first_line
from .model_card import add_attncredit_sections, base_model_id, name_base_model
from .models import resolve_model_name
from .output_dir import check_resume, check_writable, is_save_error, last_complete_checkpoint, prepare_output_dir
from .output_dir import resolve_resume, resumable_checkpoints, run_outputs
from .static_cache import reuse_static_caches

logger = logging.getLogger(__name__)

#: Batch key holding gamma (B, C) once credit has been applied to the batch's advantages.
CREDIT_GAMMA = "credit_gamma"
#: File in a checkpoint folder with the head groups in use (``credit_head_regroup_every`` > 1).
HEAD_GROUPS_FILE = "attncredit_head_groups.json"


@dataclass
class CreditForward:
    """The one policy forward that reads the statistics: TRL's old-log-prob pass of a rollout (``batch`` is
    None, ``gamma`` is filled for the caller) or a loss micro-batch (``batch`` is TRL's buffered micro-batch,
    whose advantages are scaled in place before TRL's loss reads them)."""

    batch: dict | None = None
    gamma: torch.Tensor | None = None


class AnchorGRPOTrainer(GRPOTrainer):
    """GRPO trainer whose advantages are scaled per token by attention credit (``AnchorGRPOConfig``).

    With ``credit_strategy="none"`` it is TRL's GRPOTrainer, step for step.

    Example (offline, on a CPU, with the embedded SmolLM2; ``tests/test_trainer.py`` runs it)::

        from datasets import Dataset
        from attncredit import AnchorGRPOConfig, AnchorGRPOTrainer
        from attncredit.models import resolve_model_name

        def digit_share(completions, **kwargs):
            texts = [c[0]["content"] for c in completions]
            return [sum(ch.isdigit() for ch in t) / max(len(t), 1) for t in texts]

        data = Dataset.from_list([{"prompt": [{"role": "user", "content": f"{i} + {i} = ?"}]} for i in range(8)])
        args = AnchorGRPOConfig(output_dir="runs/example", credit_strategy="coupled", max_steps=1,
                                per_device_train_batch_size=4, num_generations=4, max_completion_length=16,
                                use_cpu=True, bf16=False, report_to="none", save_strategy="no")
        trainer = AnchorGRPOTrainer(model=resolve_model_name("smollm2-135m-instruct"), reward_funcs=digit_share,
                                    args=args, train_dataset=data)
        trainer.train()
    """

    def __init__(self, model, reward_funcs=None, args: AnchorGRPOConfig | None = None, *pargs, **kwargs):
        if args is None:
            name = model if isinstance(model, str) else model.config._name_or_path
            args = AnchorGRPOConfig(output_dir=f"{str(name).rstrip('/').split('/')[-1]}-AnchorGRPO")
        if not isinstance(args, AnchorGRPOConfig):
            raise ConfigError(f"args must be an AnchorGRPOConfig, got {type(args).__name__}")
        if isinstance(model, str):  # embedded names (smollm2-135m-instruct) and clear errors, before loading
            model = resolve_model_name(model)
        self._before_loading(model, reward_funcs, args, kwargs)
        filled = args.model_init_kwargs
        if not isinstance(model, str) and getattr(args, "_filled_model_init_kwargs", False):
            # The config's own float32 default serves loading by name only; TRL would warn that it is ignored (TRL
            # builds a reference model like the given one). Put back afterwards: the config stays as the user made it.
            args.model_init_kwargs = None
        try:
            super().__init__(model, reward_funcs, args, *pargs, **kwargs)
        finally:
            args.model_init_kwargs = filled
        if args.compile_generation:
            # TRL builds its GenerationConfig with disable_compile=True; with the static cache that the config set,
            # transformers then compiles the decoding step (GenerationMixin._valid_auto_compile_criteria), whose CUDA
            # graph replays only while the cache keeps its tensors: the latest shape's cache, reused (static_cache.py)
            self.generation_config.disable_compile = False
            reuse_static_caches(self.accelerator.unwrap_model(self.model))
        self.add_callback(MetricsJsonlCallback())
        self.add_callback(NonFiniteGuardCallback())
        self.add_callback(CompleteCheckpointsCallback())
        if self.pop_callback(ProgressCallback) is not None:
            self.add_callback(QuietProgressCallback())
        # TRL: self.reward_funcs / self.reward_func_names are the resolved reward callables and their names.
        self.reward_funcs = [_finite_rewards(f, name) for f, name in zip(self.reward_funcs, self.reward_func_names)]
        self.credit_on = args.credit_strategy != "none"
        needs = set(required_statistics(args.credit_strategy))
        self._needs_attention = bool(needs & {"waad", "fai"})
        self._needs_entropy = "entropy" in needs
        self.probe_layers: list[int] = []
        self.probe_layer_types: dict[str, str] = {}  # probe layer -> its attention type, for the head-group log
        if self._needs_attention:
            base = self.accelerator.unwrap_model(self.model)
            # The check forward needs whole parameters: under ZeRO-3 / FSDP they are sharded until training starts,
            # so there the first recorded forward does the check instead.
            enable_recording(base, verify=not (self.is_deepspeed_enabled or self.is_fsdp_enabled))
            self.probe_layers = model_probe_layers(
                base, args.credit_num_probe_layers, args.credit_probe_layers, global_only=args.credit_probe_global_only
            )
            types = attention_layer_types(base)
            self._check_probe_count(base, types)
            self.probe_layer_types = {str(layer): types[layer] for layer in self.probe_layers}
            logger.info("attncredit: %s credit on probe layers %s", args.credit_strategy, self.probe_layer_types)
        self._credit_forward: CreditForward | None = None  # the next policy forward reads the statistics
        self._credit_calls = (-1, 0)  # (global step, index of the latest credit call in it): seeds random credit
        self._fixed_heads: tuple[torch.Tensor, torch.Tensor] | None = None  # groups kept between regroup steps
        # checks of the credit's inputs (masks, finite statistics), read once where the step waits for the GPU anyway
        self._credit_checks = DeferredChecks()
        self.credit_logger = CreditLoggingCallback(self)
        self.add_callback(self.credit_logger)
        if not self._is_vlm:
            tokenizer = getattr(self.processing_class, "tokenizer", self.processing_class)
            for label, rows in _dataset_parts(self.train_dataset, self.eval_dataset):
                check_prompt_lengths(rows, tokenizer, self._context_length(), label, **self.chat_template_kwargs)

    #: Which trainer writes this trainer's checkpoints (``attncredit.output_dir.checkpoint_trainer``).
    checkpoint_kind = "grpo"
    _tag_names = ["trl", "grpo", "attncredit"]  # TRL's card and model tags, plus ours

    def _before_loading(self, model, reward_funcs, args, kwargs: dict) -> None:
        """What runs before any model loads: the run folder and every dataset row are checked, so bad input fails in
        one line without waiting for weights. A subclass that loads more (the PPO critic) does so here, after
        ``super()._before_loading``."""
        self._check_run_folder(args)
        for label, rows in _dataset_parts(kwargs.get("train_dataset"), kwargs.get("eval_dataset")):
            validate_rows(rows, reward_funcs, name=label)

    @classmethod
    def _check_run_folder(cls, args) -> None:
        """Before the model loads: ``output_dir`` must be writable, and, unless ``train`` may still resume an
        unfinished run there, it must not hold another run (``attncredit.output_dir``); a resume named in the config
        must be a complete checkpoint of this trainer's kind that does not end a finished run."""
        check_writable(args.output_dir)
        resume = resolve_resume(args.resume_from_checkpoint, args.output_dir)
        if resume is not None:
            check_resume(resume, cls.checkpoint_kind, args.max_steps, args.num_train_epochs, cli=False)
            return
        if args.overwrite_output_dir or not run_outputs(args.output_dir):
            return
        if not resumable_checkpoints(args.output_dir, cls.checkpoint_kind, args.max_steps, args.num_train_epochs):
            # nothing that train(resume_from_checkpoint=...) could resume: refuse now, not after loading the model
            prepare_output_dir(args.output_dir, None, False, delete=False, cli=False)

    def _check_probe_count(self, base, types: dict) -> None:
        """More probe layers asked for than the middle third of the attention stack holds: one line naming both
        counts (the paper's default 5 on a model with fewer such layers takes all of them)."""
        args = self.args
        wanted = args.credit_num_probe_layers
        if args.credit_probe_layers is not None or len(self.probe_layers) >= wanted:
            return
        default = next(f.default for f in dataclasses.fields(AnchorGRPOConfig) if f.name == "credit_num_probe_layers")
        if wanted == default:
            return
        kinds = ("full_attention",) if args.credit_probe_global_only else None
        count = sum(1 for kind in types.values() if kinds is None or kind in kinds)
        raise ConfigError(
            f"credit_num_probe_layers={wanted} is invalid for {type(base).__name__}: the middle third of its {count} "
            f"{'global ' if kinds else ''}attention layers holds {len(self.probe_layers)}; allowed: 1 to "
            f"{len(self.probe_layers)}, or credit_probe_layers to name layers"
        )

    def _context_length(self) -> int | None:
        """The most tokens a rollout may hold: the model's context (``max_position_embeddings``), and vLLM's
        ``vllm_max_model_length`` when set."""
        config = self.accelerator.unwrap_model(self.model).config
        config = getattr(config, "get_text_config", lambda: config)()
        limits = [getattr(config, "max_position_embeddings", None)]
        if self.use_vllm:
            limits.append(self.args.vllm_max_model_length)
        limits = [x for x in limits if isinstance(x, int) and x > 0]
        return min(limits) if limits else None

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        """TRL's ``train``, for one run per output_dir: ``resume_from_checkpoint=True`` takes the newest *complete*
        checkpoint (``attncredit.output_dir``), and an output_dir holding another run's outputs is refused unless
        resuming or ``overwrite_output_dir`` (which deletes them first). Without the argument, the config's
        ``resume_from_checkpoint`` applies. A checkpoint of the other trainer (PPO/GRPO) is refused, and one that
        ends a finished run raises ``FinishedRunError`` (nothing is trained or written)."""
        if resume_from_checkpoint is None:
            resume_from_checkpoint = self.args.resume_from_checkpoint
        resume = resolve_resume(resume_from_checkpoint, self.args.output_dir)
        if resume is not None:  # never another trainer's checkpoint, nor past a finished run's end
            check_resume(resume, self.checkpoint_kind, self.args.max_steps, self.args.num_train_epochs, cli=False)
        prepare_output_dir(self.args.output_dir, resume, self.args.overwrite_output_dir, delete=False, cli=False)
        self.accelerator.wait_for_everyone()  # every rank has checked before the main process deletes anything
        if self.accelerator.is_main_process:
            prepare_output_dir(self.args.output_dir, resume, self.args.overwrite_output_dir)
        self.accelerator.wait_for_everyone()
        return super().train(resume, *args, **kwargs)

    def _get_grad_norm(self, model, grad_norm=None):
        """transformers' gradient norm of this step; a NaN or inf norm is written to metrics.jsonl with the step's
        loss and TRL's metrics, and stops training before the optimizer step can put it into the weights."""
        grad_norm = super()._get_grad_norm(model, grad_norm)
        step = self.state.global_step + 1  # the step in progress: global_step counts finished ones
        message = non_finite_message(step, {"grad_norm": float(grad_norm)})
        if message:
            record = {"step": step, "epoch": self.state.epoch, "grad_norm": float(grad_norm)}
            steps = max(1, step - self._globalstep_last_logged)
            record["loss"] = float(self.accelerator.reduce(self._tr_loss.detach(), "mean")) / steps
            record.update({k: sum(v) / len(v) for k, v in self._metrics["train"].items() if v})
            if self.accelerator.is_main_process:
                append_metrics(self.args.output_dir, record)
            raise NonFiniteTrainingError(message)
        return grad_norm

    def _tokenize_prompts(self, prompts: list):
        """TRL's prompt tokenization, except that a prompt ending with an assistant prefill (the ``r1`` template's
        "Let me solve this step by step.\\n<think>", as in TinyZero) is continued rather than closed.

        Relies on TRL 1.16: ``_tokenize_prompts(prompts) -> (prompt_ids, images, multimodal_fields)``, and the
        attributes ``_is_vlm``, ``environment_factories``, ``tools``, ``chat_template``, ``chat_template_kwargs``.
        """
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
        """Mirror of GRPOTrainer's rule (TRL 1.16, ``_generate_and_score_completions``) for running a no-grad
        forward of the policy for old log-probs."""
        generate_every = self.args.steps_per_generation * self.num_iterations
        return self.args.gradient_accumulation_steps % generate_every != 0 or (
            self.use_vllm and self.vllm_importance_sampling_correction
        )

    def _reads_forward(self) -> bool:
        """Whether the strategy needs a statistic of the policy forward (attention or entropy)."""
        return self._needs_attention or self._needs_entropy

    def _rollout_advantages(self, output: dict) -> torch.Tensor:
        """The advantages of a generated batch before credit: GRPO's group-normalised ``A`` (B,) (Eq. 6).
        Subclasses with other estimators (a critic and GAE) return theirs here, (B,) or (B, C)."""
        return output["advantages"]

    def _generate_and_score_completions(self, inputs):
        """TRL's generation and scoring (TRL 1.16: returns the batch dict with ``advantages`` and
        ``completion_mask``, and runs the old-log-prob forward through ``_get_per_token_logps_and_entropies``
        before the reference forward), then credit on the rollout's advantages where gamma is known already."""
        credit_now = self.credit_on and self.model.training
        reads_rollout = credit_now and self._reads_forward() and self._trl_runs_old_logps_forward()
        forward = CreditForward() if reads_rollout else None
        self._credit_forward = forward
        with self._checked_credit():
            try:
                output = super()._generate_and_score_completions(inputs)
            finally:
                self._credit_forward = None
            output["advantages"] = self._rollout_advantages(output)
            gamma = forward.gamma if forward is not None else None
            if credit_now and not self._reads_forward():  # e.g. random credit: no statistic of the forward
                gamma = self._credit_weights(None, output["completion_mask"], None)
            if gamma is not None:
                self._apply_credit(output, gamma)
        return output

    def _compute_loss(self, model, inputs):
        """TRL's loss (TRL 1.16: reads ``inputs["advantages"]`` after its policy forward, and accepts (B, T)
        advantages). A micro-batch without ``credit_gamma`` reads its statistics in this forward; TRL reuses the
        buffered dict for later iterations (num_iterations > 1), which then find the scaled advantages."""
        if self.credit_on and self.model.training and CREDIT_GAMMA not in inputs:
            self._credit_forward = CreditForward(batch=inputs)
        with self._checked_credit():
            try:
                return super()._compute_loss(model, inputs)
            finally:
                self._credit_forward = None

    @contextlib.contextmanager
    def _checked_credit(self):
        """Verify the credit's deferred input checks (``attncredit.deferred``) when the block ends: after TRL's
        rollout or loss, whose logged metrics have made the host wait for the GPU already, so reading the verdicts
        costs no extra wait; before the backward pass or the optimizer uses the scaled advantages. A block that
        raises drops them unread."""
        try:
            yield
        except BaseException:
            self._credit_checks.clear()
            raise
        else:
            try:
                self._credit_checks.verify()
            except NonFiniteStatisticError as e:  # every statistic the strategy reads is checked for NaN/inf
                raise NonFiniteTrainingError(f"step {self.state.global_step}: {e}") from e

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
        """TRL's log-prob forward (TRL 1.16 signature: ``(model, input_ids, attention_mask, logits_to_keep,
        batch_size=None, compute_entropy=False, compute_aux_loss=False, **model_inputs)``); the one marked by
        ``_credit_forward`` records the probe layers and yields gamma."""
        forward, self._credit_forward = self._credit_forward, None  # only this pass; the reference pass comes later
        if forward is None:
            return super()._get_per_token_logps_and_entropies(model, input_ids, attention_mask, logits_to_keep, *args, **kwargs)
        logps, entropies, aux, gamma = self._recorded_forward(
            model, input_ids, attention_mask, logits_to_keep, *args, rollout=forward.batch is None, **kwargs
        )
        if forward.batch is None:
            forward.gamma = gamma
        else:
            self._apply_credit(forward.batch, gamma)
        return logps, entropies, aux

    def _recorded_forward(
        self, model, input_ids, attention_mask, logits_to_keep, batch_size=None, compute_entropy=False, *, rollout=False,
        **kwargs,
    ):
        """TRL's log-prob forward, chunk by chunk, recording the probe layers; returns (logps, ent, aux, gamma)."""
        need_entropy = compute_entropy or self._needs_entropy
        batch_size = batch_size or input_ids.size(0)
        if any(v is not None for k, v in kwargs.items() if k != "compute_aux_loss"):
            # Vision-language inputs (pixel_values, ...): TRL slices them by its own chunk boundaries inside the call,
            # so the whole batch is one recorded forward; the image tokens are prompt rows of the language model.
            batch_size = input_ids.size(0)
        logps, entropies, aux_losses, gammas = [], [], [], []
        for start in range(0, input_ids.size(0), batch_size):
            ids, mask = input_ids[start : start + batch_size], attention_mask[start : start + batch_size]
            response_mask = mask.clone()
            response_mask[:, : ids.size(1) - logits_to_keep] = 0
            regroup = self._regroups_now()
            recorder = (
                record_attention(
                    model,
                    self.probe_layers,
                    attention_mask=mask,
                    response_mask=response_mask,
                    window=self.args.credit_window,
                    fai_horizon=tuple(self.args.credit_fai_horizon),
                    backend=self.args.credit_stats_backend,
                    head_distance=regroup,
                    heads=None if regroup else self._kept_heads(),
                    checks=self._credit_checks,
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
            gammas.append(
                self._credit_weights(
                    recorder.stats if self._needs_attention else None,
                    response_mask[:, -logits_to_keep:],
                    ent,
                    completion_ids=ids[:, -logits_to_keep:],
                    clock=recorder.clock if self._needs_attention else None,
                    rollout=rollout,
                    regroup=regroup,
                )
            )
        entropy = torch.cat(entropies) if compute_entropy else None
        aux = torch.stack(aux_losses).mean() if aux_losses[0] is not None else None
        return torch.cat(logps), entropy, aux, torch.cat(gammas)

    # ----------------------------------------------------------------------------------------------------
    # From statistics to gamma and advantages
    # ----------------------------------------------------------------------------------------------------
    def _regroups_now(self) -> bool:
        """Whether this forward ranks the head groups afresh (and so needs the head distance): always with
        ``credit_head_regroup_every`` 1; otherwise on the first forward and on steps that are multiples of k."""
        every = self.args.credit_head_regroup_every
        return every == 1 or self._fixed_heads is None or self.state.global_step % every == 0

    def _kept_heads(self) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """Per probe layer, the kept (local, global) heads: the heads whose WAAD, resp. FAI, the credit reads."""
        local, glob = self._fixed_heads
        return {layer: (local[i], glob[i]) for i, layer in enumerate(sorted(self.probe_layers))}

    @torch.no_grad()
    def _credit_weights(
        self, layer_stats, completion_mask, entropy, *, completion_ids=None, clock=None, rollout=True, regroup=True
    ) -> torch.Tensor:
        """gamma [B, C] of one forward chunk from its probe-layer statistics and entropy (Eq. 7-10, 14-19); with
        ``regroup`` False the kept head groups are used (the statistics then carry no head distance)."""
        start = time.perf_counter()
        args = self.args
        groups = waad = fai = None
        if layer_stats is not None:
            groups = group_token_stats(
                layer_stats,
                quantile=args.credit_head_quantile,
                per=args.credit_head_grouping,
                heads=None if regroup else self._fixed_heads,
            )
            if args.credit_head_regroup_every > 1 and regroup:
                self._fixed_heads = groups.batch_masks()
            c = completion_mask.size(1)
            waad, fai = groups.waad[:, -c:], groups.fai[:, -c:]
        # Seed from (global step, n-th credit call within it): both survive --resume_from_checkpoint (TRL's _step
        # restarts at 0) and every forward chunk of one step gets its own random numbers.
        step = self.state.global_step
        self._credit_calls = (step, self._credit_calls[1] + 1 if self._credit_calls[0] == step else 0)
        generator = torch.Generator(device=completion_mask.device).manual_seed(
            hash((args.seed, step, self._credit_calls[1], self.accelerator.process_index)) % (2**63)
        )
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
            checks=self._credit_checks,
            **args.credit_options,
        )
        self.credit_logger.on_credit(
            CreditChunk(
                completion_ids=completion_ids,
                completion_mask=completion_mask,
                gamma=gamma,
                waad=waad,
                fai=fai,
                groups=groups,
                clock=clock,
                seconds=time.perf_counter() - start,
                rollout=rollout,
            )
        )
        return gamma

    # ----------------------------------------------------------------------------------------------------
    # Model card and saved names: TRL's card with the base model's hub id, the run folder and the method
    # ----------------------------------------------------------------------------------------------------
    def create_model_card(self, model_name: str | None = None, dataset_name: str | None = None, tags=None):
        """TRL's card (``<output_dir>/README.md``), which names the base model by the hub id of the model it started
        from (the embedded model's too: ``attncredit.model_card.base_model_id``; TRL takes ``config._name_or_path``,
        a local cache folder here), loads ``output_dir`` in its quick start when nothing is pushed to the hub (TRL
        writes ``model="None"``), and carries a section on the credit assignment (the method, arXiv 2510.13554, the
        run's settings) and its citation beside TRL's."""
        config = self.model.config
        original, hub_model_id = getattr(config, "_name_or_path", ""), self.hub_model_id
        base = base_model_id(original)
        try:
            if base:
                config._name_or_path = base
            if self.hub_model_id is None:
                self.hub_model_id = self.args.output_dir
            super().create_model_card(model_name=model_name, dataset_name=dataset_name, tags=tags)
        finally:
            config._name_or_path, self.hub_model_id = original, hub_model_id
        if self.is_world_process_zero():
            add_attncredit_sections(os.path.join(self.args.output_dir, "README.md"), self._name, self.args, base or original)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        """transformers' save (checkpoints call it too), then the base model's hub id into the folder's
        ``config.json`` (``_name_or_path``) and a LoRA adapter's ``base_model_name_or_path`` (PEFT writes the local
        path it loaded); the final save of ``output_dir`` also writes the model card (TRL writes it only with
        checkpoints)."""
        super().save_model(output_dir, _internal_call)
        folder = output_dir or self.args.output_dir
        if self.args.should_save:
            name_base_model(folder, base_model_id(getattr(self.model.config, "_name_or_path", "")))
        if not _internal_call and os.path.abspath(folder) == os.path.abspath(self.args.output_dir):
            hub = self.args.hub_model_id
            self.create_model_card(model_name=hub.split("/")[-1] if hub else os.path.basename(os.path.abspath(folder)))

    # ----------------------------------------------------------------------------------------------------
    # Checkpoints: the head groups kept between regroup steps travel with the checkpoint
    # ----------------------------------------------------------------------------------------------------
    def _save_checkpoint(self, model, trial):
        """TRL's checkpoint (TRL 1.16: ``_save_checkpoint(model, trial)``, folder ``checkpoint-<global_step>``
        under ``_get_output_dir(trial)``), written by :meth:`_write_checkpoint`. A save that fails on the file system
        (a full disk: ``OSError``, safetensors' ``SafetensorError``, torch's stream-writer error) removes the
        incomplete folder and raises ``CheckpointSaveError``, one line naming the folder, the reason and the
        checkpoint to resume from; older checkpoints are rotated only after a complete save, so they stay."""
        folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        try:
            self._write_checkpoint(model, trial)
        except Exception as e:
            if not is_save_error(e):
                raise
            if self.args.should_save:
                shutil.rmtree(folder, ignore_errors=True)
            last, _ = last_complete_checkpoint(self._get_output_dir(trial=trial))
            reason = f"{type(e).__name__}: {first_line(e)}"
            where = f"resume from {os.path.basename(last)} with resume_from_checkpoint=true" if last else "no complete checkpoint to resume from"
            raise CheckpointSaveError(
                f"saving the step-{self.state.global_step} checkpoint to {folder} failed ({reason}); the incomplete "
                f"folder was removed; free space and {where}"
            ) from None

    def _write_checkpoint(self, model, trial):
        """TRL's checkpoint, with the kept head groups written first, so that ``trainer_state.json`` stays the
        checkpoint's last file.

        Each rank keeps the groups of its own rows (statistics stay on their rank), so with several processes the
        file holds every rank's groups under ``"ranks"`` (gathered to the main process: a collective, every rank
        calls it); ``"local"`` / ``"global"`` are rank 0's, the whole content of a single-process file."""
        if self._fixed_heads is not None:
            local, glob = (m.int().tolist() for m in self._fixed_heads)
            record = {"local": local, "global": glob}
            if self.accelerator.num_processes > 1:
                from accelerate.utils import gather_object

                record["ranks"] = gather_object([{"local": local, "global": glob}])
            if self.args.should_save:
                folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
                os.makedirs(folder, exist_ok=True)
                with open(os.path.join(folder, HEAD_GROUPS_FILE), "w") as f:
                    json.dump(record, f)
        super()._save_checkpoint(model, trial)

    def _save_rng_state(self, output_dir):
        """transformers' per-rank ``rng_state_<rank>.pth``, then a barrier: the main process writes
        ``trainer_state.json`` (what makes a checkpoint complete) right after its own RNG file, and without the
        barrier a run killed at that moment could leave a "complete" checkpoint without another rank's RNG file
        (transformers then resumes that rank with a fresh RNG, logging only at info level)."""
        super()._save_rng_state(output_dir)
        if self.accelerator.num_processes > 1:
            self.accelerator.wait_for_everyone()

    def _load_optimizer_and_scheduler(self, checkpoint):
        """TRL's resume hook (TRL 1.16: ``_load_optimizer_and_scheduler(checkpoint)``), then the kept head groups:
        this rank's entry of ``"ranks"`` when the checkpoint has one per rank of this run, else rank 0's (a
        checkpoint of one process, or of another number of processes: then every rank starts from rank 0's groups
        until the next regroup step, with a warning)."""
        super()._load_optimizer_and_scheduler(checkpoint)
        path = os.path.join(checkpoint, HEAD_GROUPS_FILE) if checkpoint else None
        if path and os.path.exists(path):
            with open(path) as f:
                saved = json.load(f)
            ranks = saved.get("ranks")
            rank, world = self.accelerator.process_index, self.accelerator.num_processes
            if ranks is not None and len(ranks) == world:
                saved = ranks[rank]
            elif world > 1 or ranks is not None:
                logger.warning(
                    "%s holds head groups of %d process(es), this run has %d: every rank keeps rank 0's groups until "
                    "the next regroup step", path, len(ranks) if ranks is not None else 1, world,
                )
            device = self.accelerator.device
            self._fixed_heads = tuple(torch.tensor(saved[k], dtype=torch.bool, device=device) for k in ("local", "global"))

    def _apply_credit(self, batch: dict, gamma: torch.Tensor) -> None:
        """Scale the batch's advantages by gamma (Eq. 13) and mark the batch as credited."""
        batch["advantages"] = self._scaled_advantages(batch["advantages"], gamma, batch["completion_mask"])
        batch[CREDIT_GAMMA] = gamma

    def _scaled_advantages(self, advantages, gamma, completion_mask):
        return token_advantages(
            advantages,
            gamma,
            completion_mask,
            sign=self.args.credit_advantage_sign,
            normalize=self.args.credit_normalize,
        )


def _finite_rewards(func, name):
    """Wrap a synchronous reward function so that a NaN or inf reward fails loudly (None stays 'unscorable')."""
    if isinstance(func, nn.Module) or not callable(func) or _is_async(func):
        return func

    warned = []

    @functools.wraps(func)
    def checked(*args, **kwargs):
        rewards = func(*args, **kwargs)
        if rewards is not None and len(rewards) and all(r is None for r in rewards) and not warned:
            warned.append(True)  # TRL reads None as "does not apply to this sample"; a whole batch of it is suspect
            warnings.warn(
                f"reward function {name!r} returned None for every completion of a batch: TRL treats None as 'this "
                "reward does not apply' (no signal from it); if that is not intended, return a number per completion "
                "(warned once per reward function)",
                stacklevel=2,
            )
        trainer_state = kwargs.get("trainer_state")
        for i, r in enumerate(rewards):
            if r is not None and not math.isfinite(r):
                step = trainer_state.global_step if trainer_state is not None else "?"
                raise NonFiniteTrainingError(f"reward function {name!r} returned {r} for completion {i} at step {step}")
        return rewards

    return checked


def _is_async(func) -> bool:
    import inspect

    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(getattr(func, "__call__", None))


def _dataset_parts(train_dataset, eval_dataset) -> list[tuple[str, object]]:
    """``(label, rows)`` of each dataset the trainer gets, an eval dict of splits one part per split (label
    ``eval_dataset['name']``); absent datasets are left out."""
    parts = []
    for name, data in (("train_dataset", train_dataset), ("eval_dataset", eval_dataset)):
        for split, rows in data.items() if isinstance(data, dict) else [(None, data)]:
            if rows is not None:
                parts.append((name if split is None else f"{name}[{split!r}]", rows))
    return parts
