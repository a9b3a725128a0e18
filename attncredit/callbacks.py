"""Trainer callbacks of attncredit: what is logged. Nothing here changes what flows into the loss."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

from .errors import NonFiniteTrainingError

logger = logging.getLogger(__name__)
METRICS_FILE = "metrics.jsonl"


class MetricsJsonlCallback(TrainerCallback):
    """Append every logged metrics dict, with its step and the wall clock (``time``, Unix seconds), to
    ``<output_dir>/metrics.jsonl`` (main process only). The clock shows where a run's time went beyond TRL's
    ``step_time`` (start-up, evaluation, checkpoints, waiting for other processes on a shared GPU).

    The file survives a crash and grows across ``--resume_from_checkpoint`` (entries past the checkpoint are
    logged again by the resumed run, so readers keep the last entry per step). Non-finite values are kept, written
    as JSON's ``NaN`` / ``Infinity`` extensions (Python's ``json.loads`` reads them back as floats).
    """

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record = {"step": state.global_step, "epoch": state.epoch, "time": round(time.time(), 3)}
        record.update({k: v for k, v in logs.items() if isinstance(v, (int, float))})
        append_metrics(args.output_dir, record)


def append_metrics(output_dir: str, record: dict) -> None:
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, METRICS_FILE), "a") as f:
        f.write(json.dumps(record) + "\n")


@dataclass
class CreditChunk:
    """gamma of one forward chunk and what it was computed from, as the trainer hands it to the logger.

    ``completion_ids``, ``completion_mask``, ``gamma``, ``waad``, ``fai`` are [B, C] (``completion_ids`` is None
    when no forward was read, e.g. random credit; ``waad`` / ``fai`` None without attention statistics);
    ``groups`` the chunk's ``HeadGroups``; ``clock`` the ``StatsClock`` of the statistics inside the forward;
    ``seconds`` the host time of head grouping and the strategy; ``rollout`` whether the chunk belongs to TRL's
    old-log-prob forward of a rollout (whose completions table is still open).
    """

    completion_ids: torch.Tensor | None
    completion_mask: torch.Tensor
    gamma: torch.Tensor
    waad: torch.Tensor | None
    fai: torch.Tensor | None
    groups: object | None
    clock: object | None
    seconds: float
    rollout: bool


class CreditLoggingCallback(TrainerCallback):
    """What attention credit logs, from the :class:`CreditChunk` s the trainer hands to :meth:`on_credit`:

    * ``attncredit/*`` metrics, reduced over the logging period and all ranks on logging steps:
      ``amplified_frac`` (share of completion tokens with gamma != 1), ``gamma_mean``, ``waad_mean``,
      ``fai_mean``, ``stats_seconds`` (statistics inside the forward), ``credit_seconds`` (head groups and
      gamma) and ``time_share`` (both over the wall time since the last log);
    * head-group changes to ``<output_dir>/attncredit_head_groups.jsonl``, with each probe layer's attention type
      (``full_attention``, ``sliding_attention``);
    * every ``credit_log_every`` steps, the token view of one completion (``<output_dir>/token_views/``);
    * an ``amplified`` column in TRL's completions table (amplified tokens as ``[[token]]``), for chunks of
      TRL's old-log-prob forward, while the table is still open.

    Summaries stay device tensors until a logging step (no host sync on the hot path).
    """

    def __init__(self, trainer):
        self.trainer = trainer
        self._summaries: list[dict[str, torch.Tensor]] = []
        self._clocks: list = []
        self._seconds = 0.0
        self._since = time.perf_counter()
        self._latest_groups = None
        self._logged_groups = None
        self._rollout_means: dict[str, float] = {}  # the latest logged means, for steps that compute no credit
        self._token_view_step = -1

    def on_credit(self, chunk: CreditChunk) -> None:
        mask = chunk.completion_mask.bool()
        n = mask.sum().clamp(min=1)

        def mean(values: torch.Tensor) -> torch.Tensor:
            """Mean over completion tokens; ``where``, not boolean indexing, which waits for the GPU (nonzero)."""
            return torch.where(mask, values, 0).sum() / n

        summary = {"amplified_frac": mean((chunk.gamma != 1).float()), "gamma_mean": mean(chunk.gamma)}
        if chunk.groups is not None:
            summary.update(waad_mean=mean(chunk.waad), fai_mean=mean(chunk.fai))
            self._latest_groups = chunk.groups
        self._summaries.append(summary)
        self._seconds += chunk.seconds
        if chunk.clock is not None:
            self._clocks.append(chunk.clock)
        if chunk.completion_ids is None:
            return
        if chunk.rollout and self.trainer.log_completions:
            self.trainer._log_completion_extra("amplified", self._marked(chunk))
        self._maybe_token_view(chunk)

    def on_step_end(self, args, state, control, **kwargs):
        """On logging steps and the last step, push this period's means into the trainer's metrics before it logs
        them (the Trainer calls ``log`` right after this event, with ``control.should_log`` set by then; after the
        last step its closing ``log`` of the run summary takes them)."""
        if not (control.should_log or state.global_step >= state.max_steps):
            return
        if not self._summaries and not self._rollout_means:
            return
        metrics = self.trainer._metrics["train"]
        if self._summaries:
            names = list(self._summaries[0])
            local = torch.stack([torch.stack([s[k] for k in names]) for s in self._summaries]).mean(0)
            self._rollout_means = dict(zip(names, self.trainer.accelerator.gather(local[None]).mean(0).tolist()))
        # A step that reuses a rollout whose gamma is known (num_iterations > 1, steps_per_generation > 1) computes
        # no credit: it logs that rollout's statistics again, so every step has its attncredit/* metrics.
        for name, value in self._rollout_means.items():
            metrics[f"attncredit/{name}"].append(value)
        now = time.perf_counter()
        stats_seconds = sum(clock.seconds() for clock in self._clocks)
        metrics["attncredit/stats_seconds"].append(stats_seconds)
        metrics["attncredit/credit_seconds"].append(self._seconds)
        metrics["attncredit/time_share"].append((stats_seconds + self._seconds) / max(now - self._since, 1e-9))
        self._summaries, self._clocks, self._seconds, self._since = [], [], 0.0, now
        self._log_head_groups(args, state)

    def _log_head_groups(self, args, state) -> None:
        groups, self._latest_groups = self._latest_groups, None
        if groups is None or not state.is_world_process_zero:
            return
        heads = groups.batch_groups(self.trainer.probe_layers)
        if heads == self._logged_groups:
            return
        self._logged_groups = heads
        record = {"step": state.global_step, **heads, "layer_types": self.trainer.probe_layer_types}
        logger.info("attncredit head groups: %s", record)
        os.makedirs(args.output_dir, exist_ok=True)
        with open(os.path.join(args.output_dir, "attncredit_head_groups.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")

    def _marked(self, chunk: CreditChunk) -> list[str]:
        """Each completion's text with its amplified tokens (gamma != 1) wrapped as ``[[token]]``."""
        tokenizer = self.trainer.processing_class
        texts = []
        for ids, g, mask in zip(chunk.completion_ids.tolist(), chunk.gamma.tolist(), chunk.completion_mask.bool().tolist()):
            pieces = [tokenizer.decode([i]) for i, m in zip(ids, mask) if m]
            texts.append("".join(f"[[{p}]]" if w != 1 else p for p, w in zip(pieces, g)))
        return texts

    def _maybe_token_view(self, chunk: CreditChunk) -> None:
        """Every ``credit_log_every`` steps, the token view of the chunk's first completion (main process)."""
        trainer = self.trainer
        every, step = trainer.args.credit_log_every, trainer.state.global_step
        if not every or step % every or step == self._token_view_step or not trainer.accelerator.is_main_process:
            return
        self._token_view_step = step
        from .analysis.token_view import trainer_token_view  # matplotlib side, loaded only when a view is due

        trainer_token_view(
            trainer, chunk.completion_ids, chunk.waad, chunk.fai, chunk.gamma, chunk.completion_mask,
            strategy=trainer.args.credit_strategy,
        )


_LIKELY_CAUSES = (
    "likely causes: a learning_rate too high for this model, advantages or credit weights that overflow "
    "(credit_gamma_amp, a custom strategy), or fp16/bf16 overflow in the forward"
)


def non_finite_message(step: int, values: dict) -> str | None:
    """One line naming the step and the non-finite values among ``values``, or None when all are finite."""
    bad = {k: v for k, v in values.items() if isinstance(v, (int, float)) and not math.isfinite(v)}
    if not bad:
        return None
    named = ", ".join(f"{k}={v}" for k, v in bad.items())
    return f"non-finite {named} at step {step}: training stopped (metrics.jsonl keeps the values); {_LIKELY_CAUSES}"


class NonFiniteGuardCallback(TrainerCallback):
    """Stop training with ``NonFiniteTrainingError`` when a logged ``loss`` or ``grad_norm`` is NaN or inf.

    Runs after ``MetricsJsonlCallback``, so the step's values are in ``metrics.jsonl`` first. The trainer also
    checks each step's grad norm before its optimizer step (``AnchorGRPOTrainer._get_grad_norm``), so NaN never
    reaches the weights; this catches what only shows at logging time. Every rank sees the same (reduced) values,
    so all stop together.
    """

    def on_log(self, args, state, control, logs=None, **kwargs):
        message = non_finite_message(state.global_step, {k: (logs or {}).get(k) for k in ("loss", "grad_norm")})
        if message:
            raise NonFiniteTrainingError(message)


class CompleteCheckpointsCallback(TrainerCallback):
    """Before a checkpoint is (re)written into a folder that already exists (a run resumed from an older
    checkpoint), delete that folder's ``trainer_state.json``: the state file, written last, then marks the
    checkpoint complete only once all of its new files are in place (``attncredit.output_dir.is_complete``)."""

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_save and state.is_world_process_zero:
            stale = os.path.join(args.output_dir, f"checkpoint-{state.global_step}", "trainer_state.json")
            if os.path.exists(stale):
                os.remove(stale)


class QuietProgressCallback(ProgressCallback):
    """transformers' progress bar, with the few numbers a user watches as its postfix instead of every logged
    dict printed under it (the full metrics go to metrics.jsonl and the trackers), and no second bar for
    evaluation."""

    SHOWN = {
        "loss": "loss",
        "reward": "reward",
        "reward_std": "reward_std",
        "grad_norm": "grad_norm",
        "attncredit/gamma_mean": "gamma",
        "completions/mean_length": "length",
        "eval_reward": "eval_reward",
    }

    def on_train_begin(self, args, state, control, **kwargs):
        super().on_train_begin(args, state, control, **kwargs)
        self.postfix: dict[str, str] = {}

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        pass

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None and logs:
            shown = {label: f"{logs[key]:.4g}" for key, label in self.SHOWN.items() if isinstance(logs.get(key), (int, float))}
            if shown:
                self.postfix.update(shown)
                self.training_bar.set_postfix(self.postfix, refresh=True)
