"""The demo's figure is written from a results dict (as in results.json), for one seed or several."""
import pytest

from neumeta_fast.demo import METHODS
from neumeta_fast.plot import consecutive_runs, plot_results


def _results(seeds):
    acc = {64: [0.97, 0.97, 0.97, 0.97], 48: [0.97, 0.97, 0.96, 0.97], 32: [0.97, 0.97, 0.90, 0.97],
           16: [0.95, 0.97, 0.62, 0.95]}
    rows = [{"width": w, "compression": 1 - w / 64, "seen_in_training": w != 16,
             "accuracy": dict(zip(METHODS, v)), "accuracy_std": dict.fromkeys(METHODS, 0.01)} for w, v in acc.items()]
    widths = list(range(1, 65))
    return {"dataset": "digits", "metric": "accuracy", "full_width": 64, "seeds": seeds, "rows": rows,
            "config": {"model": "resnet8_all"}, "training_widths": [w for w in range(8, 65) if w not in (15, 16, 17)],
            "neumeta_all_widths": {"width": widths, "accuracy": [min(0.97, 0.5 + w / 30) for w in widths],
                                   "accuracy_std": [0.01] * 64}}


@pytest.mark.parametrize("seeds", [1, 3])
def test_plot_writes_a_png(tmp_path, seeds):
    pytest.importorskip("matplotlib")
    path = tmp_path / "accuracy_vs_width.png"
    plot_results(_results(seeds), str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10000


def test_consecutive_runs():
    assert consecutive_runs([14, 8, 9, 10, 18]) == [(8, 10), (14, 14), (18, 18)]
    assert consecutive_runs([]) == []
