"""neumeta_fast._C (all of csrc/cpu) built with AddressSanitizer and UndefinedBehaviorSanitizer, and a
seeded fuzz of the library running on that build.

An ASan-built extension loads only into a process whose first library is the ASan runtime, so the
fuzz runs in a child python started with LD_PRELOAD=libasan. The child builds the extension with
torch's ninja build into build/sanitize (cached: later runs recompile only changed sources), installs
it as neumeta_fast._C before neumeta_fast is imported, so the library's own Python code drives it, and
runs every property of tests/_fuzz.py and the tests of the solver's pieces (tests/test_tsp_parts.py),
seeded (the same seed replays the same examples).

Run as a script, this file is that child: python tests/_sanitize.py EXAMPLES SEED
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD_DIR = ROOT / "build" / "sanitize"
FLAGS = ["-O1", "-g1", "-fno-omit-frame-pointer", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
EXAMPLE_SECONDS = 120  # an example still running after this hangs: the child dumps its stack and fails


def compiler() -> str | None:
    """The C++ compiler torch's build uses (CXX, else c++)."""
    return shutil.which(os.environ.get("CXX", "c++"))


def preload() -> str | None:
    """LD_PRELOAD for the child: the compiler's ASan runtime, then its libstdc++ (ASan must see the
    C++ runtime at start-up to intercept exceptions, and python does not link one); None where the
    compiler has no ASan or UBSan runtime."""
    cxx = compiler()
    if cxx is None:
        return None
    found = {}
    for lib in ("libasan.so", "libubsan.so", "libstdc++.so"):
        out = subprocess.run([cxx, f"-print-file-name={lib}"], capture_output=True, text=True).stdout.strip()
        if not os.path.isabs(out) or not os.path.exists(out):
            return None  # the compiler prints the bare name when it has no such library
        found[lib] = out
    return f"{found['libasan.so']} {found['libstdc++.so']}"


def unavailable() -> str | None:
    """Why the sanitizer fuzz cannot run here, or None."""
    if compiler() is None:
        return f"no C++ compiler ({os.environ.get('CXX', 'c++')}) on PATH for the sanitizer build"
    if preload() is None:
        return f"{compiler()} has no ASan/UBSan runtime (libasan.so, libubsan.so, libstdc++.so)"
    return None


def fuzz(examples: int, seed: int, timeout: float) -> subprocess.CompletedProcess:
    """Runs the child: builds (or reuses) the sanitized extension, then `examples` examples of each
    property. On success its output is the examples run per property (NAME=COUNT ...), then a
    line "clean: ..."."""
    env = dict(os.environ, LD_PRELOAD=preload(), ASAN_OPTIONS="detect_leaks=0:abort_on_error=1",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    return subprocess.run([sys.executable, __file__, str(examples), str(seed)], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def _build():
    """The sanitized extension module (torch's JIT build; ninja recompiles only what changed)."""
    from torch.utils.cpp_extension import load

    os.environ.pop("LD_PRELOAD", None)  # the compiler itself runs uninstrumented
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    return load(name="neumeta_sanitized", sources=[str(p) for p in sorted((ROOT / "csrc" / "cpu").glob("*.cpp"))],
                extra_cflags=FLAGS, extra_ldflags=FLAGS[-2:], build_directory=str(BUILD_DIR))


def _main(examples: int, seed: int) -> None:
    import collections
    import faulthandler
    import functools

    import hypothesis

    sys.modules["neumeta_fast._C"] = _build()
    sys.path.insert(0, str(ROOT / "tests"))
    import _fuzz

    counts = collections.Counter()

    def guard(check):
        @functools.wraps(check)
        def guarded(*args, **kwargs):
            counts[check.__name__] += 1
            faulthandler.dump_traceback_later(EXAMPLE_SECONDS, exit=True)
            try:
                check(*args, **kwargs)
            finally:
                faulthandler.cancel_dump_traceback_later()
        return guarded

    for name, prop in _fuzz.properties(examples, guard).items():
        before = sum(counts.values())
        hypothesis.seed(seed)(prop)()
        print(f"{name}={sum(counts.values()) - before}", end=" ", flush=True)
    # The solver's pieces through their test-only bindings (tests/test_tsp_parts.py), seeded the same way.
    os.environ["NEUMETA_TSP_PARTS_EXAMPLES"] = str(examples)
    import test_tsp_parts

    for name in [n for n in dir(test_tsp_parts) if n.startswith("test_")]:
        test = getattr(test_tsp_parts, name)
        (hypothesis.seed(seed)(test) if hasattr(test, "hypothesis") else test)()
        print(name, end=" ", flush=True)
    print(f"\nclean: {examples} examples asked per property, seed {seed}")


if __name__ == "__main__":
    _main(int(sys.argv[1]), int(sys.argv[2]))
