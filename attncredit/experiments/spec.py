"""The experiment file: arms x seeds over one recipe config, and its validation.

An experiment file is a YAML mapping::

    name: credit_study                                  # names the results folder (docs/study/<name>)
    recipe: grpo                                        # grpo or ppo: `attncredit <recipe>` trains each run
    config: recipes/configs/study_arithmetic.yaml       # the recipe config every run starts from
    output_root: runs/credit_study                      # run folders: <output_root>/<arm>-s<seed>
    seeds: [0, 1, 2]                                    # each run: --seed s --data_seed s (same data order per seed)
    max_steps: 300                                      # optimizer steps per run
    save_steps: 25                                      # checkpoint every K steps (save_total_limit 1)
    baseline: none                                      # the arm the others are compared with, seed by seed
    primary_metric: eval_rewards/arithmetic_answer/mean # a metrics.jsonl key, read at the final step
    train_metric: reward                                # optional (default: reward): the train curve
    common: {eval_steps: 25}                            # optional: overrides every arm gets
    comparisons: [[coupled, random]]                    # optional: paired comparisons besides arm vs baseline
    arms:                                               # arm name -> recipe config overrides
      none: {credit_strategy: none}
      coupled: {credit_strategy: coupled}

Relative paths are relative to the folder the command runs in (as the recipe configs' own ``output_dir``).
Override keys are fields of the recipe (``attncredit <recipe> --help``); the runner sets ``output_dir``,
``seed``, ``data_seed``, ``max_steps``, ``save_steps``, ``save_strategy``, ``save_total_limit`` and
``resume_from_checkpoint`` itself, so those are refused as overrides. Every error is one ``ConfigError`` line
naming the bad value and what is allowed.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

from attncredit.errors import ConfigError

RECIPES = ("grpo", "ppo")
REQUIRED = ("name", "recipe", "config", "output_root", "seeds", "max_steps", "save_steps", "baseline",
            "primary_metric", "arms")
OPTIONAL = ("train_metric", "common", "comparisons")
RUNNER_FIELDS = ("output_dir", "seed", "data_seed", "max_steps", "save_steps", "save_strategy", "save_total_limit",
                 "resume_from_checkpoint", "overwrite_output_dir")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Experiment:
    """A validated experiment file (module docstring); ``path`` is the file it came from."""

    name: str
    recipe: str
    config: str
    output_root: str
    seeds: list[int]
    max_steps: int
    save_steps: int
    baseline: str
    primary_metric: str
    arms: dict[str, dict]
    train_metric: str = "reward"
    common: dict = field(default_factory=dict)
    comparisons: list[tuple[str, str]] = field(default_factory=list)
    path: str = ""

    def overrides(self, arm: str) -> dict:
        """The recipe overrides of ``arm``: the common ones, then the arm's own."""
        return {**self.common, **self.arms[arm]}

    def run_dir(self, arm: str, seed: int) -> Path:
        return Path(self.output_root) / run_name(arm, seed)

    def runs(self) -> list[tuple[str, int]]:
        """Every (arm, seed), seed-major: the first seeds of every arm finish first."""
        return [(arm, seed) for seed in self.seeds for arm in self.arms]


def run_name(arm: str, seed: int) -> str:
    return f"{arm}-s{seed}"


def recipe_fields(recipe: str) -> set[str]:
    """Every field the recipe reads from its config or command line."""
    from trl import ModelConfig

    from attncredit.recipe import AnchorScriptArguments

    if recipe == "ppo":
        from attncredit import AnchorPPOConfig as config_cls
    else:
        from attncredit import AnchorGRPOConfig as config_cls
    return {f.name for cls in (AnchorScriptArguments, config_cls, ModelConfig) for f in fields(cls)}


def _int(value, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_overrides(where: str, overrides, allowed: set[str]) -> dict:
    if not isinstance(overrides, dict):
        raise ConfigError(f"{where} must be a mapping of recipe field: value, got {overrides!r}")
    for key, value in overrides.items():
        if key in RUNNER_FIELDS:
            raise ConfigError(f"{where}: '{key}' is set by the runner; allowed: any recipe field except "
                              f"{', '.join(RUNNER_FIELDS)}")
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(f"{where}: unknown recipe field '{key}'{hint}; allowed: the fields of "
                              "'attncredit grpo --help' / 'attncredit ppo --help'")
        if value is None:
            raise ConfigError(f"{where}: '{key}' is null; give a value (or leave the field to the recipe config)")
    return dict(overrides)


def _read_yaml(path: str, what: str) -> dict:
    import yaml

    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"{what} {path!r} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {path!r} is a folder, not a YAML file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"malformed YAML in {path}{line}: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path} must hold a YAML mapping, got {type(data).__name__}")
    return data


