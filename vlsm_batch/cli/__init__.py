"""Command line: ``vlsm-batch validate|plan|submit|status|analyze|list|...``: every subcommand lives in this package.

Each subcommand is a few lines around one pipeline function. Heavy modules (torch, polars, matplotlib) are
imported inside the subcommand that needs them, so ``--help`` and the light commands start fast. This package may
import every stage; no stage, catalog or leaf module imports it (``tests/test_import_direction.py``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from .. import __version__
from ..errors import SpecError, VlsmBatchError
from . import analysis, datasets, jobs, models, study
from .common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, err, study_dir
from .jobs import watch_status

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "build_parser", "main", "study_dir",
           "watch_status"]  # fmt: skip

# The order of the subcommands in ``--help``: each adds its own parser.
SUBCOMMANDS: tuple[Callable[[Any], None], ...] = (
    study.add_validate,
    study.add_plan,
    study.add_submit,
    jobs.add_status,
    study.add_list,
    jobs.add_run_trial,
    analysis.add_analyze,
    analysis.add_predict,
    datasets.add_commands,
    jobs.add_cancel,
    jobs.add_logs,
    models.add_commands,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vlsm-batch",
        description="Declarative prompt-tuning studies for vision-language segmentation models.",
        epilog="Typical use: vlsm-batch submit specs/quickstart.yaml; vlsm-batch status; "
        "vlsm-batch analyze --by prompt_depth",
    )
    p.add_argument("--version", action="version", version=f"vlsm-batch {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except SpecError as exc:
        err("\n".join(exc.errors))
        err(f"{len(exc.errors)} error(s); nothing was done.")
        return EXIT_FAILED
    except VlsmBatchError as exc:
        err(f"error: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        err("interrupted.")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `vlsm-batch plan SPEC | head`
        sys.stderr.close()
        return EXIT_OK
