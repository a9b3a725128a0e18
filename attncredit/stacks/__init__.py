"""The software stacks attncredit is tested on, and how an installed environment compares with them.

Each stack is a text file beside this module, one ``name==version`` a line (``#`` comments):

* ``cpu.txt``: the lock of the test/demo environment (``scripts/setup_env.sh``, CI), every package pinned;
* ``vllm-cpu.txt``: the lock of the vLLM test environment (``scripts/setup_vllm_cpu_env.sh``);
* ``gpu.txt``: the main packages of the GPU machine the benchmarks and the learning study ran on (not a lock: that
  image is not built from a file of ours).

The two locks are written by ``scripts/lock_env.sh`` and nothing else. ``attncredit env`` reads these files to say
which installed versions lie outside every tested stack, and ``attncredit env --lock NAME`` checks that an
environment is exactly a lock (the set-up scripts run it after installing).
"""

from __future__ import annotations

import importlib.metadata as metadata
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

HERE = Path(__file__).resolve().parent
STACKS = {
    "cpu": "CPU test/demo stack of CI (lock)",
    "vllm-cpu": "vLLM CPU test stack (lock)",
    "gpu": "GPU stack of the benchmarks and the learning study",
}
LOCK_EXTRAS = {"cpu": ("dev", "triton"), "vllm-cpu": ("dev",)}  # attncredit's extras each lock must satisfy
# What `attncredit env` reports, in this order; the first name that is installed is shown.
REPORTED = (
    ("torch",), ("transformers",), ("trl",), ("accelerate",), ("peft",), ("datasets",), ("vllm", "vllm-cpu"),
    ("triton",), ("deepspeed",), ("math-verify",),
)


def read_stack(name: str) -> dict[str, str]:
    """``{canonical package name: version}`` of stack ``name`` (a key of :data:`STACKS`)."""
    if name not in STACKS:
        raise ValueError(f"unknown stack {name!r}; allowed: {', '.join(STACKS)}")
    pins = {}
    for raw in (HERE / f"{name}.txt").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        package, sep, version = line.partition("==")
        if not sep or not version.strip():
            raise ValueError(f"{name}.txt: {raw!r} is not a 'name==version' pin")
        pins[canonicalize_name(package)] = version.strip()
    return pins


def reported_versions() -> dict[str, tuple[str, str] | None]:
    """For each entry of :data:`REPORTED` (by its first name): the installed package and its version, or None."""
    return {
        names[0]: next(((p, v) for p in names if (v := installed_version(p)) is not None), None) for names in REPORTED
    }


def installed_version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def requires(distribution: str) -> list[str]:
    """The requirement strings ``distribution`` declares ([] when it is not installed)."""
    try:
        return metadata.requires(distribution) or []
    except metadata.PackageNotFoundError:
        return []


def base_version(version: str) -> str:
    """``2.13.0+cpu`` -> ``2.13.0``: the public version, which is what the stacks pin."""
    try:
        return Version(version).public
    except InvalidVersion:
        return version


def _minor(version: str) -> tuple[int, ...]:
    try:
        return Version(version).release[:2]
    except InvalidVersion:
        return ()


@dataclass(frozen=True)
class Finding:
    """One installed combination outside what attncredit tests or its dependencies support."""

    message: str  # one line, naming the installed version and the version (or range) to use


def lock_differences(name: str) -> list[Finding]:
    """Every package of lock ``name`` that is missing or at another version in this environment, and every
    requirement of attncredit (with the lock's extras) that the lock leaves unmet."""
    findings = requirement_findings(extras=LOCK_EXTRAS[name], missing=True)
    for package, version in read_stack(name).items():
        installed = installed_version(package)
        if installed is None:
            findings.append(Finding(f"{package} is not installed; the {name} lock has {package}=={version}"))
        elif base_version(installed) != version:
            findings.append(Finding(f"{package} {installed} differs from the {name} lock; use {package}=={version}"))
    return findings


