"""Tables from the trial frame: grouped summaries, binning, seeds as replicates and the best trial per cell.

Selection rule (everywhere): a configuration (a trial's parameters without its seed) is scored by the mean of
the validation objective over its seeds; the best configuration of a (model, dataset, strategy) cell is chosen on
that score and then *reported* on test (mean, std and 95 % t-interval over seeds). Test metrics never choose.

Intervals are only ever over the seeds of one configuration (a configuration includes every train setting):
a ``--by`` group that pools several configurations reports their spread (std over trials) but no interval.
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING

from ..errors import VlsmBatchError
from ..registry import did_you_mean
from .collect import CONFIG, SIG
from .stats import ci95_halfwidth

if TYPE_CHECKING:
    import polars as pl

CELL = ("model", "dataset", "strategy")
# Columns of the trial frame that are neither parameters nor metrics.
META = {"trial_id", "model", "dataset", "strategy", "seed", "sample_index", CONFIG, "state", "error_class", SIG,
        "dataset_domain", "domain", "towers", "spec_version"}  # fmt: skip


def resolve_columns(df: pl.DataFrame, by: list[str]) -> list[str]:
    """``--by max_epochs`` means ``train.max_epochs`` when the trials have no parameter of that name."""
    from .collect import TRAIN_PREFIX

    return [b if b in df.columns or f"{TRAIN_PREFIX}{b}" not in df.columns else f"{TRAIN_PREFIX}{b}" for b in by]


def check_columns(df: pl.DataFrame, by: list[str]) -> None:
    missing = [b for b in by if b not in df.columns]
    if missing:
        hints = "; ".join(f"--by {m}: not a column; {did_you_mean(m, df.columns)}" for m in missing)
        raise VlsmBatchError(hints)


def metric_columns(df: pl.DataFrame) -> list[str]:
    return [c for c in df.columns if "/" in c]


def param_columns(df: pl.DataFrame) -> list[str]:
    """Hyperparameters: columns that are not axes, bookkeeping or metrics (``val/…``, ``test/…``, ``epochs`` …)."""
    from ..metrics import METRIC_KEYS

    return [c for c in df.columns if c not in META and "/" not in c and c not in METRIC_KEYS]


def done(df: pl.DataFrame) -> pl.DataFrame:
    import polars as pl

    return df.filter(pl.col("state") == "done") if "state" in df.columns else df


def bin_column(df: pl.DataFrame, column: str, n_bins: int) -> pl.DataFrame:
    """Replace a numeric column by ordered interval labels (log-spaced when the values span > 20×)."""
    import numpy as np
    import polars as pl

    check_columns(df, [column])
    if not df.schema[column].is_numeric():
        raise VlsmBatchError(f"--bin {column}: not a numeric column (it holds {df.schema[column]})")
    values = df[column].drop_nulls().cast(pl.Float64).to_numpy()
    if values.size == 0 or n_bins < 1:
        return df
    lo, hi = float(values.min()), float(values.max())
    if lo == hi:
        edges = np.array([lo, hi])
    elif lo > 0 and hi / lo > 20:
        edges = np.geomspace(lo, hi, n_bins + 1)
    else:
        edges = np.linspace(lo, hi, n_bins + 1)
    labels: list[str] = []
    for digits in (3, 6, 12):
        labels = [
            f"[{a:.{digits}g}, {b:.{digits}g}{']' if i == len(edges) - 2 else ')'}"
            for i, (a, b) in enumerate(itertools.pairwise(edges))
        ]
        if len(set(labels)) == len(labels):
            break
    idx = np.clip(np.searchsorted(edges, df[column].cast(pl.Float64).fill_null(math.nan).to_numpy(), "right") - 1,
                  0, len(labels) - 1)  # fmt: skip
    mapped = [None if v is None else labels[i] for v, i in zip(df[column].to_list(), idx)]
    return df.with_columns(pl.Series(column, mapped, dtype=pl.Enum(labels)))


def apply_bins(df: pl.DataFrame, bins: dict[str, int]) -> pl.DataFrame:
    for col, k in bins.items():
        df = bin_column(df, col, k)
    return df


def grouped(df: pl.DataFrame, by: list[str], objective: str, test_metric: str = "test/dice") -> pl.DataFrame:
    """Per group of finished trials: count, configurations, mean, std over trials and max of the objective and the
    test metric; ``ci95`` only where the group is one configuration (an interval over its seeds), else null."""
    import polars as pl

    check_columns(df, by)
    d = done(df)
    aggs = [pl.len().alias("n")]
    if CONFIG in d.columns:
        aggs.append(pl.col(CONFIG).n_unique().alias("n_configs"))
    metrics = [m for m in dict.fromkeys([objective, test_metric]) if m in d.columns]
    for metric in metrics:
        col = pl.col(metric).cast(pl.Float64)
        aggs += [col.mean().alias(f"{metric} mean"), col.std().alias(f"{metric} std"), col.max().alias(f"{metric} max")]
    out = d.group_by(by).agg(aggs).sort(by, nulls_last=True)
    one = out["n_configs"].to_list() if "n_configs" in out.columns else [1] * out.height
    for metric in metrics:
        ci = [
            ci95_halfwidth(s, n) if k == 1 else None
            for s, n, k in zip(out[f"{metric} std"].to_list(), out["n"].to_list(), one)
        ]
        out = out.with_columns(pl.Series(f"{metric} ci95", ci, dtype=pl.Float64))
    counts = ["n", *(["n_configs"] if "n_configs" in out.columns else [])]
    order = [*by, *counts] + [f"{m} {s}" for m in metrics for s in ("mean", "std", "ci95", "max")]
    return out.select(order)


def configs(df: pl.DataFrame, objective: str, report: list[str]) -> pl.DataFrame:
    """One row per configuration (seeds pooled): ``n_seeds``, the objective's mean, and per reported metric its
    mean, std and 95 % half-width over seeds; parameters and derived columns carried along."""
    import polars as pl

    d = done(df)
    keys = [*CELL, CONFIG]
    if d.height == 0 or objective not in d.columns:
        return pl.DataFrame()
    carried = [c for c in (*param_columns(d), "domain", "towers") if c in d.columns]
    aggs = [
        pl.len().alias("n_seeds"),
        pl.col("sample_index").min().alias("sample_index"),
        pl.col("trial_id").sort().str.join(",").alias("trial_ids"),
        pl.col(objective).cast(pl.Float64).mean().alias("objective"),
        *[pl.col(c).first() for c in carried],
        *(
            [pl.col("spec_version").drop_nulls().unique().sort().str.join(",").alias("spec_versions")]
            if "spec_version" in d.columns and d.schema["spec_version"] == pl.String
            else []
        ),
    ]
    metrics = [m for m in dict.fromkeys(report) if m in d.columns]
    for m in metrics:
        col = pl.col(m).cast(pl.Float64)
        aggs += [col.mean().alias(f"{m} mean"), col.std().alias(f"{m} std")]
    out = d.group_by(keys).agg(aggs)
    for m in metrics:
        ci = [ci95_halfwidth(s, n) for s, n in zip(out[f"{m} std"].to_list(), out["n_seeds"].to_list())]
        out = out.with_columns(pl.Series(f"{m} ci95", ci, dtype=pl.Float64))
    return out.sort(keys)


def best(cfg: pl.DataFrame, mode: str, within: list[str] | None = None) -> pl.DataFrame:
    """The best configuration per cell (and per value of ``within``), chosen on the validation objective only.

    Ties go to the configuration with more seeds, then to the earlier sample. The reported columns are whatever
    ``configs`` computed (test means, stds and intervals): they are read, never used to choose.
    """
    import polars as pl

    if cfg.height == 0:
        return cfg
    keys = [*CELL, *(within or [])]
    ranked = cfg.filter(pl.col("objective").is_not_null() & pl.col("objective").is_not_nan()).sort(
        ["objective", "n_seeds", "sample_index"], descending=[mode == "max", True, False], nulls_last=True
    )
    n_cfg = cfg.group_by(keys).agg(pl.len().alias("n_configs"))
    return ranked.group_by(keys, maintain_order=True).first().join(n_cfg, on=keys, how="left").sort(keys)
