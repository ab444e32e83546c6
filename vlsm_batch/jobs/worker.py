"""``python -m vlsm_batch.jobs.worker TRIAL_DIR [TRIAL_DIR ...] --job-id ID``: one local launch in its own process.

The local launcher (:mod:`.local`) starts one of these per trial, or per pack (``resources.pack``: several trial
folders, trained together by :func:`.task.run_pack_task`), its stdout/stderr in the (first) trial's ``logs/``.
Exit codes: 0 done (or claim refused: someone else trains it), 1 failed, 130 cancelled; for a pack, 1 only
when the process failed as a whole (a member that fails alone is in its own record), 130 when any was cancelled.
``--train module:function`` replaces the real training (tests use stand-ins importable on PYTHONPATH): a one-trial
training ``(root) -> metrics``, or with ``--pack`` a pack training ``(roots, events) -> None``.
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
    parser.add_argument("trial_dir", nargs="+", help="one trial folder, or the folders of one pack")
    parser.add_argument("--job-id", required=True, help="the launch id recorded in the trials' records")
    parser.add_argument("--executor", default="local")
    parser.add_argument("--pack", action="store_true", help="train the folders as one pack (implied by several)")
    parser.add_argument("--train", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    from .task import run_pack_task, run_trial_task

    train = _load(args.train)
    try:
        if args.pack or len(args.trial_dir) > 1:
            results = list(run_pack_task(args.trial_dir, args.executor, train=train, job_id=args.job_id).values())
        else:
            results = [run_trial_task(args.trial_dir[0], args.executor, train=train, job_id=args.job_id)]
    except BaseException:  # recorded by the task; the traceback is in this launch's log
        import traceback

        traceback.print_exc()
        return EXIT_FAILED
    if any("cancelled" in r for r in results):
        return EXIT_CANCELLED
    return EXIT_DONE


if __name__ == "__main__":
    sys.exit(main())
