"""What a job runs: one trial, wrapped so that every exit path leaves a truthful ``status.json``.

This module is pickled by reference on the submitting side, so it imports nothing heavy: the training stack is
imported inside :func:`run_trial_task`, on the compute node.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from ..layout import TrialPaths, read_json
from .state import CANCELLED, DONE, FAILED, PENDING, RUNNING, now_iso, write_status

# Set by TrialTask.checkpoint (inside submitit's signal handler) just before submitit requeues the job and exits:
# the SystemExit that follows is a requeue, not a failure.
_requeue_reason: str | None = None


def _job_id() -> str | None:
    for var in ("SLURM_ARRAY_JOB_ID", "SLURM_JOB_ID", "SUBMITIT_LOCAL_JOB_ID"):
        if os.environ.get(var):
            if var == "SLURM_ARRAY_JOB_ID":
                return f"{os.environ[var]}_{os.environ.get('SLURM_ARRAY_TASK_ID', '0')}"
            return os.environ[var]
    return None


class TooManyAttemptsError(RuntimeError):
    pass


def run_trial_task(trial_dir: str, executor: str = "local", train: Any = None) -> dict[str, Any]:
    """Train the trial in ``trial_dir``; record running → done | failed | cancelled. Re-raises on failure.

    ``train(trial_root) -> metrics`` defaults to the real training. Every start counts as an attempt; a Slurm
    submission caps them (``max_attempts`` in status.json, counted from ``attempt_base``).
    """
    paths = TrialPaths(Path(trial_dir))
    previous = read_json(paths.status) or {}
    started = time.time()
    attempt = int(previous.get("attempt", 0)) + 1
    cap = int(previous.get("max_attempts") or 0)
    if cap and attempt - int(previous.get("attempt_base", 0)) > cap:
        message = f"attempt {attempt - int(previous.get('attempt_base', 0))} would exceed max_attempts={cap}"
        write_status(
            paths,
            FAILED,
            attempt=attempt - 1,
            ended_at=now_iso(),
            error={"class": "TooManyAttempts", "message": message},
        )
        raise TooManyAttemptsError(message)
    write_status(
        paths,
        RUNNING,
        attempt=attempt,
        executor=executor,
        host=socket.gethostname(),
        pid=os.getpid(),
        job_id=_job_id(),
        started_at=now_iso(),
        ended_at=None,
        error=None,
    )
    try:
        if train is None:
            from ..training.entry import train_trial as train  # heavy: torch, Lightning, transformers

        metrics = train(paths.root)
    except SystemExit:
        if _requeue_reason is None:
            _record_failure(paths, started)
            raise
        write_status(paths, PENDING, requeued_at=now_iso(), requeue_reason=_requeue_reason, ended_at=now_iso())
        raise
    except KeyboardInterrupt:
        write_status(paths, CANCELLED, ended_at=now_iso(), error={"class": "KeyboardInterrupt", "message": ""})
        raise
    except BaseException:
        _record_failure(paths, started)
        raise
    write_status(paths, DONE, ended_at=now_iso(), wall_time_s=round(time.time() - started, 2))
    return metrics


def _record_failure(paths: TrialPaths, started: float) -> BaseException:
    exc = sys.exc_info()[1]
    assert exc is not None
    tb = traceback.format_exc().rstrip().splitlines()
    write_status(
        paths,
        FAILED,
        ended_at=now_iso(),
        wall_time_s=round(time.time() - started, 2),
        error={"class": type(exc).__name__, "message": str(exc)[:2000], "traceback_tail": tb[-25:]},
    )
    print(f"trial {paths.root.name} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
    return exc


class TrialTask:
    """What a Slurm array task runs: a submitit Checkpointable around :func:`run_trial_task`.

    On USR2 (timeout or preemption) submitit calls :meth:`checkpoint`; returning a resubmission makes submitit
    requeue the task (``scontrol requeue``), and the next attempt resumes from the trial's last epoch checkpoint
    on disk (Lightning's own SLURM requeue is off, see ``training.entry.slurm_plugins``). A task requeued or killed
    from outside (``scontrol requeue``, node failure) resumes the same way. Attempts are capped (status.json).
    """

    def __init__(self, train: Any = None) -> None:
        self.train = train

    def __call__(self, trial_dir: str, executor: str = "slurm") -> dict[str, Any]:
        return run_trial_task(trial_dir, executor, train=self.train)

    def checkpoint(self, trial_dir: str, executor: str = "slurm") -> Any:
        global _requeue_reason
        from submitit.helpers import DelayedSubmission

        status = read_json(TrialPaths(Path(trial_dir)).status) or {}
        cap = int(status.get("max_attempts") or 0)
        used = int(status.get("attempt", 0)) - int(status.get("attempt_base", 0))
        if cap and used >= cap:
            print(f"not requeued: {used} attempts used of max_attempts={cap}", file=sys.stderr, flush=True)
            return None  # submitit then records "not requeued" and the task fails
        _requeue_reason = "timeout or preemption signal (USR2): checkpointed and requeued"
        print(f"requeueing trial {Path(trial_dir).name} after attempt {used}", file=sys.stderr, flush=True)
        return DelayedSubmission(self, trial_dir, executor)
