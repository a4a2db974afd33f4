#!/usr/bin/env bash
# Issue 3's device check of the triton backend: build, check against torch at real sizes, time.
#   benchmarks/device_check.sh              on a GPU machine (well under 10 minutes on an H100)
#   benchmarks/device_check.sh --cpu-smoke  sm_90 build check + the same code path, tiny, in the interpreter
# Uses the machine's preinstalled torch and triton (no network); PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import neumeta_fast.kernels.inr_forward" >/dev/null 2>&1; then
  VENV=${TMPDIR:-/tmp}/neumeta-device-venv
  [ -x "$VENV/bin/python" ] || "$PY" -m venv --system-site-packages "$VENV"
  PY="$VENV/bin/python"
  # The CUDA C++ extension is not what this script checks: skip its (long) build.
  NEUMETA_SKIP_CUDA=1 "$PY" -m pip install -q --no-build-isolation --no-deps -e .
fi
if [ "${1:-}" = "--cpu-smoke" ]; then
  # No GPU: build the GPU code for sm_90 anyway (triton's bundled ptxas), then run the interpreter half.
  env -u TRITON_INTERPRET "$PY" benchmarks/compile_check.py
  export TRITON_INTERPRET=1
fi
exec "$PY" benchmarks/device_check.py "$@"
