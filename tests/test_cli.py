"""The ``attncredit`` console command: ``--help`` of the command and of every subcommand (COMMANDS, so commands
added later are covered too) exits 0, and any TrlParser built on our configs can print its help (a literal ``%`` in
a field's help text once made argparse fail with "unsupported format character")."""

import os
import subprocess
import sys

import pytest

from attncredit.cli import COMMANDS, main


def _exit_code(call) -> int:
    try:
        return int(call() or 0)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)


def test_attncredit_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name} " in out for name in COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_subcommand_help_exits_0(name, capsys):
    assert _exit_code(lambda: main([name, "--help"])) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:") and f"attncredit {name}" in out, out[:300]


@pytest.mark.parametrize("config", ["AnchorGRPOConfig", "AnchorPPOConfig"])
def test_trl_parser_help_on_our_configs(config, capsys):
    import attncredit
    from trl import ModelConfig, TrlParser

    parser = TrlParser((getattr(attncredit, config), ModelConfig))
    assert _exit_code(lambda: parser.parse_args_and_config(["--help"])) == 0
    out = capsys.readouterr().out
    assert "--credit_head_regroup_every" in out and "--credit_options" in out


def test_help_in_a_subprocess():
    """What a user types, in a fresh interpreter: the module form of the console command (the scripts' forms run
    the same main, test_scripts_are_thin_wrappers_of_the_commands)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(
        [sys.executable, "-m", "attncredit", "ppo", "--help"], capture_output=True, text=True, cwd=root, timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("usage: attncredit ppo")
    assert "--critic_learning_rate" in proc.stdout and "--credit_strategy" in proc.stdout and "--reward_funcs" in proc.stdout


@pytest.mark.parametrize(
    "script, command",
    [("recipes/grpo_anchor.py", "grpo"), ("recipes/ppo_anchor.py", "ppo"), ("scripts/evaluate.py", "eval"),
     ("scripts/analyze_rhythm.py", "analyze"), ("scripts/compare_runs.py", "compare")],
)  # fmt: skip
def test_scripts_are_thin_wrappers_of_the_commands(script, command):
    """The scripts kept for `accelerate launch recipes/...` and old command lines run the package's command."""
    import importlib
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / script
    spec = importlib.util.spec_from_file_location(f"_wrapper_{command}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    target = importlib.import_module(f"attncredit.cli.{command}").main
    assert module.main is target or target.__name__ in module.main.__code__.co_names + module.main.__code__.co_varnames
    assert len(path.read_text().splitlines()) < 40


def test_packaged_default_configs_are_the_recipes_configs():
    """`attncredit grpo` / `ppo` without --config read attncredit/configs/ (package data, so an installed wheel has
    them): links to recipes/configs/, which the wheel build copies; one file to edit, never two that drift."""
    from pathlib import Path

    from attncredit.recipe import DEFAULT_CONFIG, PPO_DEFAULT_CONFIG

    recipes = Path(__file__).resolve().parents[1] / "recipes" / "configs"
    for packaged, name in ((DEFAULT_CONFIG, "default.yaml"), (PPO_DEFAULT_CONFIG, "ppo_default.yaml")):
        assert packaged.is_file() and packaged.read_text() == (recipes / name).read_text()


@pytest.mark.parametrize("name", ["default.yaml", "countdown_cpu.yaml"])
def test_cpu_demo_configs_parse(name):
    """The CPU demo (arithmetic, a task the untrained model partly solves) and the Countdown CPU config read
    through the recipe's parser."""
    from pathlib import Path

    from attncredit.recipe import parse_args

    config = Path(__file__).resolve().parents[1] / "recipes" / "configs" / name
    script_args, args, model_args = parse_args(["--config", str(config)])
    assert model_args.model_name_or_path == "smollm2-135m-instruct" and args.max_steps == 5
    assert (script_args.dataset_name, script_args.reward_funcs) in (
        ("arithmetic", ["arithmetic_answer"]), ("countdown", ["countdown", "tag_count", "countdown_accuracy"])
    )


def test_analyze_sets_the_openmp_wait_policy_before_torch_loads():
    """OpenMP reads OMP_WAIT_POLICY once, when torch loads: `attncredit analyze` must set it first, so nothing on the
    way from the console command to its module may import torch (a hook records the policy torch would read)."""
    code = (
        "import builtins, os, sys\n"
        "os.environ.pop('OMP_WAIT_POLICY', None)\n"
        "seen = []\n"
        "real = builtins.__import__\n"
        "def spy(name, *args, **kwargs):\n"
        "    if name.split('.')[0] == 'torch' and 'torch' not in sys.modules:\n"
        "        seen.append(os.environ.get('OMP_WAIT_POLICY'))\n"
        "    return real(name, *args, **kwargs)\n"
        "builtins.__import__ = spy\n"
        "from attncredit.cli import main\n"
        "assert 'torch' not in sys.modules, 'the CLI imported torch'\n"
        "try:\n"
        "    main(['analyze', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "import torch\n"
        "print(seen[0])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[-1] == "PASSIVE"
