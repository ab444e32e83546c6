"""The one place that decides what became of a trial whose record says it is still active.

Records are the truth for finished trials. An active record is checked against its process:

* **local** (and inline) ``running``: the claim lock tells whether a live process still trains it (the kernel
  drops the lock when the process dies, SIGKILL included); where the file system cannot tell, the pid on this
  host. Gone → ``cancelled`` when someone asked it to stop (Ctrl-C, ``vlsm-batch cancel``), else ``failed``
  (``LostProcess``).
* **Slurm** ``pending``/``running``/``requeued`` with a job id: ``squeue`` (then ``sacct``). Queued or running
  there → shown as such (a task Slurm put back in the queue after a hard kill shows ``requeued``); ended there
  without a record → ``cancelled`` when Slurm says CANCELLED (scancel, ``vlsm-batch cancel``), else ``failed``
  with Slurm's state as the reason. ``squeue -t all`` answers for MinJobAge after the end, ``sacct`` (when
  accounting is on) for ever; a job neither knows is lost. Without a controller nothing is decided.

``persist=True`` writes each verdict through the store (guarded by the attempt it judged, so a verdict never
lands on a newer attempt); ``False`` only returns it (analysis, plan).
"""

from __future__ import annotations

import dataclasses
import socket
import sys

from ..layout import StudyLayout
from . import cluster, store
from .locks import pid_alive
from .store import PENDING, REQUEUED, RUNNING, IllegalTransition, TrialRecord, now_iso

LOCAL_EXECUTORS = ("local", "inline")


def local_process_gone(layout: StudyLayout, tid: str, record: TrialRecord) -> bool:
    """True when no live process trains this local ``running`` trial any more."""
    held = store.claim_held(layout.trial(tid))
    if held is not None:
        return not held
    if record.host == socket.gethostname() and isinstance(record.pid, int):
        return not pid_alive(record.pid)
    return False  # another host and no lock information: cannot tell, keep what the record says


def _verdict(
    layout: StudyLayout, tid: str, record: TrialRecord, event: str, error: dict[str, object], persist: bool, **extra
) -> TrialRecord:
    fields = {"ended_at": now_iso(), "error": error, **extra}
    if persist:
        try:
            return store.transition(
                layout.trial(tid), event, durable=False, by="reconcile", expect_attempt=record.attempt, **fields
            )
        except IllegalTransition:  # the process wrote its own result meanwhile, or a new attempt started
            return store.read(layout.trial(tid))
        except OSError:  # a full or read-only disk: still report the verdict
            pass
    target = store.TRANSITIONS[event][1]
    known = {k: v for k, v in fields.items() if hasattr(record, k)}
    return dataclasses.replace(record, state=target or record.state, **known)


def _local(layout: StudyLayout, tid: str, record: TrialRecord, persist: bool) -> TrialRecord:
    if not local_process_gone(layout, tid, record):
        return record
    stop = record.stop_request or {}
    if stop:
        message = f"stopped by {stop.get('by', 'the user')} before it could record the outcome"
        return _verdict(layout, tid, record, "cancel", {"class": "Cancelled", "message": message}, persist)
    message = (
        f"process {record.pid} on {record.host} ended without recording a result (killed, or out of memory?); "
        "`vlsm-batch logs TRIAL` shows its last lines"
    )
    return _verdict(layout, tid, record, "fail", {"class": "LostProcess", "message": message}, persist)


def _needs_slurm(record: TrialRecord) -> bool:
    return record.executor == "slurm" and record.state in (PENDING, RUNNING, REQUEUED) and bool(record.job_id)


def reconcile(layout: StudyLayout, records: dict[str, TrialRecord], persist: bool = True) -> dict[str, TrialRecord]:
    """``records`` (trial id → record) with every active one judged; returns a new dict.

    With ``persist``, the cells' Optuna journals (tpe, pruners) follow the verdicts: a trial found gone has its
    Optuna trial marked FAIL (:mod:`vlsm_batch.jobs.journals`).
    """
    out = _judge(layout, records, persist)
    if persist:
        from .journals import has_journals, reconcile_journals

        if has_journals(layout):
            try:
                reconcile_journals(layout, out)
            except OSError as exc:  # a read-only or full disk: the records stay the truth
                print(f"warning: could not update the Optuna journals: {exc}", file=sys.stderr)
    return out


def _judge(layout: StudyLayout, records: dict[str, TrialRecord], persist: bool) -> dict[str, TrialRecord]:
    out = dict(records)
    for tid, rec in records.items():
        if rec.state == RUNNING and rec.executor in LOCAL_EXECUTORS:
            out[tid] = _local(layout, tid, rec, persist)
    todo = {tid: rec for tid, rec in out.items() if _needs_slurm(rec)}
    if not todo:
        return out
    job_ids = [str(rec.job_id) for rec in todo.values()]
    queue = cluster.squeue_states(job_ids)
    if queue is None:  # no controller: nothing can be said
        return out
    acct = None
    if any(str(rec.job_id) not in queue for rec in todo.values()):
        acct = cluster.sacct_states(job_ids)
    for tid, rec in todo.items():
        jid = str(rec.job_id)
        row = queue.get(jid) or (acct or {}).get(jid)
        if row is not None and row.state not in cluster.TERMINAL:
            running = row.state in cluster.ACTIVE_RUNNING
            shown = RUNNING if running else (REQUEUED if rec.state in (RUNNING, REQUEUED) else PENDING)
            out[tid] = dataclasses.replace(rec, state=shown, slurm_state=row.detail)
            continue
        fresh = store.read(layout.trial(tid))  # the task may have written its result meanwhile
        if not _needs_slurm(fresh) or str(fresh.job_id) != jid:
            out[tid] = fresh
            continue
        if row is None:
            where = "squeue" + (" or sacct" if acct is not None else "; sacct unavailable")
            message = f"Slurm job {jid} is not known to {where}, and the trial recorded no result (lost)"
            slurm_state, detail = "UNKNOWN", "UNKNOWN"
        else:
            slurm_state, detail = row.state, row.detail
            message = f"Slurm job {jid} ended as {row.detail} without the trial recording a result"
        if slurm_state == "CANCELLED":
            who = (fresh.stop_request or {}).get("by") or "scancel"
            error: dict[str, object] = {
                "class": "Cancelled",
                "message": f"cancelled ({who}); Slurm: {detail}",
                "slurm_state": "CANCELLED",
            }
            out[tid] = _verdict(layout, tid, fresh, "cancel", error, persist, slurm_state=detail)
            continue
        error = {
            "class": f"Slurm{slurm_state.title().replace('_', '')}",
            "message": message,
            "slurm_state": slurm_state,
        }
        out[tid] = _verdict(layout, tid, fresh, "fail", error, persist, slurm_state=detail)
    return out
