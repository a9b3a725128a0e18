"""One run per ``output_dir``, and resuming only from complete checkpoints.

Runs never mix: a run refuses to start in an ``output_dir`` that already holds a run's outputs (``RUN_OUTPUTS``:
``metrics.jsonl``, the head-group log, token views, ``checkpoint-*`` folders, a saved final model) unless it
resumes from a checkpoint inside that folder, or ``overwrite_output_dir`` is set, which deletes those outputs
first (and nothing else in the folder).

A checkpoint is complete when its ``trainer_state.json`` parses and names the checkpoint's own step: transformers
writes that file after the weights, optimizer, scheduler and RNG states, so a kill at any moment leaves either a
complete checkpoint or one without a valid state file. ``resume_from_checkpoint=True`` takes the newest complete
checkpoint and logs the incomplete ones it skipped; an explicit incomplete checkpoint is refused.

A resume never replaces a finished run's outputs: a checkpoint whose step has reached ``max_steps`` (the new run's, or
the finished run's own when training by epochs) is the end of a finished run, and resuming it raises
``FinishedRunError`` (the recipe prints it as one line and exits 0, touching nothing). A checkpoint written by the
other trainer (PPO's holds a ``critic/`` folder, GRPO's none) is refused.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

from .errors import ConfigError

logger = logging.getLogger(__name__)

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
CRITIC_FOLDER = "critic"  # a PPO run's critic: in its output_dir (the final one) and in each of its checkpoints
# Files and folders a run writes into its output_dir (the final model's files are recognised by its weights).
RUN_FILES = (
    "metrics.jsonl", "attncredit_head_groups.jsonl", "token_views", "trainer_state.json", "training_args.bin",
    CRITIC_FOLDER,
)
MODEL_FILES = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors", "pytorch_model.bin")


class FinishedRunError(ConfigError):
    """Resuming a checkpoint that ends a finished run: nothing to train, and the run's outputs stay as they are."""


def _hint(flag: str, value: str, cli: bool) -> str:
    """A way on, named as the user gives it: ``--flag value`` on the command line, ``flag=Value`` from Python."""
    return f"--{flag} {value}" if cli else f"{flag}={value.capitalize() if value in ('true', 'false') else value}"


def check_writable(output_dir: str) -> None:
    """Create ``output_dir`` and write a probe file in it, or raise a one-line ``ConfigError`` saying why not."""
    try:
        os.makedirs(output_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_dir):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"output_dir={output_dir!r} is not a writable folder ({reason}); choose another output_dir") from None


