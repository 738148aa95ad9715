#!/usr/bin/env bash
# The GPU check, one prepared script: build the synthetic 1B-shaped task, evaluate examples/torch
# on it with the machine's first GPU, and print correctness, the per-token time, the roofline floor
# and ratio, the provenance and each step's time.
#
#   scripts/gpu-check.sh          # on a GPU machine (one H200: within 8 minutes)
#   scripts/gpu-check.sh --cpu    # the same steps on CPU with the small synthetic task (CI runs it)
#
# On a GPU machine without network whose Python holds torch but not the platform's dependencies,
# bring them as wheels made here (scripts/gpu-wheels.sh), then there:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl \
#     && PYTHONPATH=/tmp/site:$PWD/src scripts/gpu-check.sh
#
# Environment:
#   PYTHON              the interpreter with the platform installed (default: python3)
#   EDC_CHECK_DIR       where the task and the runtime go (default: a new temporary folder)
#   EDC_CHECK_RUNTIME   a decoder runtime environment holding torch, to reuse instead of building
#                       one (`edc env build DIR --with torch==2.13.0`)
#   EDC_CHECK_SANDBOX   bwrap or none (default: bwrap where it can start, else none: a GPU
#                       machine under gVisor runs no sandbox; the output says which ran)
# The exit code is 0 when the example passed verification, 1 otherwise.
set -euo pipefail
export LC_ALL=C  # a decimal point in EPOCHREALTIME, whatever the machine's locale
mode=gpu
[[ ${1:-} == --cpu ]] && mode=cpu
here=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
work=${EDC_CHECK_DIR:-$(mktemp -d /tmp/edc-gpu-check.XXXXXX)}
mkdir -p "$work"
export EDC_DATA_DIR="$work/data" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
edc() { "$python" -m edc.cli.main "$@"; }

timings=()
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%7.1f s", b - a }'; }
step() {  # step NAME COMMAND...: run it, note how long it took
  local name=$1 started=$EPOCHREALTIME
  shift
  echo "== $name"
  "$@"
  timings+=("$(printf '%-28s' "$name") $(since "$started")")
}

facts() {
  "$python" - "$mode" <<'PY'
import platform, sys
mode = sys.argv[1]
print(f"python {platform.python_version()} at {sys.executable}; mode {mode}")
try:
    import torch
except ImportError:
    sys.exit("torch is not installed for this interpreter: pip install 'edc[torch]'")
print(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}")
if torch.cuda.is_available():
    print(f"device 0: {torch.cuda.get_device_name(0)}")
elif mode == "gpu":
    sys.exit("no GPU is visible to torch: run with --cpu on a machine without one")
PY
  if [[ $mode == gpu ]] && command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader
  fi
}

build_task() {
  local size=()
  [[ $mode == cpu ]] && size=(--small)
  edc task init --synthetic gpu-check "${size[@]}" --out "$work/task"
  if [[ $mode == gpu ]]; then
    # Runs and verification on the GPU: the reference in float32 on the worker's GPU.
    "$python" - "$work/task/task.toml" <<'PY'
import re, sys
path = sys.argv[1]
text = open(path).read()
text = text.replace('reference = "numpy"', 'reference = "torch"\nreference_device = "gpu"')
text = re.sub(r'(?m)^class = ".*"$', 'class = "gpu"', text, count=1)
open(path, "w").write(text)
PY
  fi
}

choose_sandbox() {
  # bwrap needs a runtime with torch: built here on CPU, named by EDC_CHECK_RUNTIME on a GPU
  # machine (which has no network to build one); otherwise no sandbox, and the output says so.
  sandbox=${EDC_CHECK_SANDBOX:-}
  if [[ -z $sandbox ]]; then
    sandbox=none
    if command -v bwrap >/dev/null && bwrap --ro-bind / / --unshare-all true 2>/dev/null; then
      [[ $mode == cpu || -n ${EDC_CHECK_RUNTIME:-} ]] && sandbox=bwrap
    fi
  fi
  echo "sandbox: $sandbox"
  [[ $sandbox == bwrap ]] && export EDC_SANDBOX=bwrap
  return 0
}

runtime() {
  local env=${EDC_CHECK_RUNTIME:-}
  if [[ -z $env ]]; then
    env="$work/runtime"
    edc env build "$env" --with torch==2.13.0
  fi
  printf '\n[runtime]\nimports = ["numpy", "torch"]\nenv = "%s"\n' "$env" >>"$work/task/task.toml"
  edc task check --task "$work/task"
}

evaluate() {
  local gpus=()
  [[ $mode == gpu ]] && gpus=(env EDC_GPUS=0)
  set +e
  "${gpus[@]}" "$python" -m edc.cli.main eval "$here/examples/torch" --task "$work/task" \
    --sandbox "$sandbox" --json >"$work/result.json"
  status=$?
  set -e
}

report() {
  if [[ ! -s $work/result.json ]]; then
    echo "edc eval wrote no result (exit $status); its output is above"
    return 0
  fi
  "$python" - "$work/result.json" <<'PY'
import json, sys
result = json.load(open(sys.argv[1]))
print(f"status: {result['status']}")
print(f"sandbox: {result.get('sandbox')}")
if result["status"] != "completed":
    print(f"failure: {result.get('reason')}: {result.get('message')}")
    print(result.get("logs", "")[-3000:])
    sys.exit(0)
m = result["metrics"]
print(f"correct: {m['correct']} ({m['tokens_checked']} tokens checked, max gap {m['max_gap']:.4g}, "
      f"exact match {m['exact_match_rate']:.3f})")
print(f"TPOT p50: {m['latency']['tpot_ms']['p50']:.3f} ms; "
      f"E2E per token p50: {m['latency']['e2e_per_token_ms']['p50']:.3f} ms; "
      f"throughput {m['throughput']['output_tokens_per_s']:.1f} tokens/s")
print(f"roofline: floor {m['tpot_floor_ms']:.4g} ms per token at {m['bandwidth_gb_per_s']:.1f} GB/s; "
      f"TPOT / floor = {m['roofline']:.2f}" if m["roofline"] else "(no floor)")
PY
}

started=$EPOCHREALTIME
step "facts" facts
step "build the task" build_task
step "choose the sandbox" choose_sandbox
if [[ $sandbox == bwrap ]]; then
  step "runtime with torch" runtime
fi
step "edc eval examples/torch" evaluate
step "report" report
echo "== steps"
printf '%s\n' "${timings[@]}"
echo "$(printf '%-28s' total) $(since "$started")"
exit $((status == 0 ? 0 : 1))
