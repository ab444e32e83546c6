"""Plots: score against a parameter, one line per strategy. Returns the figure; never shows it."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import polars as pl
    from matplotlib.figure import Figure


def score_vs(df: pl.DataFrame, x: str, metrics: list[str], line_by: str = "strategy") -> Figure:
    """Mean ± std of each metric against ``x`` (finished trials), one line per value of ``line_by``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import polars as pl

    done = df.filter(pl.col("state") == "done")
    metrics = [m for m in metrics if m in done.columns]
    fig, axes = plt.subplots(1, max(len(metrics), 1), figsize=(5.5 * max(len(metrics), 1), 4), squeeze=False)
    numeric = done.schema.get(x, pl.String).is_numeric() if x in done.columns else False
    for ax, metric in zip(axes[0], metrics):
        groups = (
            [None] if line_by == x or line_by not in done.columns else sorted(done[line_by].unique().to_list(), key=str)
        )
        for g in groups:
            sub = done if g is None else done.filter(pl.col(line_by) == g)
            agg = (
                sub.group_by(x)
                .agg(
                    pl.col(metric).cast(pl.Float64).mean().alias("m"), pl.col(metric).cast(pl.Float64).std().alias("s")
                )
                .sort(x, nulls_last=True)
            )
            xs = agg[x].to_list()
            xs_plot = xs if numeric else [str(v) for v in xs]
            means = agg["m"].to_list()
            stds = [s if s is not None else 0.0 for s in agg["s"].to_list()]
            label = None if g is None else str(g)
            ax.errorbar(xs_plot, means, yerr=stds, marker="o", capsize=3, label=label)
        if numeric and done.schema[x].is_integer():
            from matplotlib.ticker import MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(x)
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} by {x}")
        ax.grid(alpha=0.3)
        if len(groups) > 1 or groups[0] is not None:
            ax.legend(title=line_by, fontsize="small")
    fig.tight_layout()
    return fig