def run_outputs(output_dir: str) -> list[str]:
    """Names of the run outputs present in ``output_dir`` (sorted; checkpoints by step)."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    names = [p.name for p in root.iterdir() if p.name in RUN_FILES or p.name in MODEL_FILES]
    checkpoints = sorted((p.name for p in root.iterdir() if CHECKPOINT.match(p.name) and p.is_dir()), key=_step)
    return sorted(names) + checkpoints


def _step(name: str) -> int:
    return int(CHECKPOINT.match(name).group(1))


def prepare_output_dir(
    output_dir: str, resume: str | None, overwrite: bool, *, delete: bool = True, cli: bool = True
) -> None:
    """Refuse to mix two runs in ``output_dir`` (see the module docstring); with ``overwrite``, delete the old
    run's outputs (when ``delete``: the main process only). ``resume`` is a resolved checkpoint path or None;
    ``cli``: the refusal names command-line flags, else the Python arguments."""
    existing = run_outputs(output_dir)
    if not existing:
        return
    if resume is not None and Path(resume).resolve().parent == Path(output_dir).resolve():
        return
    if not overwrite:
        shown = ", ".join(existing[:4]) + (", ..." if len(existing) > 4 else "")
        resume_it = _hint("resume_from_checkpoint", "true", cli) + ("" if cli else " (config or train())")
        raise ConfigError(
            f"output_dir={output_dir!r} holds another run's outputs ({shown}); resume it with "
            f"{resume_it}, start over with {_hint('overwrite_output_dir', 'true', cli)}, or choose another output_dir"
        )
    if delete:
        logger.warning("overwrite_output_dir: deleting the previous run's %s in %s", ", ".join(existing), output_dir)
        for name in existing:
            path = Path(output_dir) / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def is_complete(checkpoint: str | Path) -> bool:
    """Whether ``checkpoint``'s ``trainer_state.json`` (written last) parses and names the checkpoint's step."""
    path = Path(checkpoint)
    match = CHECKPOINT.match(path.name)
    try:
        state = json.loads((path / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(state, dict) and (match is None or state.get("global_step") == int(match.group(1)))


def last_complete_checkpoint(output_dir: str) -> tuple[str | None, list[str]]:
    """(newest complete ``checkpoint-N`` in ``output_dir`` or None, newer incomplete ones that were skipped)."""
    root = Path(output_dir)
    names = sorted((n for n in run_outputs(output_dir) if CHECKPOINT.match(n)), key=_step, reverse=True)
    skipped = []
    for name in names:
        if is_complete(root / name):
            return str(root / name), skipped
        skipped.append(name)
    return None, skipped


def resolve_resume(value, output_dir: str) -> str | None:
    """``resume_from_checkpoint`` as a checkpoint path: None/False/"false" for none, True/"true"/"last"/"latest"
    for the newest complete checkpoint in ``output_dir`` (logging the skipped ones), or a checkpoint folder."""
    if value is None or value is False or str(value).lower() in ("false", "none", ""):
        return None
    if value is True or str(value).lower() in ("true", "last", "latest"):
        last, skipped = last_complete_checkpoint(output_dir)
        if skipped:
            logger.warning(
                "resume_from_checkpoint: skipping incomplete %s in %s (killed while saving?)", ", ".join(skipped), output_dir
            )
        if last is None:
            found = f"only incomplete {', '.join(skipped)}" if skipped else "no checkpoint-* folder"
            raise ConfigError(f"resume_from_checkpoint={value}: {found} in {output_dir}; nothing to resume")
        return last
    if not Path(value).is_dir():
        raise ConfigError(f"resume_from_checkpoint={value!r} is not a checkpoint folder")
    if not is_complete(value):
        raise ConfigError(
            f"resume_from_checkpoint={value!r} is incomplete (no valid trainer_state.json: killed while saving?); "
            "use --resume_from_checkpoint true for the newest complete one"
        )
    return str(value)


def checkpoint_trainer(checkpoint: str | Path) -> str:
    """``"ppo"`` for a checkpoint written by AnchorPPOTrainer (it holds the critic), else ``"grpo"``."""
    return "ppo" if (Path(checkpoint) / CRITIC_FOLDER).is_dir() else "grpo"


def check_resume(checkpoint: str, trainer: str, max_steps: int, num_train_epochs: float, *, cli: bool = True) -> None:
    """Refuse to resume ``checkpoint`` (a complete one, from :func:`resolve_resume`) with another trainer than the one
    that wrote it (``trainer``: ``"grpo"`` or ``"ppo"``), and raise :class:`FinishedRunError` when it ends a finished
    run: its step has reached ``max_steps`` (> 0), or, training by epochs (``max_steps`` <= 0) with the same
    ``num_train_epochs``, the finished run's own ``max_steps``. transformers would train one step past it and
    replace the run's checkpoints and final model."""
    written_by = checkpoint_trainer(checkpoint)
    if written_by != trainer:
        what = {"ppo": "a PPO checkpoint (it holds the critic)", "grpo": "a GRPO checkpoint (no critic/ folder)"}
        raise ConfigError(
            f"resume_from_checkpoint={checkpoint!r} is {what[written_by]}; it cannot resume a {trainer.upper()} run: "
            f"resume it with the {written_by} trainer, or start over with {_hint('overwrite_output_dir', 'true', cli)}"
        )
    state = json.loads((Path(checkpoint) / "trainer_state.json").read_text())
    step = state.get("global_step")
    target = max_steps if max_steps > 0 else None
    if target is None and state.get("num_train_epochs") == num_train_epochs:
        target = state.get("max_steps")
    if isinstance(step, int) and isinstance(target, int) and target > 0 and step >= target:
        raise FinishedRunError(
            f"resume_from_checkpoint: {checkpoint} is step {step}, at or past max_steps={target}: the run has "
            f"finished, nothing to train, its outputs are left as they are; raise max_steps to train on from it, or "
            f"start over with "
            f"{_hint('overwrite_output_dir', 'true', cli)}"
        )


def resumable_checkpoints(output_dir: str, trainer: str, max_steps: int, num_train_epochs: float) -> list[str]:
    """The complete checkpoints of ``output_dir`` that ``trainer`` could resume (see :func:`check_resume`), oldest
    first: none when the folder holds no checkpoint, only torn ones, only the other trainer's, or only steps that
    a finished run has reached."""
    root = Path(output_dir)
    found = []
    for name in run_outputs(output_dir):
        if CHECKPOINT.match(name) and is_complete(root / name):
            try:
                check_resume(str(root / name), trainer, max_steps, num_train_epochs)
            except ConfigError:
                continue
            found.append(str(root / name))
    return found


def is_save_error(error: BaseException) -> bool:
    """Whether saving failed on the file system (full disk, quota, permissions) rather than by a bug: an ``OSError``,
    safetensors' ``SafetensorError`` (its Rust-side I/O errors are no ``OSError``) or torch's stream-writer error."""
    if isinstance(error, OSError) or type(error).__name__ == "SafetensorError":
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and any(
        marker in text for marker in ("PytorchStreamWriter", "inline_container", "No space left", "file write failed")
    )
