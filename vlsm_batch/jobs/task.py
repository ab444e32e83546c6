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
from .state import CANCELLED, DONE, FAILED, RUNNING, now_iso, write_status


def _job_id() -> str | None:
    for var in ("SLURM_ARRAY_JOB_ID", "SLURM_JOB_ID", "SUBMITIT_LOCAL_JOB_ID"):
        if os.environ.get(var):
            if var == "SLURM_ARRAY_JOB_ID":
                return f"{os.environ[var]}_{os.environ.get('SLURM_ARRAY_TASK_ID', '0')}"
            return os.environ[var]
    return None


def run_trial_task(trial_dir: str, executor: str = "local") -> dict[str, Any]:
    """Train the trial in ``trial_dir``; record running → done | failed | cancelled. Re-raises on failure."""
    paths = TrialPaths(Path(trial_dir))
    previous = read_json(paths.status) or {}
    started = time.time()
    write_status(
        paths,
        RUNNING,
        attempt=int(previous.get("attempt", 0)) + 1,
        executor=executor,
        host=socket.gethostname(),
        pid=os.getpid(),
        job_id=_job_id(),
        started_at=now_iso(),
        ended_at=None,
        error=None,
    )
    try:
        from ..training.entry import train_trial  # heavy: torch, Lightning, transformers

        metrics = train_trial(paths.root)
    except KeyboardInterrupt:
        write_status(paths, CANCELLED, ended_at=now_iso(), error={"class": "KeyboardInterrupt", "message": ""})
        raise
    except BaseException as exc:
        tb = traceback.format_exc().rstrip().splitlines()
        write_status(
            paths,
            FAILED,
            ended_at=now_iso(),
            wall_time_s=round(time.time() - started, 2),
            error={"class": type(exc).__name__, "message": str(exc)[:2000], "traceback_tail": tb[-25:]},
        )
        print(f"trial {paths.root.name} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        raise
    write_status(paths, DONE, ended_at=now_iso(), wall_time_s=round(time.time() - started, 2))
    return metrics
