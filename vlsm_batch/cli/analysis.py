"""``analyze`` (tables, plots, takeaways, report) and ``predict`` (a trial's masks as PNGs). Light at import:
polars, matplotlib, torch and the model load inside the command that needs them."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import VlsmBatchError
from .common import STUDY_HELP, study_dir

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
    from ..extras import require_extra

    require_extra("analysis")  # before polars is imported: a light install is told which extra to add
    from ..analysis.run import analyze
    from ..layout import StudyLayout

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


def _trial_dirs(args: argparse.Namespace) -> list[Path]:
    """The trial folders named (paths, or ids of the study) or, with ``--best``, the best trial of every cell."""
    from ..layout import StudyLayout

    out = []
    layout = None
    for name in args.trials or []:
        p = Path(name)
        if (p / "config.json").is_file():
            out.append(p)
            continue
        layout = layout or StudyLayout(study_dir(args.study))
        d = layout.trial(name).root
        if not (d / "config.json").is_file():
            raise VlsmBatchError(f"{name}: neither a trials/<id> folder nor a trial id of {layout.root}")
        out.append(d)
    if args.best:
        from ..analysis.collect import collect
        from ..analysis.curves import best_trials
        from ..analysis.run import REPORTED, objective_of
        from ..analysis.tables import best, configs

        layout = layout or StudyLayout(study_dir(args.study))
        objective, mode = objective_of(layout)
        df = collect(layout)
        chosen = best_trials(best(configs(df, objective, list(REPORTED)), mode), df, objective, mode)
        out += [layout.trial(tid).root for _, tid in chosen]
    if not out:
        raise VlsmBatchError("predict: name trial folders or ids, or pass --best for the best trial of every cell")
    return out


def cmd_predict(args: argparse.Namespace) -> int:
    from ..extras import require_extra

    require_extra("train", "predict")
    from ..training.predict import predict_trial

    if args.limit is not None and args.limit < 1:
        raise VlsmBatchError(f"--limit {args.limit}: must be at least 1")
    dirs = _trial_dirs(args)
    if args.out and len(dirs) > 1:
        raise VlsmBatchError("--out takes one trial; without it each trial's masks go to trials/<id>/predictions/")
    for i, d in enumerate(dirs, 1):
        print(f"[{i}/{len(dirs)}] predicting {d.name} ({args.split}) ...", file=sys.stderr, flush=True)
        folder = predict_trial(d, split=args.split, limit=args.limit, out_dir=Path(args.out) if args.out else None)
        print(folder, flush=True)
    return 0


def add_analyze(sub: Any) -> None:
    s = sub.add_parser(
        "analyze",
        help="tables, plots, takeaways and report.html from the per-trial metrics",
        description="Collect every trial (cached as Parquet), choose the best configuration per (model, dataset, "
        "strategy) on the validation objective and report it on test (seeds as replicates: mean, std, 95 % "
        "interval), compute the takeaways, and write tables, plots, summary.md and report.html under the "
        "study's analysis/ folder.",
    )
    s.add_argument("--study", help=STUDY_HELP)
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


def add_predict(sub: Any) -> None:
    s = sub.add_parser(
        "predict",
        help="write a trial's predicted masks as PNGs (best checkpoint, original resolution)",
        description="Run a finished trial's best checkpoint on a split and write one 0/255 PNG mask per image at "
        "its original resolution, plus index.json (image, ground truth, prediction, Dice). `analyze` then shows "
        "an overlay grid of the best trial of each cell.",
    )
    s.add_argument("trials", nargs="*", help="trials/<id> folders or trial ids of --study")
    s.add_argument("--study", help=STUDY_HELP)
    s.add_argument("--best", action="store_true", help="also the best trial (on validation) of every cell")
    s.add_argument("--split", choices=["test", "val", "train"], default="test", help="which split (default test)")
    s.add_argument("--limit", type=int, default=None, help="at most N images per trial")
    s.add_argument("--out", help="folder for the PNGs (one trial only; default trials/<id>/predictions/<split>/)")
    s.set_defaults(func=cmd_predict)
