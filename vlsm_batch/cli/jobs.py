"""``status`` (and ``--watch``), ``cancel``, ``logs`` and ``run-trial``: the commands that act on a submitted study's
trials. No torch and no submitit at import; ``run-trial`` loads training only when it runs."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from ..errors import VlsmBatchError
from .common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, STUDY_HELP, err, out, study_dir


def cmd_status(args: argparse.Namespace) -> int:
    from ..jobs.status import format_status, load_status
    from ..layout import StudyLayout

    layout = StudyLayout(study_dir(args.study))
    if args.watch is not None:
        if not args.watch > 0:
            raise VlsmBatchError(f"--watch {args.watch:g}: the refresh interval must be a positive number of seconds")
        return watch_status(layout, args.watch, args.json)
    st = load_status(layout)
    out(json.dumps(st.as_dict(), indent=2, default=str) if args.json else format_status(st))
    return EXIT_OK


def watch_status(layout: Any, interval: float, as_json: bool = False, max_rounds: int | None = None) -> int:
    """Redraw ``status`` in place every ``interval`` seconds until nothing is left to run, or Ctrl-C.

    Plain ANSI (home, clear to end of screen) on a terminal, so no extra dependency; into a pipe or file each
    refresh is appended after a separator line instead. ``max_rounds`` bounds the loop (tests).
    """
    import time

    from ..jobs.status import format_status, load_status

    tty = sys.stdout.isatty() and not as_json
    rounds = 0
    try:
        while True:
            st = load_status(layout)
            text = json.dumps(st.as_dict(), default=str) if as_json else format_status(st)
            stamp = time.strftime("%H:%M:%S")
            done = st.finished()
            foot = "study finished." if done else f"refreshing every {interval:g} s; Ctrl-C to stop watching"
            if tty:
                sys.stdout.write("\x1b[H\x1b[J" + text + f"\n\n[{stamp}] {foot}\n")
                sys.stdout.flush()
            else:
                out(text if as_json else f"--- {stamp}\n{text}\n{foot}")
            rounds += 1
            if done or (max_rounds is not None and rounds >= max_rounds):
                return EXIT_OK
            time.sleep(interval)
    except KeyboardInterrupt:
        out()
        return EXIT_OK


def cmd_run_trial(args: argparse.Namespace) -> int:
    from ..extras import require_extra

    require_extra("train", "run-trial")  # before the trial is queued: a light install changes nothing
    from ..jobs import store
    from ..jobs.task import run_trial_task
    from ..layout import TrialPaths

    paths = TrialPaths(Path(args.trial_dir))
    if not paths.config.is_file():
        raise VlsmBatchError(f"{paths.root} is not a trial folder (no config.json): pass runs/<study>/trials/<id>")
    try:  # queue it for this process (a failed or cancelled trial is retried; done and running are refused)
        store.submit(paths, "inline", store.read(paths).spec_version, retry_failed=True)
    except store.IllegalTransition as exc:
        raise VlsmBatchError(f"{exc}; nothing was run") from None
    result = run_trial_task(args.trial_dir, executor="inline")
    if "skipped" in result:
        err(result["skipped"])
        return EXIT_FAILED
    return EXIT_INTERRUPTED if "cancelled" in result else EXIT_OK


def cmd_cancel(args: argparse.Namespace) -> int:
    from ..jobs import store
    from ..jobs.cluster import slurm_cmd
    from ..jobs.store import PENDING, REQUEUED, RUNNING, IllegalTransition, now_iso
    from ..jobs.study import study_lock, study_states
    from ..layout import StudyLayout

    layout = StudyLayout(study_dir(args.study))
    wanted_states = set(args.state or [PENDING, RUNNING, REQUEUED])
    lock = None if args.dry_run else study_lock(layout, "vlsm-batch cancel", allow_local_run=True)
    try:
        views = study_states(layout, with_metrics=False)
        chosen = [
            s
            for s in views
            if s.state in wanted_states
            and s.state in (PENDING, RUNNING, REQUEUED)
            and (not args.model or s.trial.model in args.model)
            and (not args.strategy or s.trial.strategy in args.strategy)
            and (not args.dataset or s.trial.dataset in args.dataset)
            and (not args.trial or any(s.trial.trial_id.startswith(p) for p in args.trial))
        ]
        if not chosen:
            print("nothing to cancel (no pending, running or requeued trial matches)")
            return 0
        shared = _pack_goes_on(views, {s.trial.trial_id for s in chosen})
        if args.dry_run:
            for s in chosen:
                note = " (alone: its pack goes on)" if s.trial.trial_id in shared else ""
                print(f"would cancel {s.trial.trial_id} ({s.state}, job {s.status.job_id or '-'}){note}")
            return 0
        request = {"by": "vlsm-batch cancel", "at": now_iso()}
        stopped: list[Any] = []
        signalled: list[Any] = []
        alone: list[Any] = []
        queued = 0
        for s in chosen:  # running ones first get a stop request, so the task knows who stopped it
            paths = layout.trial(s.trial.trial_id)
            try:
                if s.state == RUNNING:
                    store.transition(paths, "stop_request", stop_request=request)
                    (alone if s.trial.trial_id in shared else signalled).append(s)
                else:
                    store.transition(
                        paths, "cancel", by="vlsm-batch cancel", ended_at=now_iso(), stop_request=request,
                        error={"class": "Cancelled", "message": "cancelled with vlsm-batch cancel before it ran"},
                    )  # fmt: skip
                    queued += 1
                stopped.append(s)
            except IllegalTransition:
                continue  # it ended meanwhile
        slurm_ids = list(
            dict.fromkeys(  # a pack's members share one task: scancel it once
                str(s.status.job_id)
                for s in stopped
                if s.status.executor == "slurm" and s.status.job_id and s.trial.trial_id not in shared
            )
        )
        for i in range(0, len(slurm_ids), 1000):
            if slurm_cmd(["scancel", *slurm_ids[i : i + 1000]], timeout_s=60) is None:
                print("error: scancel failed (is SLURM_CONF set and the controller up?)", file=sys.stderr)
                return 1
        pids = {
            s.status.pid
            for s in signalled
            if s.status.executor != "slurm" and isinstance(s.status.pid, int) and s.status.host == socket.gethostname()
        }
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)  # the task records its own cancellation (each member of a pack)
    finally:
        if lock is not None:
            lock.release()
    print(
        f"cancelled {queued} queued trial(s); asked {len(signalled)} running trial(s) to stop (each records "
        f"cancelled and keeps its checkpoints); {len(slurm_ids)} Slurm task(s) scancelled. "
        "`vlsm-batch submit SPEC` relaunches them, resuming from their last epoch"
    )
    waiting = [s for s in stopped if s.state != RUNNING and s.trial.trial_id in shared]
    if alone or waiting:
        print(
            f"{len(alone)} running and {len(waiting)} waiting trial(s) share a process with trials of "
            "their pack that go on: only their records were told (no signal, no scancel); a running one stops at "
            "its pack's next step and records cancelled with its checkpoints"
        )
    return 0


def _pack_goes_on(views: list[Any], cancelling: set[str]) -> set[str]:
    """The trials of ``cancelling`` whose pack keeps another member that is not being cancelled: the same job, still
    waiting for or running in that process, and not asked to stop. Those are stopped alone, through their record
    (the pack's runner polls it), never by signalling or scancelling the shared process."""
    from ..jobs.store import ACTIVE, RUNNING

    by_id = {v.trial.trial_id: v for v in views}
    out = set()
    for tid in cancelling:
        record = by_id[tid].status
        if not record.job_id or len(record.pack or []) < 2:
            continue
        for other in record.pack:
            o = by_id.get(other)
            if other == tid or other in cancelling or o is None or o.status.job_id != record.job_id:
                continue
            if o.status.state in ACTIVE and not (o.status.state == RUNNING and o.status.stop_request):
                out.add(tid)
                break
    return out


def cmd_logs(args: argparse.Namespace) -> int:
    from ..jobs import store
    from ..jobs.logs import tail_lines, trial_logs
    from ..jobs.study import read_manifest
    from ..layout import StudyLayout

    layout = StudyLayout(study_dir(args.study))
    ids = [t.trial_id for t in read_manifest(layout) if t.trial_id.startswith(args.trial)]
    if not ids:
        raise VlsmBatchError(f"no trial {args.trial!r} in {layout.root}")
    if len(ids) > 1:
        raise VlsmBatchError(f"{args.trial!r} is ambiguous ({len(ids)} trials): give more characters")
    record = store.read(layout.trial(ids[0]))
    files, main = trial_logs(layout, ids[0], record)
    if args.err_only:
        files = [f for f in files if f.name.endswith(".err")]
    print(
        f"trial {ids[0]}: {record.state}, attempt {record.attempt}, started {record.starts} time(s), "
        f"job {record.job_id or '-'}"
    )
    if not files:
        print("  no log files yet" + (" (the task has not started)" if record.state == "pending" else ""))
        return 0
    for f in files:
        print(f"==> {f} <==" + (" (the log status shows)" if f == main else ""))
        lines = tail_lines(f, args.tail) if args.tail else f.read_text(errors="replace").splitlines()
        for line in lines:
            print(line)
    return 0


def add_status(sub: Any) -> None:
    s = sub.add_parser("status", help="state of every trial, best objective, failures with log tails")
    s.add_argument("--study", help=STUDY_HELP)
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.add_argument(
        "--watch",
        nargs="?",
        type=float,
        const=10.0,
        default=None,
        metavar="SECONDS",
        help="refresh in place every SECONDS (default 10) until the study finishes or Ctrl-C",
    )
    s.set_defaults(func=cmd_status)


def add_run_trial(sub: Any) -> None:
    s = sub.add_parser("run-trial", help="train one trial folder in this process (debugging)")
    s.add_argument("trial_dir", help="runs/<study>/trials/<id>")
    s.set_defaults(func=cmd_run_trial)


def add_cancel(sub: Any) -> None:
    s = sub.add_parser("cancel", help="cancel pending/running trials (scancel on Slurm); submit relaunches them")
    s.add_argument("--study", help=STUDY_HELP)
    s.add_argument(
        "--state", action="append", choices=["pending", "running", "requeued"], help="only trials in this state"
    )
    s.add_argument("--model", action="append", help="only this model (repeatable)")
    s.add_argument("--strategy", action="append", help="only this strategy (repeatable)")
    s.add_argument("--dataset", action="append", help="only this dataset (repeatable)")
    s.add_argument("--trial", action="append", help="only this trial id or id prefix (repeatable)")
    s.add_argument("--dry-run", action="store_true", help="list what would be cancelled")
    s.set_defaults(func=cmd_cancel)


def add_logs(sub: Any) -> None:
    s = sub.add_parser("logs", help="print a trial's log files (every attempt; local or Slurm)")
    s.add_argument("trial", help="trial id (or a unique prefix)")
    s.add_argument("--study", help=STUDY_HELP)
    s.add_argument("--tail", type=int, default=0, metavar="N", help="only the last N lines of each file")
    s.add_argument("--err-only", action="store_true", help="only stderr logs")
    s.set_defaults(func=cmd_logs)
