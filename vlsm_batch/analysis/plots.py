"""Plots: score against a parameter, one line per strategy. Returns the figure; never shows it."""

from __future__ import annotations

from pathlib import Path
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
        if not numeric and max((len(str(v)) for v in done[x].unique().to_list()), default=0) > 6:
            for label in ax.get_xticklabels():
                label.set_rotation(25)
                label.set_horizontalalignment("right")
        ax.set_xlabel(x)
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} by {x}")
        ax.grid(alpha=0.3)
        if len(groups) > 1 or groups[0] is not None:
            ax.legend(title=line_by, fontsize="small")
    fig.tight_layout()
    return fig


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Figure, stem: Path) -> list[Path]:
    """PNG and SVG next to each other, each written to a temporary name and renamed; closes the figure."""
    plt = _plt()
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for ext, kw in ((".png", {"dpi": 110}), (".svg", {})):
        path = stem.with_suffix(ext)
        tmp = path.with_name(f".{path.name}.tmp{ext}")
        fig.savefig(tmp, **kw)
        tmp.replace(path)
        out.append(path)
    plt.close(fig)
    return out


def line_panels(panels: list[tuple[str, dict[str, tuple[list, list]]]], xlabel: str, ylabel: str) -> Figure:
    """One axis per panel (title, {line label: (xs, ys)})."""
    plt = _plt()
    n = max(len(panels), 1)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    labels = list(dict.fromkeys(label for _, lines in panels for label in lines))
    cycle = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    colour = {label: cycle[i % len(cycle)] for i, label in enumerate(labels)}  # same colour in every panel
    for ax, (title, lines) in zip(axes.flat, panels):
        for label, (xs, ys) in lines.items():
            ax.plot(xs, ys, marker="o", label=label, color=colour[label])
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        xs_all = [x for xs, _ in lines.values() for x in xs]
        if xs_all and all(isinstance(x, int) and not isinstance(x, bool) for x in xs_all):
            from matplotlib.ticker import MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # depths 1, 2, 3, not 1.5
        if lines:
            ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def heatmap(rows: list[str], cols: list[str], values: list[list[float | None]], title: str) -> Figure:
    import numpy as np

    plt = _plt()
    a = np.array([[np.nan if v is None else v for v in r] for r in values], dtype=float)
    fig, ax = plt.subplots(figsize=(1.3 * len(cols) + 2.5, 0.45 * len(rows) + 1.6))
    im = ax.imshow(np.ma.masked_invalid(a), cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    finite = a[np.isfinite(a)]
    mid = float(finite.mean()) if finite.size else 0.0
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            text = "–" if not np.isfinite(a[i, j]) else f"{a[i, j]:.3f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if a[i, j] < mid else "black")
    fig.colorbar(im, ax=ax, shrink=0.8)
    import textwrap

    # wrap long titles to the figure's width instead of letting them run off both sides
    ax.set_title("\n".join(textwrap.wrap(title, width=max(24, int(fig.get_figwidth() * 9)))), fontsize="medium")
    fig.tight_layout()
    return fig


def grouped_bars(groups: list[str], series: dict[str, list[float | None]], ylabel: str, title: str) -> Figure:
    import numpy as np

    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(4.5, 0.9 * len(groups) * max(len(series), 1) * 0.6 + 2), 3.8))
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(groups))
    for i, (label, vals) in enumerate(series.items()):
        ys = [np.nan if v is None else v for v in vals]
        ax.bar(x + (i - (len(series) - 1) / 2) * width, ys, width, label=label)
    ax.set_xticks(x, groups, rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    if series:
        ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def barh(labels: list[str], values: list[float], xlabel: str, title: str) -> Figure:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(labels) + 1.4))
    ax.barh(labels[::-1], values[::-1], color="tab:blue")
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig
