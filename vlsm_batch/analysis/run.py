"""``analyze``: collect → select → takeaways → tables, plots, summary.md and report.html under ``analysis/``."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from ..layout import StudyLayout, atomic_path, atomic_write_text
from .collect import SIG, collect
from .plots import save_all, score_vs
from .tables import apply_bins, best, check_columns, configs, grouped, resolve_columns

REPORTED = ("test/dice", "test/iou", "val/dice", "val/iou")


def _slug(parts: list[str]) -> str:
    return "_".join(re.sub(r"[^A-Za-z0-9_]+", "-", p).strip("-") for p in parts)


def _write_frame(df: Any, stem: Path) -> list[Path]:
    """CSV and Parquet, each written to a temporary name and renamed."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    csv, parquet = stem.with_suffix(".csv"), stem.with_suffix(".parquet")
    atomic_write_text(csv, df.write_csv())
    with atomic_path(parquet, durable=False) as tmp:
        df.write_parquet(tmp)
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
    spec_versions: dict[str, int] = field(default_factory=dict)  # trials per spec version (several: say so)
    max_seeds: int = 0  # most seeds of any configuration (1: no interval is claimed anywhere)
    curves_plot: Path | None = None
    curves_left_out: list[str] = field(default_factory=list)
    masks_plot: Path | None = None  # overlay grid of the best trials' predictions (``vlsm-batch predict``)
    models: dict[str, list[str]] = field(default_factory=dict)  # model -> strategies of its trials (any state)

    def notes(self) -> list[str]:
        """What a reader must know before the numbers (mixed spec versions, no replicates)."""
        out = []
        if len(self.spec_versions) > 1:
            out.append(
                "This study mixes spec versions ("
                + ", ".join(f"{v}: {n} trials" for v, n in self.spec_versions.items())
                + "): trials whose train settings differ are separate configurations, never seeds of one."
            )
        if self.n_done and self.max_seeds < 2:
            out.append("Every configuration has one seed: no interval is claimed (add seeds for 95 % CIs).")
        return out


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
    curves: str = "best",
    log: Any = None,
) -> AnalysisResult:
    import polars as pl

    from . import report
    from . import takeaways as tk

    specs = tk.load(takeaway_paths)  # fail on a bad takeaway file before any work
    clock = [time.perf_counter()]
    timings: dict[str, float] = {}

    def lap(name: str, then: str = "") -> None:
        now = time.perf_counter()
        timings[name] = now - clock[0]
        clock[0] = now
        if log is not None and then:
            log(f"{name} done in {timings[name]:.1f} s; {then}")

    if log is not None:
        log(f"collecting the trials of {layout.root} (cached as Parquet) ...")

    cache: dict[str, int] = {}
    df = collect(layout, use_cache=use_cache, stats=cache)
    df = df.drop([c for c in (SIG,) if c in df.columns])
    by = resolve_columns(df, by)
    check_columns(df, by)
    lap("collect", f"{df.height} trials; choosing the best configuration per cell ...")
    objective, mode = objective_of(layout)
    binned = apply_bins(df, bins or {})
    table = grouped(binned, by, objective)
    cfg = configs(df, objective, list(REPORTED))
    best_table = best(cfg, mode)
    lap("select", f"computing {len(specs)} takeaways ...")
    ctx = tk.Context(df=df, cfg=cfg, best=best_table, objective=objective, mode=mode)
    results = [tk.compute(ctx, s) for s in specs]
    lap("takeaways", "writing tables, figures (300 dpi PNG, PDF, SVG) and the report ..." if outputs else "")
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
    if df.height and {"model", "strategy"} <= set(df.columns):
        per_model = df.group_by("model").agg(pl.col("strategy").unique().sort())
        result.models = {str(m): [str(s) for s in st] for m, st in per_model.iter_rows()}
    if "spec_version" in df.columns and df.height:
        versions = df.filter(pl.col("spec_version").is_not_null()).group_by("spec_version").len().sort("spec_version")
        result.spec_versions = {str(v): int(n) for v, n in versions.iter_rows()}
    if best_table is not None and best_table.height and "n_seeds" in cfg.columns:
        result.max_seeds = int(cast("int | None", cfg["n_seeds"].max()) or 0)  # an int column
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
        from .curves import latex_table

        files += _write_frame(cfg, out / "tables" / "configs")
        files += _write_frame(best_table, out / "tables" / "best_per_cell")
        atomic_write_text(out / "tables" / "best_per_cell.tex", latex_table(best_table))
        files.append(out / "tables" / "best_per_cell.tex")
    pending: list[tuple[Any, Path]] = []

    def queue(figure: Any, stem: Path) -> Path:
        pending.append((figure, stem))
        return stem.with_suffix(".png")

    if curves != "none":
        from .curves import all_trials, best_trials, curves_figure

        if curves == "best":
            chosen = best_trials(best_table, df, objective, mode)
        else:  # "all", or one cell "model/dataset/strategy": every finished trial of it
            chosen = [c for c in all_trials(df) if curves == "all" or c[0].split(" ")[0] == curves]
        curve_fig, result.curves_left_out = curves_figure(layout, chosen)
        if curve_fig is not None:
            result.curves_plot = queue(curve_fig, out / "plots" / "learning_curves")
    from .curves import best_trials as _best_trials
    from .curves import overlay_figure

    masks = overlay_figure(layout, _best_trials(best_table, df, objective, mode)) if cfg.height else None
    if masks is not None:
        result.masks_plot = queue(masks, out / "plots" / "masks")
    fig = score_vs(binned, by[0], [objective, "test/dice"])
    result.by_plot = queue(fig, out / "plots" / f"score_by_{_slug(by)}")
    produced: set[str] = set()
    for t in results:
        if t.table is not None:
            files += _write_frame(t.table, out / "tables" / f"takeaway_{t.spec.name}")
            produced.add(f"takeaway_{t.spec.name}")
        if t.figure is not None:
            t.plot = queue(t.figure, out / "plots" / f"takeaway_{t.spec.name}")
            t.figure = None
    for written in save_all(pending):  # the figures drawn in parallel where the machine allows
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
