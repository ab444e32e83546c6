"""Grouped summaries of a study frame."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import VlsmBatchError
from ..registry import did_you_mean

if TYPE_CHECKING:
    import polars as pl


def check_columns(df: pl.DataFrame, by: list[str]) -> None:
    missing = [b for b in by if b not in df.columns]
    if missing:
        hints = "; ".join(f"--by {m}: not a column; {did_you_mean(m, df.columns)}" for m in missing)
        raise VlsmBatchError(hints)


def grouped(df: pl.DataFrame, by: list[str], objective: str, test_metric: str = "test/dice") -> pl.DataFrame:
    """Count, mean, std and max of the objective and of the test metric per group, over finished trials."""
    import polars as pl

    check_columns(df, by)
    done = df.filter(pl.col("state") == "done")
    aggs = [pl.len().alias("n")]
    for metric in dict.fromkeys([objective, test_metric]):
        if metric in done.columns:
            col = pl.col(metric).cast(pl.Float64)
            aggs += [
                col.mean().alias(f"{metric} mean"),
                col.std().alias(f"{metric} std"),
                col.max().alias(f"{metric} max"),
            ]
    return done.group_by(by).agg(aggs).sort(by, nulls_last=True)
