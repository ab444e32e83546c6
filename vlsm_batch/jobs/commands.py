"""``vlsm-batch cancel`` and ``vlsm-batch logs``: registered through ``cli.COMMAND_MODULES`` (no torch, no submitit)."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import Any

from ..errors import VlsmBatchError


def _study(arg: str | None) -> Path:
    from ..cli import study_dir

    return study_dir(arg)


def cmd_cancel(args: argparse.Namespace) -> int:
    from ..layout import StudyLayout
    from .cluster import slurm_cmd
    from .state import CANCELLED, PENDING, RUNNING, now_iso, write_status
    from .study import study_states

    layout = StudyLayout(_study(args.study))
    wanted_states = set(args.state or [PENDING, RUNNING])
    chosen = [
        s
        for s in study_states(layout, with_metrics=False)
        if s.state in wanted_states
        and s.state in (PENDING, RUNNING)
        and (not args.model or s.trial.model in args.model)
        and (not args.strategy or s.trial.strategy in args.strategy)
        and (not args.dataset or s.trial.dataset in args.dataset)
        and (not args.trial or any(s.trial.trial_id.startswith(p) for p in args.trial))
    ]
    if not chosen:
        print("nothing to cancel (no pending or running trial matches)")
        return 0
    slurm_ids = [
        str(s.status["job_id"]) for s in chosen if s.status.get("executor") == "slurm" and s.status.get("job_id")
    ]
    if args.dry_run:
        for s in chosen:
            print(f"would cancel {s.trial.trial_id} ({s.state}, job {s.status.get('job_id') or '-'})")
        return 0
    for i in range(0, len(slurm_ids), 1000):
        if slurm_cmd(["scancel", *slurm_ids[i : i + 1000]], timeout_s=60) is None:
            print("error: scancel failed (is SLURM_CONF set and the controller up?)", file=sys.stderr)
            return 1
    for s in chosen:
        if s.status.get("executor") == "local" and isinstance(s.status.get("pid"), int) and s.state == RUNNING:
            with contextlib.suppress(ProcessLookupError):
                os.kill(s.status["pid"], signal.SIGINT)  # the local task records its own cancellation
        write_status(
            layout.trial(s.trial.trial_id),
            CANCELLED,
            ended_at=now_iso(),
            error={"class": "Cancelled", "message": "cancelled with vlsm-batch cancel"},
        )
    print(f"cancelled {len(chosen)} trials ({len(slurm_ids)} Slurm tasks); `vlsm-batch submit SPEC` relaunches them")
    return 0


def trial_log_files(layout: Any, trial_id: str, status: dict[str, Any]) -> list[Path]:
    """Every log of a trial, oldest first: local attempts, then the Slurm task's (recorded and derived paths)."""
    files = layout.trial(trial_id).log_files()
    job_id = status.get("job_id")
    candidates = [status.get("log_out"), status.get("log_err")]
    if job_id:
        folder = layout.submitit / str(job_id)
        candidates += [str(p) for p in sorted(folder.glob("*_log.*"))] if folder.is_dir() else []
    seen = {p.resolve() for p in files}
    for c in candidates:
        if c and Path(c).is_file() and Path(c).resolve() not in seen:
            seen.add(Path(c).resolve())
            files.append(Path(c))
    return files


def cmd_logs(args: argparse.Namespace) -> int:
    from ..layout import StudyLayout
    from .state import read_status, tail_lines
    from .study import read_manifest

    layout = StudyLayout(_study(args.study))
    ids = [t.trial_id for t in read_manifest(layout) if t.trial_id.startswith(args.trial)]
    if not ids:
        raise VlsmBatchError(f"no trial {args.trial!r} in {layout.root}")
    if len(ids) > 1:
        raise VlsmBatchError(f"{args.trial!r} is ambiguous ({len(ids)} trials): give more characters")
    status = read_status(layout.trial(ids[0]))
    files = trial_log_files(layout, ids[0], status)
    if args.err_only:
        files = [f for f in files if f.name.endswith(".err")]
    print(
        f"trial {ids[0]}: {status.get('state')}, attempt {status.get('attempt', 0)}, job {status.get('job_id') or '-'}"
    )
    if not files:
        print("  no log files yet" + (" (the task has not started)" if status.get("state") == "pending" else ""))
        return 0
    for f in files:
        print(f"==> {f} <==")
        lines = tail_lines(f, args.tail) if args.tail else f.read_text(errors="replace").splitlines()
        for line in lines:
            print(line)
    return 0


def add_commands(sub: Any) -> None:
    s = sub.add_parser("cancel", help="cancel pending/running trials (scancel on Slurm); submit relaunches them")
    s.add_argument("--study", help="study folder (default: the most recent one under the current folder)")
    s.add_argument("--state", action="append", choices=["pending", "running"], help="only trials in this state")
    s.add_argument("--model", action="append", help="only this model (repeatable)")
    s.add_argument("--strategy", action="append", help="only this strategy (repeatable)")
    s.add_argument("--dataset", action="append", help="only this dataset (repeatable)")
    s.add_argument("--trial", action="append", help="only this trial id or id prefix (repeatable)")
    s.add_argument("--dry-run", action="store_true", help="list what would be cancelled")
    s.set_defaults(func=cmd_cancel)

    s = sub.add_parser("logs", help="print a trial's log files (every attempt; local or Slurm)")
    s.add_argument("trial", help="trial id (or a unique prefix)")
    s.add_argument("--study", help="study folder (default: the most recent one under the current folder)")
    s.add_argument("--tail", type=int, default=0, metavar="N", help="only the last N lines of each file")
    s.add_argument("--err-only", action="store_true", help="only stderr logs")
    s.set_defaults(func=cmd_logs)
