"""Figures for a paper: one fixed order and colour per strategy, points or bars on categorical axes (never lines),
error bars whose meaning the caption states, Dice axes from 0, a colour-blind-safe palette (Okabe-Ito), legends
outside the data. Saved (``figsave``) as 300 dpi PNG, PDF and SVG with real text. Functions return the figure; never
show it."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .figsave import DPI, FORMATS, figure_key, save, save_all  # noqa: F401 (the figures' writer, re-exported)

if TYPE_CHECKING:
    import polars as pl
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# Okabe & Ito (2008): distinguishable with every common colour-vision deficiency.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#999999", "#F0E442")
# zero-shot first; after the prompt tunings the fine-tunes, decoder only, then every weight
BASELINE_FIRST, BASELINE_LAST = ("zero_shot",), ("decoder_finetune", "finetune")
BASELINES = (*BASELINE_FIRST, *BASELINE_LAST)
LABELS = {  # when the registry has no label (a study analysed with an older or newer build)
    "zero_shot": "zero-shot",
    "finetune": "full fine-tune (all weights)",
    "decoder_finetune": "decoder-only fine-tune",
}
SHORT = {"finetune": "finetune (all weights)", "decoder_finetune": "decoder_finetune (decoder only)"}  # axis labels
CURVE_NOTE = (
    "Per epoch of the trial (history.csv). The epoch-log val Dice is on the resized validation masks; the reported "
    "val/test Dice is per image at each mask's original resolution, so the two differ slightly."
)
Y_RANGE_METRICS = ("dice", "iou")  # bounded in [0, 1]: axes start at 0


def strategy_order(names: Sequence[str]) -> list[str]:
    """zero-shot first, the prompt-tuning strategies alphabetically, then decoder-only and full fine-tuning (and any
    other baseline the registry declares): in every plot and table."""

    def key(s: str) -> tuple[int, int, str]:
        if s in BASELINE_FIRST:
            return (0, 0, s)
        if s in BASELINE_LAST:
            return (2, BASELINE_LAST.index(s), s)
        return (2, -1, s) if is_baseline(s) else (1, 0, s)

    return sorted(set(names), key=key)


def _info(name: str) -> object | None:
    from ..strategies import STRATEGIES

    return STRATEGIES.get(name) if name in STRATEGIES else None


def is_baseline(name: str) -> bool:
    """A baseline (zero-shot, a fine-tune), by name or as the registry declares it: never a prompt tuning."""
    return name in BASELINES or bool(getattr(_info(name), "baseline", False))


def label(name: str) -> str:
    """How sentences name a strategy: the registry's label (``full fine-tune (all weights)``), else its name."""
    return getattr(_info(name), "label", "") or LABELS.get(name, name)


def short(name: str) -> str:
    """An axis label that still tells the two fine-tunes apart."""
    return SHORT.get(name, name)


def colour(name: str) -> str:
    """The same colour for a strategy in every figure of every study (registry order), others by hash."""
    from ..strategies import STRATEGIES

    names = strategy_order([*STRATEGIES, *BASELINES])
    if name in names:
        return PALETTE[names.index(name) % len(PALETTE)]
    return PALETTE[sum(map(ord, name)) % len(PALETTE)]


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">")  # a shape per model too: readable in black and white


def _catalog_models() -> list[str]:
    from ..models import MODELS

    return MODELS.in_order()


def model_order(names: Sequence[str]) -> list[str]:
    """Models in catalog order (clipseg, cris, sam3, ...), then any other name alphabetically: in every figure,
    table and sentence."""
    known = _catalog_models()
    return sorted(set(names), key=lambda m: (0, known.index(m), m) if m in known else (1, 0, m))


def model_style(name: str) -> tuple[str, str]:
    """(colour, marker) of a model, the same in every figure of every study (catalog order), others by hash."""
    known = _catalog_models()
    i = known.index(name) if name in known else sum(map(ord, name))
    return PALETTE[i % len(PALETTE)], MARKERS[i % len(MARKERS)]


def groups_colours() -> set[str]:
    """Labels with a fixed colour of their own (strategies); other series take the palette in order."""
    from ..strategies import STRATEGIES

    return {*STRATEGIES, *BASELINES}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.rcsetup import cycler  # what matplotlib.cycler is, named where its types are

    from .pdffonts import install

    install()  # one font subset per process for all PDFs (fontTools subsetting was most of the PDF time)

    plt.rcParams.update(
        {
            "svg.fonttype": "none",  # text stays text in the SVG (editable, searchable)
            "svg.hashsalt": "vlsm-batch",  # element ids from the content: the same figure, the same SVG bytes
            "pdf.fonttype": 42,  # TrueType in the PDF, as journals ask
            "ps.fonttype": 42,
            "axes.prop_cycle": cycler(color=list(PALETTE)),
            "font.size": 9,
            "axes.titlesize": 10,
            "legend.fontsize": 8,
        }
    )
    return plt