def load_experiment(path: str, *, check_fields: bool = True) -> Experiment:
    """Read and validate the experiment file at ``path`` (``ConfigError`` on any bad value). ``check_fields``:
    check the override keys against the recipe's fields (imports TRL)."""
    data = _read_yaml(path, "experiment file")
    for key in REQUIRED:
        if key not in data:
            raise ConfigError(f"experiment file {path} is missing '{key}'; required: {', '.join(REQUIRED)}")
    unknown = sorted(set(data) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise ConfigError(f"experiment file {path}: unknown key '{unknown[0]}'; allowed: "
                          f"{', '.join(REQUIRED + OPTIONAL)}")
    name = data["name"]
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"name must be letters, digits, '_', '-' or '.', got {name!r}")
    if data["recipe"] not in RECIPES:
        raise ConfigError(f"unknown recipe {data['recipe']!r}; allowed: {', '.join(RECIPES)}")
    for key in ("config", "output_root", "primary_metric", "baseline"):
        if not isinstance(data[key], str) or not data[key]:
            raise ConfigError(f"{key} must be a non-empty string, got {data[key]!r}")
    config = _read_yaml(data["config"], "recipe config")
    seeds = data["seeds"]
    if not isinstance(seeds, list) or not seeds:
        raise ConfigError(f"seeds must be a non-empty list of integers >= 0, got {seeds!r}")
    for seed in seeds:
        _int(seed, "every seed", 0)
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds must be distinct, got {seeds!r}")
    max_steps = _int(data["max_steps"], "max_steps", 1)
    save_steps = _int(data["save_steps"], "save_steps", 1)
    arms = data["arms"]
    if not isinstance(arms, dict) or not arms:
        raise ConfigError(f"arms must be a mapping of arm name: {{recipe field: value}}, got {arms!r}")
    for arm in arms:
        if not isinstance(arm, str) or not _NAME.match(arm):
            raise ConfigError(f"arm name must be letters, digits, '_', '-' or '.', got {arm!r}")
    if data["baseline"] not in arms:
        raise ConfigError(f"baseline {data['baseline']!r} is not an arm; allowed: {', '.join(arms)}")
    train_metric = data.get("train_metric", "reward")
    if not isinstance(train_metric, str) or not train_metric:
        raise ConfigError(f"train_metric must be a non-empty string, got {train_metric!r}")
    comparisons = data.get("comparisons") or []
    if not isinstance(comparisons, list):
        raise ConfigError(f"comparisons must be a list of [arm, other arm] pairs, got {comparisons!r}")
    for pair in comparisons:
        if not (isinstance(pair, list) and len(pair) == 2 and all(a in arms for a in pair) and pair[0] != pair[1]):
            raise ConfigError(f"comparison {pair!r} must be [arm, other arm] of two different arms; allowed arms: "
                              f"{', '.join(arms)}")
    allowed = recipe_fields(data["recipe"]) if check_fields else None
    common = data.get("common") or {}
    if check_fields:
        common = _check_overrides("common", common, allowed)
        arms = {arm: _check_overrides(f"arm '{arm}'", overrides or {}, allowed) for arm, overrides in arms.items()}
    eval_steps = common.get("eval_steps", config.get("eval_steps"))
    eval_strategy = str(common.get("eval_strategy", config.get("eval_strategy", "no")))
    if data["primary_metric"].startswith("eval_") and eval_strategy != "steps":
        raise ConfigError(f"primary_metric {data['primary_metric']!r} is an evaluation metric, but the recipe config "
                          f"has eval_strategy {eval_strategy!r}; allowed: eval_strategy steps (with dataset_test_split)")
    if data["primary_metric"].startswith("eval_") and isinstance(eval_steps, int) and max_steps % eval_steps:
        raise ConfigError(f"max_steps {max_steps} is not a multiple of eval_steps {eval_steps}: no evaluation at the "
                          "final step for the primary metric; allowed: a max_steps that eval_steps divides")
    return Experiment(name=name, recipe=data["recipe"], config=data["config"], output_root=data["output_root"],
                      seeds=list(seeds), max_steps=max_steps, save_steps=save_steps, baseline=data["baseline"],
                      primary_metric=data["primary_metric"], arms={a: dict(o or {}) for a, o in arms.items()},
                      train_metric=train_metric, common=dict(common),
                      comparisons=[tuple(pair) for pair in comparisons], path=str(path))


def parse_only(text: str, experiment: Experiment) -> list[tuple[str, int]]:
    """The runs ``--only arm=a,b,seed=0,1`` selects (``arm=`` and ``seed=`` each optional; values after a key
    belong to it until the next ``key=``): every named arm x every named seed. Selections joined by ``;`` add up
    (``arm=entropy,seed=0;arm=none,coupled,seed=1``), in the experiment's run order."""
    if ";" in text:
        chosen = {run for part in text.split(";") for run in _parse_selection(part, experiment)}
        return [run for run in experiment.runs() if run in chosen]
    return _parse_selection(text, experiment)


def _parse_selection(text: str, experiment: Experiment) -> list[tuple[str, int]]:
    """One ``arm=...,seed=...`` selection of :func:`parse_only`."""
    chosen: dict[str, list[str]] = {"arm": [], "seed": []}
    key = None
    for item in (p.strip() for p in text.split(",")):
        if "=" in item:
            key, _, item = item.partition("=")
            key = key.strip()
            if key not in chosen:
                raise ConfigError(f"--only: unknown key '{key}'; allowed: arm, seed (e.g. arm=none,coupled,seed=0,1)")
        if key is None or not item:
            raise ConfigError(f"--only {text!r}: expected arm=NAME[,NAME...] and/or seed=N[,N...]")
        chosen[key].append(item.strip())
    for arm in chosen["arm"]:
        if arm not in experiment.arms:
            raise ConfigError(f"--only: arm {arm!r} is not in the experiment; allowed: {', '.join(experiment.arms)}")
    seeds = []
    for seed in chosen["seed"]:
        if not seed.lstrip("-").isdigit() or int(seed) not in experiment.seeds:
            raise ConfigError(f"--only: seed {seed!r} is not in the experiment; allowed: "
                              f"{', '.join(map(str, experiment.seeds))}")
        seeds.append(int(seed))
    return [(arm, seed) for arm, seed in experiment.runs()
            if (not chosen["arm"] or arm in chosen["arm"]) and (not seeds or seed in seeds)]
