"""Accuracy (or MSE) against width, one line per method with error bars (matplotlib, Agg)."""
from __future__ import annotations

from .atomic import atomic_open


def plot_results(results: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    metric = results["metric"]
    rows = sorted(results["rows"], key=lambda r: r["width"])
    widths = [r["width"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for method in rows[0][metric]:
        ax.errorbar(widths, [r[metric][method] for r in rows], yerr=[r[metric + "_std"][method] for r in rows],
                    marker="o", capsize=3, label=method)
    unseen = [r["width"] for r in rows if not r["seen_in_training"]]
    for w in unseen:
        ax.axvline(w, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("hidden width (dotted: never trained)")
    ax.set_ylabel(metric)
    ax.set_title(f"{results['dataset']}: {metric} vs width ({results['seeds']} seed(s))")
    ax.set_xticks(widths)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        with atomic_open(path, "wb") as fh:
            fig.savefig(fh, format="png")
    finally:
        plt.close(fig)