def _wrap(title: str, fig: Figure, chars_per_inch: float = 11) -> str:
    return "\n".join(textwrap.wrap(title, width=max(24, int(fig.get_figwidth() * chars_per_inch))))


def _metric_axis(ax: Axes, metric: str, top: float | None = None) -> None:
    """Dice and IoU from 0 (a 0.007 spread must not look like a trend); the top a little above the data."""
    if any(metric.endswith(m) or f"/{m}" in metric for m in Y_RANGE_METRICS):
        ax.set_ylim(0, min(1.0, max(0.1, (top or 1.0) * 1.08)) if top is not None else 1.0)


def _legend_outside(ax: Axes, title: str | None = None) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, title=title, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def caption(fig: Figure, text: str) -> None:
    """What the error bars mean, under the axes (kept inside the saved area by ``bbox_inches='tight'``)."""
    fig.text(0.01, -0.02, _wrap(text, fig, 14), ha="left", va="top", fontsize=7.5, color="#333333")


def score_vs(df: pl.DataFrame, x: str, metrics: list[str], line_by: str = "strategy") -> Figure:
    """Mean ± std over trials of each metric against ``x`` (finished trials), one series per ``line_by``.

    A numeric ``x`` is drawn as lines (an ordered axis); a categorical one as dodged points. The bars are the
    std over the group's trials (several configurations pooled: a spread, not an interval), said in the caption.
    """
    import numpy as np
    import polars as pl

    plt = _plt()
    done = df.filter(pl.col("state") == "done")
    metrics = [m for m in metrics if m in done.columns]
    numeric = done.schema.get(x, pl.String).is_numeric() if x in done.columns else False
    n = max(len(metrics), 1)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n + 1.4, 3.4), squeeze=False)
    groups: list[str | None] = [None]
    if line_by != x and line_by in done.columns:
        groups = [*strategy_order(done[line_by].cast(pl.String).unique().to_list())]
    levels = (
        sorted(done[x].unique().to_list(), key=lambda v: (v is None, v if numeric else str(v)))
        if x in done.columns
        else []
    )
    if x == "strategy":
        levels = strategy_order([str(v) for v in levels])
    for ax, metric in zip(axes[0], metrics):
        top = 0.0
        for i, g in enumerate(groups):
            sub = done if g is None else done.filter(pl.col(line_by).cast(pl.String) == g)
            agg = sub.group_by(x).agg(
                pl.col(metric).cast(pl.Float64).mean().alias("m"),
                pl.col(metric).cast(pl.Float64).std().alias("s"),
            )
            got = {v: (m, s) for v, m, s in agg.iter_rows()}
            ys = [got.get(v, (None, None))[0] for v in levels]
            es = [got.get(v, (None, None))[1] or 0.0 for v in levels]
            ys_a = np.array([np.nan if y is None else y for y in ys], float)
            top = max(top, float(np.nanmax(ys_a + np.array(es))) if np.isfinite(ys_a).any() else 0.0)
            label = None if g is None else str(g)
            c = colour(str(g)) if g is not None else PALETTE[0]
            if numeric:
                ax.errorbar(levels, ys_a, yerr=es, marker="o", capsize=3, label=label, color=c, lw=1.2, ms=4)
            else:
                off = (i - (len(groups) - 1) / 2) * min(0.8 / max(len(groups), 1), 0.2)
                xs = np.arange(len(levels)) + off
                ax.errorbar(xs, ys_a, yerr=es, fmt="o", capsize=3, label=label, color=c, ms=4)
        if not numeric:
            names = [str(v) for v in levels]
            ax.set_xticks(range(len(levels)), names, rotation=25 if max(map(len, names), default=0) > 6 else 0,
                          ha="right" if max(map(len, names), default=0) > 6 else "center")  # fmt: skip
        elif done.schema[x].is_integer():
            from matplotlib.ticker import MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(x)
        ax.set_ylabel(metric)
        ax.set_title(_wrap(f"{metric} by {x}", fig))
        ax.grid(alpha=0.3, axis="y")
        _metric_axis(ax, metric, top)
    if groups != [None]:
        _legend_outside(axes[0][-1], line_by)
    fig.tight_layout()
    caption(fig, "Mean ± std over the finished trials of each group (configurations pooled: a spread, not a CI).")
    return fig


