#!/usr/bin/env bash
# The one GPU check: build, check every backend against the torch path at real sizes, time them.
#   benchmarks/device_check.sh              on a GPU machine (about 4 minutes on an H200, build included)
#   benchmarks/device_check.sh --cpu-smoke  no GPU: sm_90 build check + the triton half, tiny, in the interpreter
# Sets up through `./run.sh setup`, reusing the machine's preinstalled torch and triton (no network). Each
# step has its own time limit; a failing step does not stop the others. Tables (device_check.md,
# device_check_cuda.md), build.log and steps.log go to $OUT (default ./out/device_check).
# STEPS="gpu_tests triton" runs only the steps named (gpu_tests triton cuda torch trainer trainer_tf32).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/device_check}
mkdir -p "$OUT"
export OUT PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}

if [ "${1:-}" = "--cpu-smoke" ]; then
  env -u TRITON_INTERPRET "$PY" benchmarks/compile_check.py || exit 1
  TRITON_INTERPRET=1 exec "$PY" benchmarks/device_check.py --cpu-smoke
fi

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
start=$(date +%s)
NEUMETA_FORCE_CUDA=1 MAX_JOBS=16 timeout 300 ./run.sh setup >"$OUT/build.log" 2>&1 \
  || { echo "build failed: see build.log"; tail -30 "$OUT/build.log"; }
PY=.venv/bin/python
echo "build: $(( $(date +%s) - start )) s; backends: $("$PY" -c 'import neumeta_fast; print(neumeta_fast.backends())')"

status=0
LOG="$OUT/steps.log"  # every step's whole output, one after another (the device tool returns few files)
: >"$LOG"
step() {  # step NAME LIMIT_S COMMAND...: run with a limit, append its output to steps.log, remember failures
  local name=$1 limit=$2
  shift 2
  case " ${STEPS:-$name} " in *" $name "*) ;; *) return ;; esac  # STEPS="a b": run only those steps
  local t0=$(date +%s) log
  log=$(mktemp)
  timeout "$limit" "$@" >"$log" 2>&1
  local rc=$?
  echo "step $name: rc=$rc in $(( $(date +%s) - t0 )) s"
  tail -25 "$log"
  { echo "===== step $name: rc=$rc"; cat "$log"; } >>"$LOG"
  rm -f "$log"
  [ "$rc" -eq 0 ] || status=1
}
step gpu_tests 120 "$PY" -m pytest -q tests/test_generate.py tests/test_cuda_backend.py
step triton 150 "$PY" benchmarks/device_check.py
step cuda 120 "$PY" benchmarks/device_check_cuda.py
step torch 60 "$PY" benchmarks/bench_inr_forward.py --device cuda --skip-reference --repeat 10 --csv "$OUT/bench_inr_forward.csv"
step trainer 120 "$PY" benchmarks/bench_trainer.py --paper --device cuda --steps 5
step trainer_tf32 120 "$PY" benchmarks/bench_trainer.py --paper --device cuda --steps 5 --tf32
exit "$status"
