"""The training recipe behind ``attncredit grpo`` and ``attncredit ppo`` (and ``recipes/grpo_anchor.py``,
``recipes/ppo_anchor.py``, thin wrappers of the same flow).

    attncredit grpo --config recipes/configs/X.yaml [--field value ...]
    accelerate launch -m attncredit grpo --config X.yaml        # or: accelerate launch recipes/grpo_anchor.py ...

Every field of ``AnchorScriptArguments`` (below), the trainer's config (``attncredit.AnchorGRPOConfig``: TRL's
GRPOConfig plus ``credit_*``; or ``attncredit.AnchorPPOConfig``) and TRL's ``ModelConfig`` can be set in the YAML
file or on the command line (the command line wins). Without ``--config`` it runs the packaged default config,
``attncredit/configs/default.yaml`` (GRPO) or ``ppo_default.yaml`` (PPO): the embedded SmolLM2-135M-Instruct on a
CPU, offline. Those two files are symlinks to ``recipes/configs/`` in the source tree (one file to edit, which
the wheel build copies into the package, so an installed ``attncredit`` finds them without the repository).
"""

from __future__ import annotations

import difflib
import json
import sys
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"  # GRPO
PPO_DEFAULT_CONFIG = CONFIG_DIR / "ppo_default.yaml"


@dataclass
class AnchorScriptArguments:
    """Data and reward arguments of the recipe."""

    dataset_name: str = field(
        default="countdown",
        metadata={
            "help": "Training dataset: a name from attncredit.data.list_datasets() (countdown, countdown3, gsm8k, "
            "dapo_math_17k, ...) or a local .jsonl/.json/.parquet file with a 'prompt' column and the columns the "
            "rewards read (e.g. 'answer')."
        },
    )
    dataset_options: str | None = field(
        default=None,
        metadata={"help": "Dataset options as a YAML mapping or JSON string, e.g. '{\"num_numbers\": 3}' for countdown."},
    )
    dataset_train_split: str = field(default="train", metadata={"help": "Split used for training."})
    dataset_test_split: str | None = field(
        default=None, metadata={"help": "Split used for TRL's evaluation loop (with eval_strategy); none by default."}
    )
    prompt_template: str | None = field(
        default=None, metadata={"help": "Prompt template name; default: the dataset's own (r1 for countdown, boxed for math)."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep only the first N training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep only the first N evaluation rows."})
    reward_funcs: list[str] = field(
        default_factory=lambda: ["math_accuracy"],
        metadata={
            "help": "Rewards, weighted by reward_weights, as in TRL's script: our names (rewards.REWARD_FUNCS: "
            "math_accuracy, countdown, format, tag_count, ...), any dotted import path of a reward function "
            "(e.g. trl.rewards.think_format_reward, mypkg.rewards.my_reward; the working directory is importable), "
            "or a reward model (a hub id 'org/name' or a local folder), which the trainer loads as a "
            "sequence-classification model."
        },
    )
    reward_model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "TRL's reward-model option: a hub id or local folder of a sequence-classification reward model, "
            "put before reward_funcs (so its reward_weights entry comes first)."
        },
    )


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _check_config_file(path: str, dataclass_types) -> None:
    """Fail with one line on a missing or malformed YAML file or an unknown key (TRL would raise a traceback)."""
    import yaml

    try:
        with open(path) as f:
            config = yaml.safe_load(f)
    except FileNotFoundError:
        _fail(f"config file {path!r} does not exist")
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        _fail(f"malformed YAML in {path}{line}: {getattr(e, 'problem', None) or e}")
    if not isinstance(config, dict):
        _fail(f"config file {path} must hold a YAML mapping of field: value, got {type(config).__name__}")
    known = {f.name for cls in dataclass_types for f in fields(cls)} | {"env"}
    for key in config:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else "; see --help for the allowed fields"
            _fail(f"unknown config key {key!r} in {path}{hint}")


def parse_args(argv: list[str], config_cls=None, default_config: Path = DEFAULT_CONFIG, prog: str | None = None):
    """(script args, training args, model args) from ``--config`` YAML plus command-line overrides; the training
    arguments are ``config_cls`` (default ``AnchorGRPOConfig``), and ``default_config`` serves without ``--config``.
    ``prog`` names the command in ``--help`` and usage lines (default: the script's file name)."""
    from trl import ModelConfig, TrlParser

    if config_cls is None:
        from attncredit import AnchorGRPOConfig as config_cls

    dataclass_types = (AnchorScriptArguments, config_cls, ModelConfig)
    if "--config" not in argv:
        argv = ["--config", str(default_config), *argv]
    index = argv.index("--config")
    if index + 1 >= len(argv):
        _fail("--config needs a YAML file path")
    _check_config_file(argv[index + 1], dataclass_types)
    parser = TrlParser(dataclass_types, **({"prog": prog} if prog else {}))
    return parser.parse_args_and_config(argv)


