"""The benchmark scripts cannot rot unseen: each one's options parse, its --dry-run takes every step on
the CPU on tiny shapes, and every module or class attribute its source names exists (the GPU checks
run rarely, so a renamed helper would otherwise only show on the next GPU run)."""
import ast
import importlib
import os
import types
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = ["bench_inr_forward", "bench_orientation", "bench_smooth", "bench_trainer", "bench_tsp", "compile_check",
           "device_check", "device_check_cuda", "bench_grouped_mm"]


@pytest.fixture
def script(request, monkeypatch):
    """The benchmark module; the process state the scripts change is restored afterwards."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # restores sys.path, which the scripts extend, too
    monkeypatch.setenv("NEUMETA_CUDA_JIT", "0")  # device_check_cuda defaults it to 1: no extension build here
    monkeypatch.delenv("OUT", raising=False)
    threads, tf32 = torch.get_num_threads(), torch.backends.cuda.matmul.allow_tf32
    try:
        yield importlib.import_module(request.param)
    finally:
        torch.set_num_threads(threads)
        torch.backends.cuda.matmul.allow_tf32 = tf32


HELPERS = ["timing"]  # imported by the scripts, not run


def test_every_script_is_covered():
    assert sorted(path.stem for path in BENCHMARKS.glob("*.py")) == sorted(SCRIPTS + HELPERS)


@pytest.mark.parametrize("script", SCRIPTS, indirect=True)
def test_help(script, capsys):
    with pytest.raises(SystemExit) as stop:
        script.main(["--help"])
    assert stop.value.code == 0
    assert "--dry-run" in capsys.readouterr().out


@pytest.mark.parametrize("script", SCRIPTS, indirect=True)
def test_every_module_attribute_named_exists(script):
    """`module.name` and `Class.name` chains in the source, resolved: catches a renamed library function in
    code the dry runs cannot reach (the CUDA-only lines)."""
    tree = ast.parse(Path(script.__file__).read_text())
    rebound = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)}
    rebound |= {arg.arg for node in ast.walk(tree) if isinstance(node, ast.arguments)
                for arg in node.posonlyargs + node.args + node.kwonlyargs}
    inner = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    checked = 0
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or id(node) in inner:  # whole chains only
            continue
        chain, base = [], node
        while isinstance(base, ast.Attribute):
            chain.insert(0, base.attr)
            base = base.value
        if not isinstance(base, ast.Name) or base.id in rebound or base.id not in vars(script):
            continue
        owner, path = vars(script)[base.id], base.id
        for attr in chain:
            if not isinstance(owner, (types.ModuleType, type)) or owner is torch.ops:
                break  # an instance's attributes, and ops an extension registers, are not known statically
            if isinstance(owner, types.ModuleType) and not hasattr(owner, attr):
                try:
                    importlib.import_module(f"{owner.__name__}.{attr}")  # a submodule not imported yet
                except ImportError:
                    pass
            path += f".{attr}"
            assert hasattr(owner, attr), f"{Path(script.__file__).name} line {node.lineno}: {path} does not exist"
            owner, checked = getattr(owner, attr), checked + 1
    assert checked > 0


def _stub_optional_solvers(module, monkeypatch):
    """bench_tsp's fast-tsp and elkai columns, run with stand-ins that return the identity tour."""
    fast_tsp = types.SimpleNamespace(find_tour=lambda matrix, budget: list(range(len(matrix))))

    def solve_problem(params, problem):
        assert "PROBLEM_FILE = :stdin:" in params and "EDGE_WEIGHT_SECTION" in problem
        return list(range(1, int(problem.split("DIMENSION : ")[1].split()[0]) + 1))

    monkeypatch.setattr(module, "fast_tsp", fast_tsp)
    monkeypatch.setattr(module, "_elkai", types.SimpleNamespace(solve_problem=solve_problem))


DRY_RUN_SHOWS = {
    "bench_inr_forward": ["| tiny | | reference implementation |", "| tiny | | peak extra memory |"],
    "bench_orientation": ["| heavy_first |", "| light_first |", "| solver |"],
    "bench_smooth": ["smooth() end to end", "path cost"],
    "bench_trainer": ["| fast (generate, backend auto) |", "| reference (reference_generate) |"],
    "bench_tsp": ["| struct | 8 |", "| weights | 64 |"],
    "compile_check": ["(256, 198, 'bf16', 0, False, 1): 8 warps"],
    "device_check": ["correctness: all checks passed"],
    "device_check_cuda": ["| tiny | K=3 Philox reference-mode noise vs torch given that noise |",
                          "| tiny | 15 coords, INR 16/2/2 | triton float16 |"],
    "bench_grouped_mm": ["| training op backward | tf32 |", "| layer weight gradients (+ bias, scalar) | bf16 |"],
}


@pytest.mark.parametrize("script", SCRIPTS, indirect=True)
def test_dry_run(script, capsys, monkeypatch):
    if script.__name__.startswith("device_check") and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("the device checks' dry run needs the Triton interpreter (on a GPU, run the checks themselves)")
    if script.__name__ == "bench_tsp":
        _stub_optional_solvers(script, monkeypatch)
    assert script.main(["--dry-run"]) in (None, 0)
    out = capsys.readouterr().out
    for line in DRY_RUN_SHOWS[script.__name__]:
        assert line in out
    assert "FAIL" not in out and "not importable" not in out  # bench_tsp: the stand-ins' columns ran too


@pytest.mark.parametrize("script", ["bench_inr_forward"], indirect=True)
def test_inr_forward_providers_and_csv(script, capsys, tmp_path):
    """--provider reference times the reference alone; --csv writes the printed table."""
    path = tmp_path / "table.csv"
    script.main(["--dry-run", "--provider", "reference", "--csv", str(path)])
    out = capsys.readouterr().out
    assert "| tiny | | reference implementation |" in out and "GEMM floor" not in out
    lines = path.read_text().splitlines()
    assert lines[0] == "case,size,what,median,ratio" and any(",reference implementation," in line for line in lines)
