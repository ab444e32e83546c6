"""The ``analyze`` subcommand (registered by ``cli.COMMAND_MODULES``; imports polars only when run)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def cmd_analyze(args: argparse.Namespace) -> int:
    from ..cli import study_dir
    from ..layout import StudyLayout
    from .run import analyze

    by = [b for arg in (args.by or ["strategy"]) for b in arg.split(",") if b]
    result = analyze(StudyLayout(study_dir(args.study)), by)
    if args.format == "json":
        print(json.dumps(result.table.to_dicts(), indent=2, default=str), flush=True)
    else:
        import polars as pl

        with pl.Config(
            tbl_rows=200,
            tbl_cols=30,
            tbl_width_chars=200,
            float_precision=4,
            tbl_hide_dataframe_shape=True,
            tbl_hide_column_data_types=True,
        ):
            print(f"{result.n_done} of {result.n_trials} trials done; objective {result.objective}", flush=True)
            print(str(result.table), flush=True)
    for f in result.files:
        print(f"wrote {f}", file=sys.stderr, flush=True)
    return 0


def add_commands(sub: Any) -> None:
    s = sub.add_parser("analyze", help="tables and plots from the per-trial metrics")
    s.add_argument("--study", help="study folder (default: the most recent one under the current folder)")
    s.add_argument(
        "--by",
        action="append",
        default=None,
        help="parameter or axis to group by (repeat or comma-separate; default: strategy)",
    )
    s.add_argument("--format", choices=["table", "json"], default="table", help="what is printed")
    s.set_defaults(func=cmd_analyze)
