"""``python -m vlsm_batch.jobs.worker TRIAL_DIR --job-id ID``: one local trial in its own process.

The local launcher (:mod:`.local`) starts one of these per trial, its stdout/stderr in the trial's ``logs/``.
Exit codes: 0 done (or claim refused: someone else trains it), 1 failed, 130 cancelled.
``--train module:function`` replaces the real training (tests use stand-ins importable on PYTHONPATH).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

EXIT_DONE, EXIT_FAILED, EXIT_CANCELLED = 0, 1, 130


def _load(spec: str | None) -> Any:
    if not spec:
        return None
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vlsm_batch.jobs.worker", description=__doc__)
    parser.add_argument("trial_dir")
    parser.add_argument("--job-id", required=True, help="the launch id recorded in the trial's record")
    parser.add_argument("--executor", default="local")
    parser.add_argument("--train", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    from .task import run_trial_task

    try:
        result = run_trial_task(args.trial_dir, args.executor, train=_load(args.train), job_id=args.job_id)
    except BaseException:  # recorded by run_trial_task; the traceback is in this trial's log
        import traceback

        traceback.print_exc()
        return EXIT_FAILED
    if "cancelled" in result:
        return EXIT_CANCELLED
    return EXIT_DONE


if __name__ == "__main__":
    sys.exit(main())
