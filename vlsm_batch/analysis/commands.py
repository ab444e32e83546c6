"""The ``analyze`` subcommand (registered by ``cli.COMMAND_MODULES``; imports polars only when run)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import VlsmBatchError

DEFAULT_BINS = 4


def parse_bins(values: list[str] | None) -> dict[str, int]:
    """``--bin lr`` (4 bins) or ``--bin lr=6``; repeatable or comma-separated."""
    bins: dict[str, int] = {}
    for arg in values or []:
        for item in filter(None, arg.split(",")):
            name, _, n = item.partition("=")
            try:
                k = int(n) if n else DEFAULT_BINS
            except ValueError:
                raise VlsmBatchError(f"--bin {item}: expected COLUMN or COLUMN=N with N an integer") from None
            if k < 1:
                raise VlsmBatchError(f"--bin {item}: N must be at least 1")
            bins[name.strip()] = k
    return bins


def _print_table(result: Any) -> None:
    import polars as pl

    with pl.Config(
        tbl_rows=200,
        tbl_cols=30,
        tbl_width_chars=200,
        float_precision=4,
        tbl_hide_dataframe_shape=True,
        tbl_hide_column_data_types=True,
    ):
        for note in result.notes():
            print(f"note: {note}", flush=True)
        print(f"{result.n_done} of {result.n_trials} trials done; objective {result.objective}", flush=True)
        print(str(result.table), flush=True)
    lines = [f"- {t.spec.title}: {t.sentence}" for t in result.takeaways if t.sentence]
    lines += [f"- {t.spec.title}: not answered ({t.skipped})" for t in result.takeaways if t.skipped]
    if lines:
        print("\nTakeaways (best configuration per cell chosen on validation, reported on test):")
        print("\n".join(lines), flush=True)


def _json(result: Any) -> dict[str, Any]:
    return {
        "objective": result.objective,
        "mode": result.mode,
        "n_trials": result.n_trials,
        "n_done": result.n_done,
        "states": result.states,
        "spec_versions": result.spec_versions,
        "notes": result.notes(),
        "by": result.by,
        "table": result.table.to_dicts(),
        "best": result.best_table.to_dicts() if result.best_table is not None else [],
        "takeaways": [
            {"name": t.spec.name, "title": t.spec.title, "sentence": t.sentence, "skipped": t.skipped, "facts": t.facts}
            for t in result.takeaways
        ],
        "files": [str(f) for f in result.files],
    }


def cmd_analyze(args: argparse.Namespace) -> int:
    from ..cli import study_dir
    from ..layout import StudyLayout
    from .run import analyze

    by = [b for arg in (args.by or ["strategy"]) for b in arg.split(",") if b]
    layout = StudyLayout(study_dir(args.study))
    if args.curves not in ("best", "all", "none") and args.curves.count("/") != 2:
        raise VlsmBatchError(f"--curves {args.curves}: expected best, all, none or MODEL/DATASET/STRATEGY")
    result = analyze(
        layout,
        by,
        bins=parse_bins(args.bin),
        takeaway_paths=[Path(p) for p in args.takeaways or []],
        use_cache=not args.no_cache,
        curves=args.curves,
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )
    if args.format == "json":
        print(json.dumps(_json(result), indent=2, default=str), flush=True)
    elif args.format == "markdown":
        print((layout.analysis / "summary.md").read_text(encoding="utf-8"), flush=True)
    else:
        _print_table(result)
    if result.files:
        report = layout.analysis / "report.html"
        print(
            f"wrote {len(result.files)} files under {layout.analysis} (tables/, plots/, summary.md); report: {report}",
            file=sys.stderr,
            flush=True,
        )
    return 0


def add_commands(sub: Any) -> None:
    s = sub.add_parser(
        "analyze",
        help="tables, plots, takeaways and report.html from the per-trial metrics",
        description="Collect every trial (cached as Parquet), choose the best configuration per (model, dataset, "
        "strategy) on the validation objective and report it on test (seeds as replicates: mean, std, 95 % "
        "interval), compute the takeaways, and write tables, plots, summary.md and report.html under the "
        "study's analysis/ folder.",
    )
    s.add_argument("--study", help="study folder (default: the most recent one under the current folder)")
    s.add_argument(
        "--by",
        action="append",
        default=None,
        help="parameter, train setting (max_epochs or train.max_epochs, train.early_stopping.patience, ...) or axis "
        "to group all finished trials by (repeat or comma-separate; default: strategy)",
    )
    s.add_argument(
        "--bin",
        action="append",
        default=None,
        metavar="COL[=N]",
        help=f"bin a numeric column into N intervals before grouping (default {DEFAULT_BINS}; log-spaced when it "
        "spans more than 20x)",
    )
    s.add_argument(
        "--takeaways",
        action="append",
        default=None,
        metavar="PATH",
        help="extra takeaway files or folders of *.yaml (same name replaces a built-in one); see analysis/README.md",
    )
    s.add_argument(
        "--curves",
        default="best",
        metavar="best|all|none|MODEL/DATASET/STRATEGY",
        help="learning curves (history.csv): of the best trial of each cell (default), of every finished trial, of "
        "every trial of one cell, or none",
    )
    s.add_argument("--no-cache", action="store_true", help="re-read every trial's files (the cache is not touched)")
    s.add_argument("--format", choices=["table", "json", "markdown"], default="table", help="what is printed")
    s.set_defaults(func=cmd_analyze)