def _dataset_options(raw) -> dict:
    import yaml

    if raw is None or isinstance(raw, dict):
        return dict(raw or {})
    try:
        options = yaml.safe_load(raw)
    except yaml.YAMLError:
        options = None
    if not isinstance(options, dict):
        _fail(f"dataset_options={raw!r} is not a mapping; expected e.g. '{{\"num_numbers\": 3}}'")
    return options


def load_data(script_args, split: str, limit: int | None, seed: int):
    """A named dataset, or a local data file (its one split serves every split name)."""
    from attncredit.data import DATA_FILE_SUFFIXES, load_data_file, load_dataset_by_name

    if Path(script_args.dataset_name).suffix in DATA_FILE_SUFFIXES:
        return load_data_file(script_args.dataset_name, limit=limit)
    options = _dataset_options(script_args.dataset_options)
    return load_dataset_by_name(
        script_args.dataset_name, split=split, template=script_args.prompt_template, limit=limit, seed=seed, **options
    )


def resolve_reward_funcs(names, reward_model: str | None = None) -> list:
    """The ``reward_funcs`` of the trainer from the recipe's values, as TRL's ``trl/scripts/grpo.py`` resolves them:
    ``reward_model`` first (a string, which GRPOTrainer loads as a sequence-classification reward model), then per
    name: a callable as is; one of our names (``rewards.REWARD_FUNCS``); a reward model, i.e. a hub id ``org/name``
    or a local folder (kept a string for the trainer, checked like a policy model name); a dotted import path
    ``module.function`` (the working directory importable, as in TRL). Anything else, or an import path that does not
    import, is a one-line ``ConfigError`` listing our names. (Here, not in ``rewards``: that package imports nothing
    from attncredit and resolves only its own names.)"""
    import importlib
    import os

    from rewards import REWARD_FUNCS, get_reward_funcs

    from attncredit.errors import ConfigError, first_line
    from attncredit.models import resolve_model_name

    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    items = [reward_model] if reward_model else []
    items += list(names or [])
    allowed = f"allowed: {', '.join(REWARD_FUNCS)}, an import path module.function, or a reward model (hub id or folder)"
    if not items:
        raise ConfigError(f"no reward functions given; {allowed}")
    resolved = []
    for item in items:
        if callable(item) or item in REWARD_FUNCS:
            resolved.extend(get_reward_funcs([item]))
        elif not isinstance(item, str):
            raise ConfigError(f"reward function {item!r} is neither a name nor a callable; {allowed}")
        elif item is reward_model or "/" in item or "\\" in item or os.path.isdir(item):
            resolved.append(resolve_model_name(item))  # one-line errors for a missing folder or unknown hub id
        elif "." in item and all(part.isidentifier() for part in item.split(".")):
            module_name, attr = item.rsplit(".", 1)
            if os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())  # as TRL's script: local modules of the working directory
            try:
                func = getattr(importlib.import_module(module_name), attr)
            except Exception as e:  # noqa: BLE001 - ImportError, AttributeError, or the module's own failure
                why = first_line(e)
                raise ConfigError(f"reward function {item!r} cannot be imported ({why}); {allowed}") from None
            if not callable(func):
                raise ConfigError(f"reward function {item!r} is a {type(func).__name__}, not a function; {allowed}")
            resolved.append(func)
        else:
            raise ConfigError(f"unknown reward function {item!r}; {allowed}")
    return resolved


def quiet_console() -> None:
    """Hide what a user cannot act on: TRL's use of names transformers deprecated, and matplotlib's note on
    control characters in token views. One progress bar: training's. Call it before importing attncredit (which
    imports TRL).

    transformers >= 5.20 renamed gradient checkpointing to activation checkpointing and raises a FutureWarning at
    each old name, which TRL 1.16 still uses: its config default ``gradient_checkpointing=True``
    (``TrainingArguments.__post_init__``), and ``is_gradient_checkpointing``, ``gradient_checkpointing_disable``
    and ``gradient_checkpointing_enable`` around every generation (``trl.models.utils.unwrap_model_for_generation``).
    Only these messages are hidden (the recipe configs keep ``gradient_checkpointing``: transformers 5.17-5.19 have
    no ``activation_checkpointing``); attncredit itself calls no deprecated name (tests/test_future_warnings.py)."""
    warnings.filterwarnings(
        "ignore", message=r"`(is_)?gradient_checkpointing(_enable|_disable)?` is deprecated", category=FutureWarning
    )
    warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font")
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