Series = tuple[list, list, list]  # xs, ys, 95 % half-widths (None: no interval)


def line_panels(panels: list[tuple[str, dict[str, Series]]], xlabel: str, ylabel: str, note: str = "") -> Figure:
    """One axis per panel (title, {series label: (xs, ys, half-widths)}): a numeric x (e.g. prompt depth), so the
    points of a series are joined; error bars where an interval exists; one shared legend outside."""
    import numpy as np

    plt = _plt()
    n = max(len(panels), 1)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols + 1.6, 3.0 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    labels = strategy_order([label for _, lines in panels for label in lines])
    handles = {}
    for ax, (title, lines) in zip(axes.flat, panels):
        top = 0.0
        for label in labels:
            if label not in lines:
                continue
            xs, ys, es = lines[label]
            err = [0.0 if e is None else e for e in es]
            ys_a = np.array([np.nan if y is None else y for y in ys], float)
            if np.isfinite(ys_a).any():
                top = max(top, float(np.nanmax(ys_a + np.array(err))))
            h = ax.errorbar(xs, ys_a, yerr=err, marker="o", capsize=3, label=label, color=colour(label), lw=1.2, ms=4)
            handles[label] = h
        ax.set_title(_wrap(title, fig, 30 / cols))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        _metric_axis(ax, ylabel, top)
        xs_all = [x for xs, _, _ in lines.values() for x in xs]
        if xs_all and all(isinstance(x, int) and not isinstance(x, bool) for x in xs_all):
            from matplotlib.ticker import MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # depths 1, 2, 3, not 1.5
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="upper left", bbox_to_anchor=(1.0, 0.98), frameon=False)
    fig.tight_layout()
    if note:
        caption(fig, note)
    return fig


def heatmap(
    rows: list[str], cols: list[str], values: list[list[float | None]], title: str, vmin: float = 0.0,
    vmax: float = 1.0, errors: list[list[float | None]] | None = None,
) -> Figure:  # fmt: skip
    """A fixed colour scale (0 to 1 for Dice), so a 0.003 gap looks like one; the interval printed in the cell."""
    import numpy as np

    plt = _plt()
    a = np.array([[np.nan if v is None else v for v in r] for r in values], dtype=float)
    fig, ax = plt.subplots(figsize=(1.25 * len(cols) + 2.8, 0.42 * len(rows) + 1.7))
    im = ax.imshow(np.ma.masked_invalid(a), cmap="cividis", aspect="auto", vmin=vmin, vmax=vmax)
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    mid = (vmin + vmax) / 2
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            if not np.isfinite(a[i, j]):
                text = "–"
            else:
                e = errors[i][j] if errors else None
                text = f"{a[i, j]:.3f}" + (f"\n±{e:.3f}" if e is not None and np.isfinite(e) else "")
            ax.text(j, i, text, ha="center", va="center", fontsize=6.5, color="white" if a[i, j] < mid else "black")
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_title(_wrap(title, fig), fontsize="medium")
    fig.tight_layout()
    return fig


def grouped_bars(
    groups: list[str], series: dict[str, list[float | None]], ylabel: str, title: str,
    errors: dict[str, list[float | None]] | None = None, note: str = "",
) -> Figure:  # fmt: skip
    """Bars per group and series (categorical axis), error bars where given, legend outside, y from 0."""
    import numpy as np

    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(3.6, 0.55 * len(groups) * max(len(series), 1) + 1.5) + 1.6, 3.3))
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(groups))
    top = 0.0
    for i, (label, vals) in enumerate(series.items()):
        ys = np.array([np.nan if v is None else v for v in vals], float)
        err = None
        if errors and label in errors:
            err = np.array([0.0 if e is None else e for e in errors[label]], float)
        c = colour(label) if label in groups_colours() else PALETTE[i % len(PALETTE)]
        ax.bar(x + (i - (len(series) - 1) / 2) * width, ys, width, label=label, yerr=err, capsize=2, color=c)
        if np.isfinite(ys).any():
            top = max(top, float(np.nanmax(ys + (err if err is not None else 0))))
    ax.set_xticks(x, groups, rotation=20 if max(map(len, groups), default=0) > 6 else 0, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(_wrap(title, fig))
    ax.grid(alpha=0.3, axis="y")
    _metric_axis(ax, ylabel, top)
    _legend_outside(ax)
    fig.tight_layout()
    if note:
        caption(fig, note)
    return fig


def barh(labels: list[str], values: list[float], xlabel: str, title: str) -> Figure:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(labels) + 1.4))
    ax.barh(labels[::-1], values[::-1], color=PALETTE[0])
    ax.set_xlabel(xlabel)
    ax.set_title(_wrap(title, fig, 9))  # wrapped: never cut at the figure's edge
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig


