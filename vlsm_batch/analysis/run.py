"""``analyze``: collect → group → write tables and a plot under the study's ``analysis/`` folder."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..layout import StudyLayout, atomic_write_text
from .collect import collect
from .plots import score_vs
from .tables import check_columns, grouped


def _slug(parts: list[str]) -> str:
    return "_".join(re.sub(r"[^A-Za-z0-9_]+", "-", p).strip("-") for p in parts)


def _write_frame(df: Any, stem: Path) -> list[Path]:
    """CSV and Parquet, each written to a temporary name and renamed."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    csv, parquet = stem.with_suffix(".csv"), stem.with_suffix(".parquet")
    atomic_write_text(csv, df.write_csv())
    tmp = parquet.with_name(f".{parquet.name}.tmp")
    df.write_parquet(tmp)
    tmp.replace(parquet)
    return [csv, parquet]


@dataclass
class AnalysisResult:
    table: Any  # polars.DataFrame
    objective: str
    files: list[Path]
    n_trials: int
    n_done: int


def analyze(layout: StudyLayout, by: list[str]) -> AnalysisResult:
    import polars as pl

    df = collect(layout)
    check_columns(df, by)
    objective = "val/dice"
    manifest_first = layout.trials_manifest.read_text(encoding="utf-8").splitlines()[:1]
    if manifest_first:
        import json

        objective = json.loads(manifest_first[0])["objective"]["metric"]
    table = grouped(df, by, objective)
    out = layout.analysis
    files = _write_frame(df, out / "tables" / "trials")
    files += _write_frame(table, out / "tables" / f"by_{_slug(by)}")
    fig = score_vs(df, by[0], [objective, "test/dice"])
    plot = out / "plots" / f"score_by_{_slug(by)}.png"
    plot.parent.mkdir(parents=True, exist_ok=True)
    tmp = plot.with_name(f".{plot.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(plot)
    files.append(plot)
    n_done = df.filter(pl.col("state") == "done").height
    return AnalysisResult(table, objective, files, df.height, n_done)
