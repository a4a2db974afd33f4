#!/usr/bin/env bash
# One entry point for users and CI: sets up .venv/ (once), then runs the demo or the tests.
#   ./run.sh demo [demo options]   the main job: python -m neumeta_fast demo
#   ./run.sh test [pytest options] the test suite
#   ./run.sh setup                 set up .venv/ only (with the test tools)
# Any other first word is passed to `python -m neumeta_fast`.
set -euo pipefail
cd "$(dirname "$0")"
VENV=.venv
PY="$VENV/bin/python"

if [ ! -x "$PY" ]; then
  # Reuse a torch that is already installed (GPU machines ship one); otherwise start clean.
  if python3 -c "import torch" >/dev/null 2>&1; then
    python3 -m venv --system-site-packages "$VENV"
    # When python3 is itself a venv (as on GPU images), the new venv's "system" packages are the base
    # interpreter's, not the ones beside torch: list python3's own site-packages in a .pth file.
    python3 -c 'import site; print("\n".join(site.getsitepackages()))' \
      >"$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/_outer_site_packages.pth"
  else
    python3 -m venv "$VENV"
  fi
fi

if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "run.sh: installing torch==2.13.0 (no torch importable)"
  "$PY" -m pip install -q "torch==2.13.0"
fi

cmd="${1:-test}"
shift || true
# The tests need the `test` extra (pytest, triton for its CPU interpreter, ...); the demo and the other
# commands only the `demo` one, so a CPU machine that never runs the tests never downloads triton.
extra=demo
case "$cmd" in test|setup) extra=test ;; esac

# Reinstall the project only when its build inputs changed or it lacks the extra asked for
# (the `test` extra includes the `demo` one). The stamp holds "<digest> <extra>".
stamp="$VENV/.neumeta-install-stamp"
digest=$(cat pyproject.toml setup.py $(find csrc kernels neumeta_fast -name '*.cpp' -o -name '*.cu' -o -name '*.h' -o -name '*.cuh' | sort) 2>/dev/null | sha256sum | cut -d' ' -f1)
installed=$(cat "$stamp" 2>/dev/null || true)
if [ "$installed" != "$digest test" ] && [ "$installed" != "$digest $extra" ]; then
  echo "run.sh: installing neumeta_fast[$extra] into $VENV"
  # No build isolation, so the extension is built against the torch above: pyproject.toml's build
  # requirements other than torch come first.
  "$PY" -m pip install -q "setuptools>=77" ninja
  "$PY" -m pip install -q --no-build-isolation -e ".[$extra]"
  echo "$digest $extra" >"$stamp"
fi

case "$cmd" in
  setup)
    ;;  # set-up only (done above): benchmarks/device_check.sh uses it
  test)
    # pytest exits 5 when it collects nothing: that is a failure here, not a pass.
    set +e
    "$PY" -m pytest -q "$@"
    rc=$?
    set -e
    if [ "$rc" -eq 5 ]; then echo "run.sh: pytest collected no tests" >&2; exit 1; fi
    exit "$rc"
    ;;
  *)
    exec "$PY" -m neumeta_fast "$cmd" "$@"
    ;;
esac
