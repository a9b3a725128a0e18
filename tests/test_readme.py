"""The README's commands are the project's: two quick-start commands (CI runs the second), idempotent set-up, and
every Python block runs as written, offline."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def section(title_start: str) -> str:
    start = README.index(f"\n## {title_start}")
    end = README.find("\n## ", start + 1)
    return README[start:end]


def bash_commands(text: str) -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    lines = [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line]


def test_quick_start_is_two_commands_and_ci_runs_the_second():
    assert bash_commands(section("Quick start")) == ["bash scripts/demo.sh", "bash scripts/test.sh"]
    for script in ("demo.sh", "test.sh", "setup_env.sh"):
        check = subprocess.run(["bash", "-n", str(ROOT / "scripts" / script)], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
    # .ci/run executes the README block after <!-- ci:test -->: the quick start's second command, nothing else.
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'bash -euxo pipefail -c "$(block test)"' in ci and "pytest" not in ci and "pip install" not in ci
    awk = re.search(r"block\(\) \{ (awk .*?); \}", ci).group(1).replace("$1", "test")
    extracted = subprocess.run(["bash", "-c", awk], cwd=ROOT, capture_output=True, text=True).stdout
    assert bash_commands(f"```bash\n{extracted}```") == ["bash scripts/test.sh"]
    # the demo starts over each time; the test command builds the vLLM venv as before
    assert "--overwrite_output_dir true" in (ROOT / "scripts" / "demo.sh").read_text()
    assert "setup_vllm_cpu_env.sh" in (ROOT / "scripts" / "test.sh").read_text()


def test_setup_runs_once_then_is_a_no_op(tmp_path):
    """scripts/setup_env.sh (scripts/install_lock.sh): a venv whose stamp matches is left alone (its python is
    never called); one made from the same lock under another pyproject.toml only gets attncredit reinstalled; one
    made from another lock is removed and rebuilt from the lock, with the Python the lock names. Fake ``python3``,
    ``python3.X`` and venv python record the calls."""
    venv = tmp_path / "venv"
    calls = tmp_path / "calls"
    fake = f'#!/usr/bin/env bash\necho "$(basename "$0") $@" >> {calls}\nexit 1\n'

    def fake_venv():
        (venv / "bin").mkdir(parents=True, exist_ok=True)
        (venv / "bin" / "python").write_text(fake)
        (venv / "bin" / "python").chmod(0o755)

    # python3 and the lock's python3.X: `-c CODE` runs this interpreter (install_lock.sh asks its version);
    # `-m venv VENV` makes a fake venv whose python fails after recording its call
    shim = tmp_path / "shim"
    shim.mkdir()
    (tmp_path / "fake_python").write_text(fake)
    lock_python = re.search(r"\(Python (\d+\.\d+)\.", (ROOT / "attncredit/stacks/cpu.txt").read_text()).group(1)
    for name in ("python3", f"python{lock_python}"):
        (shim / name).write_text(
            f'#!/usr/bin/env bash\n[[ $1 == -c ]] && exec {sys.executable} "$@"\necho "{name} $@" >> {calls}\n'
            f'mkdir -p "$3/bin"\ncp {tmp_path / "fake_python"} "$3/bin/python"\nchmod +x "$3/bin/python"\n'
        )
        (shim / name).chmod(0o755)

    def stamp(*files):
        out = subprocess.run(f"cat {' '.join(files)} | sha256sum | cut -d' ' -f1", shell=True, cwd=ROOT,
                             capture_output=True, text=True)
        return out.stdout.strip()

    lock_stamp = stamp("attncredit/stacks/cpu.txt", "scripts/install_lock.sh")
    env = {**os.environ, "ATTNCREDIT_VENV": str(venv), "PATH": f"{shim}:{os.environ['PATH']}"}
    setup = ["bash", str(ROOT / "scripts" / "setup_env.sh")]

    fake_venv()
    (venv / ".attncredit-setup").write_text(f"{lock_stamp} {stamp('pyproject.toml')}\n")
    done = subprocess.run(setup, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "up to date" in done.stdout and not calls.exists(), done.stdout + done.stderr

    (venv / ".attncredit-setup").write_text(f"{lock_stamp} another-pyproject\n")
    redo = subprocess.run(setup, env=env, capture_output=True, text=True, timeout=60)
    assert redo.returncode != 0, redo.stdout + redo.stderr
    assert calls.read_text().splitlines() == [f"python -m pip install -q --no-deps --no-build-isolation -e {ROOT}"]

    calls.unlink()
    (venv / ".attncredit-setup").write_text("another-lock another-pyproject\n")
    rebuild = subprocess.run(setup, env=env, capture_output=True, text=True, timeout=60)
    assert rebuild.returncode != 0 and "rebuilding" in rebuild.stdout, rebuild.stdout + rebuild.stderr
    assert not (venv / ".attncredit-setup").exists()  # the old venv went
    assert calls.read_text().splitlines() == [
        f"python{lock_python} -m venv {venv}",
        f"python -m pip install -q --no-deps -r {ROOT / 'attncredit/stacks/cpu.txt'}",
    ]


@pytest.mark.slow
def test_readme_python_blocks_run_offline_as_written(tmp_path):
    """Every ```python block of the README, in a fresh folder, offline (the API example trains one step of the
    embedded SmolLM2)."""
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert blocks
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    for i, code in enumerate(blocks):
        proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"README python block {i}:\n{code}\n{proc.stderr[-3000:]}"
    assert (tmp_path / "runs" / "api" / "metrics.jsonl").exists()
    assert not list((tmp_path / "runs" / "api").glob("checkpoint-*"))  # save_strategy="no": no 1.6 GB checkpoint
