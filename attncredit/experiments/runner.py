"""Run every arm x seed of an experiment through the recipe's own training path, resumably.

Each run is one subprocess, ``python -m attncredit <recipe> --config <config> --output_dir <run dir> --seed s
--data_seed s --max_steps M --save_strategy steps --save_steps K --save_total_limit 1 --<field> <value> ...``
(the arm's overrides), its console appended to ``<run dir>/console.log``. At most ``parallel`` run at once.

State of a run folder, and what ``run`` does with it:

* ``finished.json`` (written once a complete checkpoint at ``max_steps`` exists: training, its last evaluation
  and its save are done, even if the process died after that): skipped;
* a complete checkpoint (``attncredit.output_dir``): resumed with ``--resume_from_checkpoint true``, so a killed
  command costs at most ``save_steps`` steps per run;
* outputs but no complete checkpoint (killed before the first save): started over (``--overwrite_output_dir``);
* ``runner.pid`` naming a live process: left alone (another ``run`` drives it).

A run that fails twice in a row within one ``run`` is not retried again; ``run`` names it in one line with its
``console.log``. Each run folder also gets ``experiment_run.json`` (experiment, arm, seed, overrides, the recipe
config's contents, baseline, primary metric, git commit and whether the tree differed from it, versions, device
and its UUID, host),
which ``report`` and ``collect`` read.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from attncredit.callbacks import METRICS_FILE
from attncredit.output_dir import CHECKPOINT, last_complete_checkpoint, run_outputs

from .spec import Experiment, run_name

SETTINGS_FILE = "experiment_run.json"
FINISHED_FILE = "finished.json"
PID_FILE = "runner.pid"
CONSOLE_FILE = "console.log"
SMALL_FILES = (METRICS_FILE, SETTINGS_FILE, FINISHED_FILE)  # what ``collect`` copies
ATTEMPTS = 2


def _flag_values(value) -> list[str]:
    """A YAML value as the recipe's command-line words (TrlParser: lists as separate words, booleans true/false,
    mappings as JSON, e.g. dataset_options)."""
    if isinstance(value, bool):
        return ["true" if value else "false"]
    if isinstance(value, list):
        return [w for v in value for w in _flag_values(v)]
    if isinstance(value, dict):
        return [json.dumps(value)]
    return [str(value)]


def run_command(experiment: Experiment, arm: str, seed: int, resume: bool, overwrite: bool,
                launcher: list[str] | None = None) -> list[str]:
    """The subprocess command line of one run (module docstring); ``launcher`` replaces ``python -m attncredit``
    (the tests run the recipe through a script that adds a reward for random models)."""
    cmd = [*(launcher or [sys.executable, "-m", "attncredit"]), experiment.recipe, "--config", experiment.config,
           "--output_dir", str(experiment.run_dir(arm, seed)), "--seed", str(seed), "--data_seed", str(seed),
           "--max_steps", str(experiment.max_steps), "--save_strategy", "steps",
           "--save_steps", str(experiment.save_steps), "--save_total_limit", "1"]
    for key, value in experiment.overrides(arm).items():
        cmd += [f"--{key}", *_flag_values(value)]
    if resume:
        cmd += ["--resume_from_checkpoint", "true"]
    elif overwrite:
        cmd += ["--overwrite_output_dir", "true"]
    return cmd


def _git(*args: str) -> str | None:
    """Output of ``git ARGS`` in the package's checkout, or None outside one."""
    try:
        out = subprocess.run(["git", *args], cwd=Path(__file__).resolve().parent, capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _git_state() -> dict:
    """``git_commit`` (HEAD) and ``git_dirty``: whether tracked files differ from it, i.e. whether the commit alone
    does not name the code that ran (None outside a checkout)."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": _git("rev-parse", "HEAD"), "git_dirty": None if status is None else bool(status)}


def _device() -> dict:
    """``device`` (the GPU's name, or ``cpu``) and ``device_uuid`` (the GPU's UUID, None on a CPU) of the first GPU
    nvidia-smi lists, without initialising CUDA in the runner. The UUID tells one physical GPU from another of the
    same model, so that the report can compare runs that each had the same GPU to themselves."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,uuid", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return {"device": "cpu", "device_uuid": None}
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        return {"device": "cpu", "device_uuid": None}
    name, _, uuid = lines[0].partition(",")  # "NVIDIA H100 80GB HBM3, GPU-5f0c..."
    return {"device": name.strip(), "device_uuid": uuid.strip() or None}


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": sys.version.split()[0]}
    for package in ("attncredit", "torch", "transformers", "trl", "accelerate"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    return found


def run_settings(experiment: Experiment, arm: str, seed: int, environment: dict) -> dict:
    """What ``experiment_run.json`` records for one run (module docstring), the recipe config's contents included
    (a config edited between runs, e.g. the study's chosen difficulty, stays on record)."""
    import yaml

    with open(experiment.config) as f:
        config = yaml.safe_load(f)
    return {"experiment": experiment.name, "experiment_file": experiment.path, "arm": arm, "seed": seed,
            "overrides": experiment.overrides(arm), "recipe": experiment.recipe, "config": experiment.config,
            "config_contents": config,
            "max_steps": experiment.max_steps, "save_steps": experiment.save_steps, "baseline": experiment.baseline,
            "primary_metric": experiment.primary_metric, "train_metric": experiment.train_metric,
            "comparisons": [list(pair) for pair in experiment.comparisons], **environment}


def is_finished(run_dir: Path, max_steps: int) -> bool:
    """Whether ``run_dir``'s ``finished.json`` says it reached ``max_steps`` (a run finished at a smaller budget
    resumes when the experiment raises ``max_steps``)."""
    try:
        return json.loads((run_dir / FINISHED_FILE).read_text()).get("global_step") == max_steps
    except (OSError, ValueError, AttributeError):
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _driven_elsewhere(run_dir: Path) -> int | None:
    """The pid of a live process that another ``run`` started in ``run_dir``, or None."""
    try:
        pid = int((run_dir / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid != os.getpid() and _alive(pid) else None


def train_progress(run_dir: Path) -> int:
    """The highest optimizer step ``run_dir``'s metrics.jsonl has logged (0 for none)."""
    step = 0
    try:
        with open(run_dir / METRICS_FILE) as f:
            for line in f:
                try:
                    step = max(step, int(json.loads(line).get("step", 0)))
                except (ValueError, AttributeError, TypeError):
                    continue  # a line cut by a kill
    except OSError:
        pass
    return step


@dataclass
class _Run:
    arm: str
    seed: int
    run_dir: Path
    attempts: int = 0
    process: subprocess.Popen | None = None
    console: object = None


def _start(experiment: Experiment, run: _Run, environment: dict, launcher: list[str] | None) -> None:
    run.run_dir.mkdir(parents=True, exist_ok=True)
    last, _ = last_complete_checkpoint(str(run.run_dir))
    resume = last is not None
    overwrite = not resume and bool(run_outputs(str(run.run_dir)))
    cmd = run_command(experiment, run.arm, run.seed, resume, overwrite, launcher)
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    (run.run_dir / SETTINGS_FILE).write_text(json.dumps(
        {**run_settings(experiment, run.arm, run.seed, environment), "command": cmd, "started": stamp,
         "attempt": run.attempts + 1}, indent=1) + "\n")
    run.console = open(run.run_dir / CONSOLE_FILE, "a")
    how = f"resuming from {Path(last).name}" if resume else ("starting over" if overwrite else "starting")
    run.console.write(f"\n=== {stamp} attncredit exp: {how}, attempt {run.attempts + 1}\n$ {' '.join(cmd)}\n")
    run.console.flush()
    run.process = subprocess.Popen(cmd, stdout=run.console, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    (run.run_dir / PID_FILE).write_text(str(run.process.pid))
    run.attempts += 1


def mark_if_finished(run_dir: Path, max_steps: int) -> bool:
    """Write ``finished.json`` when ``run_dir`` holds a complete checkpoint at ``max_steps``; True when finished."""
    if is_finished(run_dir, max_steps):
        return True
    last, _ = last_complete_checkpoint(str(run_dir))
    if last is None or int(CHECKPOINT.match(Path(last).name).group(1)) != max_steps:
        return False
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    (run_dir / FINISHED_FILE).write_text(json.dumps({"global_step": max_steps, "finished_at": stamp}) + "\n")
    return True


def _finish(experiment: Experiment, run: _Run) -> bool:
    """Close a run whose process exited; True (and ``finished.json``) when it reached ``max_steps``."""
    rc = run.process.wait()
    run.console.close()
    (run.run_dir / PID_FILE).unlink(missing_ok=True)
    if mark_if_finished(run.run_dir, experiment.max_steps):
        return True
    last, _ = last_complete_checkpoint(str(run.run_dir))
    step = int(CHECKPOINT.match(Path(last).name).group(1)) if last else 0
    with open(run.run_dir / CONSOLE_FILE, "a") as console:
        console.write(f"=== attncredit exp: exit code {rc}, newest complete checkpoint step {step} of "
                      f"{experiment.max_steps}\n")
    return False


def run_experiment(experiment: Experiment, runs: list[tuple[str, int]] | None = None, *, parallel: int = 1,
                   poll_seconds: float = 2.0, progress: bool = True, launcher: list[str] | None = None) -> int:
    """Run ``runs`` (default: every arm x seed) of ``experiment``, ``parallel`` at a time, with one tqdm bar over
    all their optimizer steps. Returns 0 when every selected run is finished, else 1 (the failed runs are named
    on stderr, one line each with its console.log). ``launcher``: see ``run_command``."""
    from tqdm import tqdm

    selected = experiment.runs() if runs is None else runs
    todo, skipped, elsewhere = [], 0, []
    for arm, seed in selected:
        run_dir = experiment.run_dir(arm, seed)
        if mark_if_finished(run_dir, experiment.max_steps):
            skipped += 1
        elif (pid := _driven_elsewhere(run_dir)) is not None:
            elsewhere.append(f"{run_name(arm, seed)} (pid {pid})")
        else:
            todo.append(_Run(arm, seed, run_dir))
    print(f"{experiment.name}: {len(selected)} runs selected, {skipped} finished already, {len(todo)} to run"
          + (f", {len(elsewhere)} running elsewhere: {', '.join(elsewhere)}" if elsewhere else "")
          + f" ({parallel} at a time)", flush=True)
    environment = {**_git_state(), "versions": _versions(), **_device(), "host": socket.gethostname()}
    bar = tqdm(total=len(todo) * experiment.max_steps, unit="step", disable=not progress, dynamic_ncols=True)
    waiting, active, failed, done = list(todo), [], [], 0
    last_shown = None

    def stop(signum, frame):  # `timeout` or a kill: end through the clean-up below
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        while waiting or active:
            while waiting and len(active) < parallel:
                run = waiting.pop(0)
                _start(experiment, run, environment, launcher)
                active.append(run)
            time.sleep(poll_seconds)
            for run in [r for r in active if r.process.poll() is not None]:
                active.remove(run)
                if _finish(experiment, run):
                    done += 1
                elif run.attempts < ATTEMPTS:
                    waiting.insert(0, run)
                else:
                    failed.append(run)
            shown = (sum(experiment.max_steps if is_finished(r.run_dir, experiment.max_steps) else
                         train_progress(r.run_dir) for r in todo), len(active), done, len(failed))
            if shown != last_shown:  # redraw on change only: a log file (no terminal) gets one line per change
                last_shown = shown
                bar.n = shown[0]
                bar.set_postfix(running=shown[1], finished=shown[2], failed=shown[3], refresh=False)
                bar.refresh()
    finally:
        signal.signal(signal.SIGTERM, previous)
        bar.close()
        for run in active:  # interrupted (Ctrl-C, SIGTERM): stop the children; their checkpoints resume next time
            run.process.terminate()
            run.process.wait()
            run.console.close()
            (run.run_dir / PID_FILE).unlink(missing_ok=True)
    for run in failed:
        print(f"run {run_name(run.arm, run.seed)} failed {ATTEMPTS} times in a row; see "
              f"{run.run_dir / CONSOLE_FILE}", file=sys.stderr)
    print(f"{experiment.name}: {skipped + done}/{len(selected)} selected runs finished", flush=True)
    return 0 if not failed and not elsewhere else 1


def collect(experiment: Experiment, destination: str) -> list[str]:
    """Copy the small files (``SMALL_FILES``) of every finished run under ``experiment.output_root`` to
    ``destination/<arm>-s<seed>/``; returns the run names copied."""
    copied = []
    for arm, seed in experiment.runs():
        run_dir = experiment.run_dir(arm, seed)
        if not is_finished(run_dir, experiment.max_steps):
            continue
        target = Path(destination) / run_name(arm, seed)
        target.mkdir(parents=True, exist_ok=True)
        for name in SMALL_FILES:
            shutil.copy2(run_dir / name, target / name)
        copied.append(run_name(arm, seed))
    return copied
