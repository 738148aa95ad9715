#!/usr/bin/env bash
# Wheels of the platform's dependencies for a GPU machine without network (Python 3.12, x86-64,
# torch and transformers already there), so scripts/gpu-check.sh can run on it:
#
#   scripts/gpu-wheels.sh [DIR]          # here, with pip access: writes DIR (default .whl)
#   # there, in the repository's root, with DIR copied along:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl \
#     && PYTHONPATH=/tmp/site:$PWD/src scripts/gpu-check.sh
#
# The dependency closure is resolved for that interpreter and platform; wheels of what such a
# machine already holds (numpy, torch, the scientific stack) are left out, to keep the copy small.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$here/.whl}
python=${PYTHON:-python3}
# Held by the GPU machine's image (its package list); theirs are used.
present='^(numpy|rich|typer|click|httpx|httpcore|h11|anyio|idna|certifi|sniffio|jinja2|markupsafe|safetensors|psutil|prometheus_client|pygments|markdown_it_py|mdurl|shellingham|typing_extensions|requests|urllib3|charset_normalizer|packaging|pyyaml|filelock|tqdm)-'
requirements=$("$python" - "$here/pyproject.toml" <<'PY'
import sys, tomllib
print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]))
PY
)
mkdir -p "$out"
platforms=()
for n in 17 24 27 28 31 34; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
# shellcheck disable=SC2086
"$python" -m pip download --quiet --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" --platform manylinux2014_x86_64 --platform any -d "$out" $requirements
removed=0
for wheel in "$out"/*.whl; do
  name=$(basename "$wheel" | tr 'A-Z' 'a-z')
  if [[ $name =~ $present ]]; then
    rm "$wheel"
    removed=$((removed + 1))
  fi
done
echo "$(find "$out" -name '*.whl' | wc -l) wheels in $out ($(du -sh "$out" | cut -f1)); left out $removed the GPU machine holds"