def build_trainer(argv: list[str], trainer_cls, config_cls, default_config: Path, prog: str | None = None):
    """The recipe up to training: parse, check the output_dir before anything slow, load tokenizer and data, build
    ``trainer_cls``. Returns ``(trainer, checkpoint to resume from or None)``, or None when the output_dir holds
    this run finished already (said on stderr). Bad input of any step ends with one ``error:`` line, exit 2."""
    from attncredit.errors import ConfigError, first_line
    from attncredit.models import load_tokenizer, resolve_model_name
    from attncredit.output_dir import FinishedRunError, check_resume, check_writable, prepare_output_dir, resolve_resume

    try:
        script_args, training_args, model_args = parse_args(argv, config_cls, default_config, prog)
        from trl import get_peft_config

        # Before anything slow: a bad output_dir, or one holding another run (the trainer deletes it on overwrite).
        resume = resolve_resume(training_args.resume_from_checkpoint, training_args.output_dir)
        if resume is not None:  # another trainer's checkpoint is refused; a finished run's end leaves all as it is
            kind = getattr(trainer_cls, "checkpoint_kind", "grpo")
            check_resume(resume, kind, training_args.max_steps, training_args.num_train_epochs)
        check_writable(training_args.output_dir)
        prepare_output_dir(training_args.output_dir, resume, training_args.overwrite_output_dir, delete=False)

        model_path = resolve_model_name(model_args.model_name_or_path or "smollm2-135m-instruct")
        tokenizer = load_tokenizer(model_path)
        training_args.model_init_kwargs = {
            **(training_args.model_init_kwargs or {}),
            "dtype": model_args.dtype or "auto",
            **({"attn_implementation": model_args.attn_implementation} if model_args.attn_implementation else {}),
        }
        seed = training_args.seed
        train_dataset = load_data(script_args, script_args.dataset_train_split, script_args.max_train_samples, seed)
        eval_dataset = None
        if script_args.dataset_test_split:
            eval_dataset = load_data(script_args, script_args.dataset_test_split, script_args.max_eval_samples, seed)
        reward_funcs = resolve_reward_funcs(script_args.reward_funcs, script_args.reward_model_name_or_path)
        # Built here too: what the trainer loads (e.g. a PPO critic folder) fails in one line like the rest.
        trainer = trainer_cls(
            model=model_path,
            reward_funcs=reward_funcs,
            args=training_args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=tokenizer,
            peft_config=get_peft_config(model_args),
        )
    except FinishedRunError as e:  # nothing to do: exit 0, so a runner that resumes every run skips finished ones
        print(f"attncredit: {e}", file=sys.stderr)
        return None
    except (ConfigError, ValueError) as e:
        _fail(first_line(e))
    return trainer, resume


def run(argv: list[str], trainer_cls, config_cls, default_config: Path, prog: str | None = None) -> None:
    """The recipe: :func:`build_trainer`, train, save, end the process group."""
    from attncredit.errors import CheckpointSaveError, NonFiniteTrainingError, first_line
    from rewards import GradingWorkerError

    built = build_trainer(argv, trainer_cls, config_cls, default_config, prog)
    if built is None:
        return
    trainer, resume = built
    training_args = trainer.args
    try:
        trainer.train(resume_from_checkpoint=resume)
    except (NonFiniteTrainingError, GradingWorkerError, CheckpointSaveError) as e:  # one line naming step/worker/path
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    try:
        trainer.save_model(training_args.output_dir)
    except Exception as e:  # a full disk at the end: one line; the newest checkpoint holds the same weights
        from attncredit.output_dir import is_save_error, last_complete_checkpoint

        if not is_save_error(e):
            raise
        last, _ = last_complete_checkpoint(training_args.output_dir)
        keep = f"{last} holds the trained weights" if last else "no checkpoint holds the trained weights"
        text = first_line(e)
        print(f"error: saving the final model to {training_args.output_dir} failed ({type(e).__name__}: {text}); "
              f"{keep}", file=sys.stderr)
        raise SystemExit(1) from None
    if trainer.accelerator.is_main_process:
        print(json.dumps({"output_dir": training_args.output_dir, "global_step": trainer.state.global_step}))
    # torch.distributed's process group ends here, not at interpreter exit: a gloo group left to the exit can
    # abort the rank (SIGABRT, exit -6) after a finished run, when its worker threads free tensors without the GIL.
    trainer.accelerator.end_training()
