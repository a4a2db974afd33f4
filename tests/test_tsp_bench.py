"""benchmarks/bench_tsp.py's held-out comparison (--heldout), run tiny with a stand-in for fast-tsp."""
import importlib
import types
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_heldout_dry_run(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    bench = importlib.import_module("bench_tsp")
    monkeypatch.setattr(bench, "fast_tsp", types.SimpleNamespace(find_tour=lambda m, budget: list(range(len(m)))))
    bench.main(["--heldout", "--dry-run"])
    out = capsys.readouterr().out
    assert "| n | limit | ours mean cost | fast-tsp mean cost |" in out
    row = next(line for line in out.splitlines() if line.startswith("| 64 | 0.01 s |"))
    assert "1 of 1" in row  # ours is no longer than the stand-in's identity order
    assert "load average before" in out
