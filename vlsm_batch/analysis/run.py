"""``analyze``: collect → select → takeaways → tables, plots, summary.md and report.html under ``analysis/``."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..layout import StudyLayout, atomic_write_text
from .collect import SIG, collect
from .plots import save, score_vs
from .tables import apply_bins, best, check_columns, configs, grouped

REPORTED = ("test/dice", "test/iou")


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
    table: Any  # polars.DataFrame: the --by table
    objective: str
    files: list[Path]
    n_trials: int
    n_done: int
    mode: str = "max"
    by: list[str] = field(default_factory=list)
    states: dict[str, int] = field(default_factory=dict)
    best_table: Any = None
    takeaways: list[Any] = field(default_factory=list)
    failures: Any = None
    by_plot: Path | None = None
    cache: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage


def objective_of(layout: StudyLayout) -> tuple[str, str]:
    with open(layout.trials_manifest, encoding="utf-8") as f:
        first = f.readline()
    if first.strip():
        obj = json.loads(first)["objective"]
        return obj["metric"], obj.get("mode", "max")
    return "val/dice", "max"


def analyze(
    layout: StudyLayout,
    by: list[str],
    bins: dict[str, int] | None = None,
    takeaway_paths: list[Path] | None = None,
    use_cache: bool = True,
    outputs: bool = True,
) -> AnalysisResult:
    import polars as pl

    from . import report
    from . import takeaways as tk

    specs = tk.load(takeaway_paths)  # fail on a bad takeaway file before any work
    clock = [time.perf_counter()]
    timings: dict[str, float] = {}

    def lap(name: str) -> None:
        now = time.perf_counter()
        timings[name] = now - clock[0]
        clock[0] = now

    cache: dict[str, int] = {}
    df = collect(layout, use_cache=use_cache, stats=cache)
    df = df.drop([c for c in (SIG,) if c in df.columns])
    check_columns(df, by)
    lap("collect")
    objective, mode = objective_of(layout)
    binned = apply_bins(df, bins or {})
    table = grouped(binned, by, objective)
    cfg = configs(df, objective, list(REPORTED))
    best_table = best(cfg, mode)
    lap("select")
    ctx = tk.Context(df=df, cfg=cfg, best=best_table, objective=objective, mode=mode)
    results = [tk.compute(ctx, s) for s in specs]
    lap("takeaways")
    states = dict(sorted(df.group_by("state").len().iter_rows())) if df.height else {}
    failures = None
    if "error_class" in df.columns:
        failures = (
            df.filter(pl.col("state") == "failed")
            .group_by(["strategy", "error_class"])
            .agg(pl.len().alias("n"))
            .sort(["strategy", "error_class"], nulls_last=True)
        )
    n_done = df.filter(pl.col("state") == "done").height if df.height else 0
    result = AnalysisResult(table, objective, [], df.height, n_done, mode, by, states, best_table, results, failures)
    result.cache = cache
    result.timings = timings
    if not outputs:
        import matplotlib.pyplot as plt

        for t in results:
            if t.figure is not None:
                plt.close(t.figure)
                t.figure = None
        return result
    out = layout.analysis
    files = _write_frame(df, out / "tables" / "trials")
    files += _write_frame(table, out / "tables" / f"by_{_slug(by)}")
    if cfg.height:
        files += _write_frame(cfg, out / "tables" / "configs")
        files += _write_frame(best_table, out / "tables" / "best_per_cell")
    fig = score_vs(binned, by[0], [objective, "test/dice"])
    written = save(fig, out / "plots" / f"score_by_{_slug(by)}")
    result.by_plot = written[0]
    files += written
    produced: set[str] = set()
    for t in results:
        if t.table is not None:
            files += _write_frame(t.table, out / "tables" / f"takeaway_{t.spec.name}")
            produced.add(f"takeaway_{t.spec.name}")
        if t.figure is not None:
            written = save(t.figure, out / "plots" / f"takeaway_{t.spec.name}")
            t.figure = None
            t.plot = written[0]
            files += written
    for sub in ("tables", "plots"):  # a takeaway that is skipped now must not leave last run's files behind
        for stale in (out / sub).glob("takeaway_*"):
            if stale.stem not in produced and stale.is_file():
                stale.unlink()
    summary = [
        {
            "name": t.spec.name,
            "kind": t.spec.kind,
            "title": t.spec.title,
            "sentence": t.sentence,
            "skipped": t.skipped,
            "facts": t.facts,
            "source": t.spec.source,
        }
        for t in results
    ]
    atomic_write_text(out / "takeaways.json", json.dumps(summary, indent=2, default=str) + "\n")
    atomic_write_text(out / "summary.md", report.summary_markdown(result, layout.root))
    atomic_write_text(out / "report.html", report.report_html(result, layout.root))
    files += [out / "takeaways.json", out / "summary.md", out / "report.html"]
    lap("write")
    result.files = files
    return result
