"""Merge what tasks wrote (``status.json``) with what Slurm knows (``squeue``, then ``sacct``).

Markers are the truth for finished trials. A marker that still says pending/running is checked against Slurm:
queued or running there → that state (a requeued task shows pending again); ended there without a marker
(scancel, SIGKILL, time limit, node failure) → failed, with Slurm's state as the reason, written to status.json so
the verdict survives Slurm forgetting the job. ``squeue -t all`` answers for MinJobAge after the end, ``sacct``
(when accounting is on) for ever; with neither knowing the job, a job the controller does not know is lost.
Without a controller nothing is changed.
"""

from __future__ import annotations

from typing import Any

from ..layout import StudyLayout, read_json
from . import cluster
from .state import FAILED, PENDING, RUNNING, now_iso, write_status


def _needs_check(status: dict[str, Any]) -> bool:
    return (
        status.get("executor") == "slurm" and status.get("state") in (PENDING, RUNNING) and bool(status.get("job_id"))
    )


def reconcile(
    layout: StudyLayout, statuses: dict[str, dict[str, Any]], persist: bool = True
) -> dict[str, dict[str, Any]]:
    """``statuses`` (trial id → status) with Slurm's view merged in; returns a new dict."""
    todo = {tid: st for tid, st in statuses.items() if _needs_check(st)}
    if not todo:
        return statuses
    job_ids = [str(st["job_id"]) for st in todo.values()]
    queue = cluster.squeue_states(job_ids)
    if queue is None:  # no controller: nothing can be said
        return statuses
    acct = None
    if any(str(st["job_id"]) not in queue for st in todo.values()):
        acct = cluster.sacct_states(job_ids)
    out = dict(statuses)
    for tid, st in todo.items():
        jid = str(st["job_id"])
        row = queue.get(jid) or (acct or {}).get(jid)
        if row is not None and row.state not in cluster.TERMINAL:
            state = RUNNING if row.state in cluster.ACTIVE_RUNNING else PENDING
            out[tid] = {**st, "state": state, "slurm_state": row.detail}
            continue
        fresh = read_json(layout.trial(tid).status) or st  # the task may have written its result meanwhile
        if not _needs_check(fresh) or str(fresh.get("job_id")) != jid:
            out[tid] = fresh
            continue
        if row is None:
            where = "squeue" + (" or sacct" if acct is not None else "; sacct unavailable")
            message = f"Slurm job {jid} is not known to {where}, and the trial recorded no result (lost)"
            slurm_state = "UNKNOWN"
        else:
            slurm_state = row.state
            message = f"Slurm job {jid} ended as {row.detail} without the trial recording a result"
        error = {
            "class": f"Slurm{slurm_state.title().replace('_', '')}",
            "message": message,
            "slurm_state": slurm_state,
        }
        new = {**fresh, "state": FAILED, "error": error, "slurm_state": row.detail if row else slurm_state}
        if persist:
            new = write_status(
                layout.trial(tid),
                FAILED,
                durable=False,
                error=error,
                ended_at=now_iso(),
                slurm_state=new["slurm_state"],
            )
        out[tid] = new
    return out