def requirement_findings(distribution: str = "attncredit", extras: tuple[str, ...] = (),
                         missing: bool = False) -> list[Finding]:
    """Installed packages outside the ranges that ``distribution`` declares: its unconditional requirements and
    those of ``extras``; with ``missing``, also every such requirement that is not installed."""
    findings = []
    for raw in requires(distribution):
        requirement = Requirement(raw)
        if requirement.marker is not None and not any(
            requirement.marker.evaluate({"extra": extra}) for extra in ("", *extras)
        ):
            continue
        installed = installed_version(requirement.name)
        if installed is None:
            if missing:
                findings.append(Finding(f"{requirement.name} is not installed; {distribution} requires "
                                        f"{requirement.name}{requirement.specifier}"))
        elif not requirement.specifier.contains(base_version(installed), prereleases=True):
            findings.append(Finding(
                f"{requirement.name} {installed} is outside {distribution}'s range {requirement.specifier}; "
                f"install {requirement.name}{requirement.specifier}"
            ))
    return findings


def vllm_findings() -> list[Finding]:
    """The installed vLLM against the range the installed TRL supports (TRL's own ``vllm`` extra), and vLLM's own
    torch and transformers requirements against the installed ones."""
    vllm = next((p for p in ("vllm", "vllm-cpu") if installed_version(p)), None)
    if vllm is None:
        return []
    findings = []
    version = installed_version(vllm)
    if installed_version("trl") is not None:
        supported = trl_vllm_range()
        if supported is not None and not supported.contains(base_version(version), prereleases=True):
            newest = newest_tested("vllm-cpu" if vllm == "vllm-cpu" else "vllm", supported)
            hint = f"; use {vllm}=={newest}" if newest else f"; install {vllm}{supported}"
            findings.append(Finding(f"{vllm} {version} is outside the vLLM range TRL {installed_version('trl')} "
                                    f"supports ({supported}){hint}"))
    for raw in requires(vllm):
        requirement = Requirement(raw)
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        if canonicalize_name(requirement.name) not in ("torch", "transformers"):
            continue
        installed = installed_version(requirement.name)
        if installed is not None and not requirement.specifier.contains(base_version(installed), prereleases=True):
            findings.append(Finding(f"{requirement.name} {installed} is outside what {vllm} {version} requires "
                                    f"({requirement.specifier}); install {requirement.name}{requirement.specifier}"))
    return findings


def trl_vllm_range():
    """The ``SpecifierSet`` of vLLM versions the installed TRL declares in its ``vllm`` extra (None if none)."""
    for raw in requires("trl"):
        requirement = Requirement(raw)
        if canonicalize_name(requirement.name) == "vllm" and requirement.marker is not None and \
                requirement.marker.evaluate({"extra": "vllm"}):
            return requirement.specifier
    return None


def newest_tested(package: str, within=None) -> str | None:
    """The newest version of ``package`` in any tested stack (inside the ``within`` specifier set, if given)."""
    versions = [stack[package] for stack in map(read_stack, STACKS) if package in stack]
    versions = [v for v in versions if within is None or within.contains(v, prereleases=True)]
    return max(versions, key=Version) if versions else None


def untested_findings() -> list[Finding]:
    """Reported packages whose installed version appears in no tested stack: one line each, naming the stack
    nearest to this environment (most reported packages equal) and its version. torch counts by its minor release
    (CUDA and CPU builds of one release differ only in their local label)."""
    stacks = {name: read_stack(name) for name in STACKS}
    installed = {canonicalize_name(found[0]): base_version(found[1]) for found in reported_versions().values() if found}

    def same(package, version, stack):
        pinned = stack.get(package)
        if pinned is None:
            return False
        return _minor(pinned) == _minor(version) if package == "torch" else pinned == version

    def score(name):
        return sum(same(p, v, stacks[name]) for p, v in installed.items())

    nearest = max(STACKS, key=score)
    findings = []
    for package, version in installed.items():
        if any(same(package, version, stack) for stack in stacks.values()):
            continue
        if package not in stacks[nearest]:
            continue  # e.g. deepspeed: in no stack we pin; nothing to name
        findings.append(Finding(f"{package} {version} is in no tested stack; the nearest, {STACKS[nearest]}, has "
                                f"{package}=={stacks[nearest][package]}"))
    return findings


def all_findings() -> list[Finding]:
    """Everything ``attncredit env`` flags, without repeats."""
    seen, out = set(), []
    for finding in requirement_findings() + vllm_findings() + untested_findings():
        if finding.message not in seen:
            seen.add(finding.message)
            out.append(finding)
    return out