def learning_curves(panels: list[tuple[str, dict[str, tuple[list, list]]]]) -> Figure:
    """Per panel (a trial): train and val loss on the left axis, val Dice on the right (0 to 1), per epoch."""
    plt = _plt()
    n = max(len(panels), 1)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols + 1.2, 2.8 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    styles = {"train/loss": (PALETTE[0], "-"), "val/loss": (PALETTE[1], "--"), "val/dice": (PALETTE[2], "-")}
    for ax, (title, curves) in zip(axes.flat, panels):
        right = ax.twinx()
        for name, (xs, ys) in curves.items():
            c, ls = styles.get(name, (PALETTE[3], ":"))
            (right if name.endswith(("dice", "iou")) else ax).plot(xs, ys, ls, color=c, marker=".", label=name, lw=1.2)
        right.set_ylim(0, 1)
        right.set_ylabel("val Dice")
        ax.set_ylabel("loss")
        ax.set_xlabel("epoch")
        ax.set_title(_wrap(title, fig, 30 / cols))
        ax.grid(alpha=0.3)
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    from matplotlib.lines import Line2D

    proxies = [Line2D([], [], color=c, ls=ls, marker=".") for c, ls in styles.values()]
    fig.legend(proxies, list(styles), loc="upper left", bbox_to_anchor=(1.0, 0.98), frameon=False)
    fig.tight_layout()
    caption(fig, CURVE_NOTE)
    return fig


Points = dict[str, tuple[list[float | None], list[float | None], list[int | None]]]  # model: (ys, half-widths, n)


def model_points(
    panels: list[tuple[str, list[str], Points]], ylabel: str, title: str, note: str = "", max_cols: int = 3
) -> Figure:
    """One axis per panel (title, categories, {model: (means, 95 % half-widths, seeds)}): the categories (strategies)
    on a categorical axis, one dodged point per model with its error bar, a colour and marker per model, one legend
    outside, y from 0 for Dice and IoU."""
    import numpy as np

    plt = _plt()
    n = max(len(panels), 1)
    cols = min(n, max_cols)
    rows = (n + cols - 1) // cols
    widest = max((len(cats) for _, cats, _ in panels), default=1)
    fig, axes = plt.subplots(rows, cols, figsize=((0.55 * widest + 1.6) * cols + 1.6, 3.1 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    names = model_order([m for _, _, pts in panels for m in pts])
    handles: dict[str, object] = {}
    for ax, (sub, cats, pts) in zip(axes.flat, panels):
        top = 0.0
        step = min(0.8 / max(len(names), 1), 0.22)
        for i, m in enumerate(names):
            if m not in pts:
                continue
            ys, es, _ = pts[m]
            ys_a = np.array([np.nan if y is None else y for y in ys], float)
            err = np.array([0.0 if e is None else e for e in es], float)
            xs = np.arange(len(cats)) + (i - (len(names) - 1) / 2) * step
            c, mk = model_style(m)
            h = ax.errorbar(xs, ys_a, yerr=err, fmt=mk, capsize=3, color=c, ms=5, label=m, elinewidth=1)
            handles.setdefault(m, h)
            if np.isfinite(ys_a).any():
                top = max(top, float(np.nanmax(ys_a + err)))
        labels = [short(c) for c in cats]
        wide = max(map(len, labels), default=0) > 6
        ax.set_xticks(range(len(cats)), labels, rotation=25 if wide else 0, ha="right" if wide else "center")
        ax.set_xlim(-0.6, len(cats) - 0.4)
        ax.set_title(_wrap(sub, fig, 30 / cols))
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, axis="y")
        _metric_axis(ax, ylabel, top)
    if handles:
        fig.legend(list(handles.values()), list(handles), title="model", loc="upper left", bbox_to_anchor=(1.0, 0.98),
                   frameon=False)  # fmt: skip
    fig.suptitle(_wrap(title, fig, 14), fontsize="medium")
    fig.tight_layout()
    if note:
        caption(fig, note)
    return fig
