"""The demo's figure (matplotlib, Agg): the metric against width, and each method's gap to the
individually trained models.

Left: NeuMeta as a curve over every width of the family (one INR generates them all), the
other methods at the table's widths, the widths the INR trained on shaded, the never-trained
table widths marked. Right: the difference to individually trained models at the table's widths,
scaled to NeuMeta and the ablation; a method far below (L1 pruning) is drawn at the edge with its
value written beside it.
"""
from __future__ import annotations

from .atomic import atomic_open

# The plot's names for the methods (results.json keys them by their short names).
LABELS = {"neumeta": "NeuMeta (one INR, any width)", "individual": "individually trained (one model per width)",
          "pruned_l1": "L1-pruned full model (BN recalibrated)", "no_smoothing": "NeuMeta without smoothing"}
COLOURS = {"neumeta": "C0", "individual": "C1", "pruned_l1": "C2", "no_smoothing": "C3"}


def plot_results(results: dict, path: str) -> None:
    """Write the figure for a demo's `results` (as in results.json) to `path` as a PNG."""
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    metric = results["metric"]
    scale, unit = (100.0, " (%)") if metric == "accuracy" else (1.0, "")
    rows = sorted(results["rows"], key=lambda r: r["width"])
    widths = [r["width"] for r in rows]
    spread = results["seeds"] > 1
    fig, (ax, gap) = plt.subplots(1, 2, figsize=(12, 6), dpi=120, gridspec_kw={"width_ratios": [3, 2]})

    for i, (lo, hi) in enumerate(consecutive_runs(results["training_widths"])):
        ax.axvspan(lo - 0.5, hi + 0.5, color="0.9", zorder=0, label=None if i else "widths the INR trained on")
    dense = results["neumeta_all_widths"]
    mean = [scale * v for v in dense[metric]]
    ax.plot(dense["width"], mean, color=COLOURS["neumeta"], linewidth=1.5, label=LABELS["neumeta"] + ", every width")
    if spread:
        std = [scale * v for v in dense[metric + "_std"]]
        ax.fill_between(dense["width"], [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                        color=COLOURS["neumeta"], alpha=0.2, linewidth=0)
    for method, label in LABELS.items():
        ax.errorbar(widths, [scale * r[metric][method] for r in rows], capsize=3, linestyle="none", marker="o",
                    yerr=[scale * r[metric + "_std"][method] for r in rows] if spread else None,
                    color=COLOURS[method], label=label if method != "neumeta" else None)
    for r in rows:
        if not r["seen_in_training"]:
            ax.axvline(r["width"], color="k", linestyle=":", linewidth=1)
            ax.annotate("never trained", (r["width"], 0.02), xycoords=("data", "axes fraction"), rotation=90,
                        ha="right", va="bottom", fontsize=8)
    ax.set_xlabel("hidden width (channels)")
    ax.set_ylabel(metric + unit)
    ax.set_xticks(widths)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)

    _gap_panel(gap, rows, metric, scale, unit, spread)
    seeds = results["seeds"]
    caption = ((f"Error bars and the shaded band: ± 1 standard deviation over {seeds} seeds. " if spread
                else "One seed: no error bars. ") + "Dotted line: a width the INR never trained on.")
    fig.suptitle(f"{results['dataset']}, {results['config']['model']}: {metric} against width "
                 f"(full width {results['full_width']})")
    fig.text(0.01, 0.01, caption, fontsize=8)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    try:
        with atomic_open(path, "wb") as fh:
            fig.savefig(fh, format="png")
    finally:
        plt.close(fig)


def _gap_panel(ax, rows, metric, scale, unit, spread) -> None:
    """Each method minus individually trained, at the table's widths; y-range set by the close methods."""
    widths = [r["width"] for r in rows]
    gaps = {m: [scale * (r[metric][m] - r[metric]["individual"]) for r in rows]
            for m in ("neumeta", "no_smoothing", "pruned_l1")}
    close = [0.0] + gaps["neumeta"] + gaps["no_smoothing"]
    margin = max(1.0, 0.15 * (max(close) - min(close))) if scale == 100 else 0.15 * (max(close) - min(close) or 1)
    low, high = min(close) - margin, max(close) + margin
    ax.axhline(0, color=COLOURS["individual"], linewidth=1.5, label=LABELS["individual"])
    for method, values in gaps.items():
        err = [scale * r[metric + "_std"][method] for r in rows] if spread else None
        shown = [min(max(v, low), high) for v in values]
        ax.errorbar(widths, shown, yerr=err, marker="o", capsize=3, color=COLOURS[method], label=LABELS[method])
        for w, v, s in zip(widths, values, shown):
            if v != s:  # off scale: drawn at the edge, its value written
                ax.annotate(f"{v:+.1f} (off scale)", (w, s), textcoords="offset points",
                            xytext=(6, 6 if s == low else -12), fontsize=8, color=COLOURS[method])
    for r in rows:
        if not r["seen_in_training"]:
            ax.axvline(r["width"], color="k", linestyle=":", linewidth=1)
    ax.set_ylim(low, high)
    ax.set_xticks(widths)
    ax.set_xlabel("hidden width (channels)")
    ax.set_ylabel(f"difference to individually trained{' (points)' if scale == 100 else unit}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1)


def consecutive_runs(widths: list[int]) -> list[tuple[int, int]]:
    """Consecutive runs of sorted widths: [8, 9, 10, 14] -> [(8, 10), (14, 14)]."""
    runs = []
    for w in sorted(widths):
        if runs and w == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], w)
        else:
            runs.append((w, w))
    return runs
