"""A training step through the Python API raises no FutureWarning that attncredit's own calls cause.

A deprecation warning is raised inside the library that owns the deprecated name (transformers' ``warnings.warn``
carries transformers' file and line), so the warning's filename does not say who called it. The culprit is the
first caller outside that library: attncredit when our code calls a deprecated API, TRL when TRL does (those are
left to TRL and reported, not silenced: attncredit/recipe.py's quiet_console names them).
"""

import sys
import traceback
import warnings
from pathlib import Path

import pytest
from test_ppo_trainer import make_trainer
from tiny_training import digit_reward, prompts, tiny_args

import attncredit
from attncredit import AnchorGRPOConfig, AnchorGRPOTrainer
from attncredit.models import load_tokenizer

PACKAGE = Path(attncredit.__file__).resolve().parent


def owner(filename: str) -> str | None:
    """``attncredit``, the installed package a file belongs to, or None (the standard library, tests, generated code)."""
    path = Path(filename).resolve()
    if path.is_relative_to(PACKAGE):
        return "attncredit"
    parts = path.parts
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1]
    return None


def caller_of(stack: list[traceback.FrameSummary]) -> str | None:
    """The package that called into the one raising the warning: walking out from the ``warnings.warn`` call
    (``stack[-1]``), the first frame owned by another package; the raiser itself when nothing else called it."""
    raiser = owner(stack[-1].filename)
    for frame in reversed(stack[:-1]):
        who = owner(frame.filename)
        if who is not None and who != raiser:
            return who
    return raiser


def future_warnings_during(run) -> list[tuple[str, str | None, str]]:
    """(message, calling package, calling frame) of every FutureWarning ``run()`` raises, each time it is raised."""
    seen = []

    def record(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, FutureWarning):
            stack = [f for f in traceback.extract_stack()[:-1] if f.filename != warnings.__file__]
            who = caller_of(stack)
            frame = next((f"{f.filename}:{f.lineno}" for f in reversed(stack) if owner(f.filename) == who), "?")
            seen.append((str(message), who, frame))

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        run()
    return seen


def grpo_step(model_dir, tmp_path):
    trainer = AnchorGRPOTrainer(
        model=str(model_dir),
        reward_funcs=digit_reward,
        args=AnchorGRPOConfig(**tiny_args(tmp_path, max_steps=1)),
        train_dataset=prompts(),
        processing_class=load_tokenizer(str(model_dir)),
    )
    trainer.train()


def ppo_step(model_dir, tmp_path):
    make_trainer(model_dir, tmp_path, max_steps=1).train()


@pytest.mark.parametrize("step", [grpo_step, ppo_step], ids=["grpo", "ppo"])
def test_a_training_step_raises_no_future_warning_of_ours(step, tiny_qwen2, tmp_path):
    """TRL's default gradient checkpointing is on, so the step runs the checkpointing calls too."""
    seen = future_warnings_during(lambda: step(tiny_qwen2, tmp_path))
    ours = [(message, frame) for message, who, frame in seen if who == "attncredit"]
    assert not ours, ours


def test_the_caller_is_found_past_the_raising_library():
    """The attribution itself: a warning raised in transformers' code called from ours is ours; one from our code
    calling TRL calling transformers is TRL's."""
    transformers_file = str(Path(sys.modules["transformers"].__file__).parent / "modeling_utils.py")
    trl_file = str(Path(sys.modules["trl"].__file__).parent / "models" / "utils.py")
    ours = str(PACKAGE / "trainer.py")

    def frames(*files):
        return [traceback.FrameSummary(f, 1, "f") for f in files]

    assert caller_of(frames(ours, transformers_file, transformers_file)) == "attncredit"
    assert caller_of(frames(ours, trl_file, "/usr/lib/python3.11/contextlib.py", transformers_file)) == "trl"
    assert caller_of(frames(ours)) == "attncredit"
