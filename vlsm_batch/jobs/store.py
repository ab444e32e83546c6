"""The trial store: the one owner of every trial's on-disk record (``trials/<id>/status.json``).

Every writer in the project goes through the named transitions below; each one re-reads the record under the
trial's record lock, refuses what is illegal (:class:`IllegalTransition`) and writes the new record atomically.

    new ──submit──▶ pending ──claim──▶ running ──finish──▶ done
      ▲               │  ▲               │ │ │ └──prune───▶ pruned
      │               │  └──(requeued)◀──┘ │ └──fail────▶ failed ──submit (--retry-failed)──▶ pending
      │               └──cancel / fail     └──cancel────▶ cancelled ──submit──▶ pending

``done`` and ``pruned`` are final: no late failure, cancel or resubmission overwrites them. A running trial is
never claimed twice: :func:`claim` takes the trial's claim lock (``claim.lock``, held by the training process
for its lifetime and released by the kernel when it dies, see :mod:`.locks`) before it moves the record to
running, and checks that the record names the claimant's job. Whether a trial whose process is gone is "lost"
is decided in one place, :mod:`.reconcile`.

The record is plain JSON (:class:`TrialRecord` lists its fields); paths inside it are relative to the study
folder, so a moved study keeps its meaning.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import errno
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from ..errors import VlsmBatchError
from ..layout import TrialPaths, atomic_write_json, read_json
from .locks import FileLock, LockBusy, is_locked


class State(str, Enum):
    NEW = "new"  # in trials.jsonl, never submitted
    PENDING = "pending"  # submitted: queued on Slurm or waiting for a local slot
    RUNNING = "running"  # a process holds the claim and trains it
    REQUEUED = "requeued"  # stopped by Slurm (requeue, preemption, time limit) with its checkpoint; will run again
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"  # by the user (Ctrl-C, vlsm-batch cancel, scancel); checkpoints kept, submit resumes it
    PRUNED = "pruned"  # stopped early by a pruner: finished, not failed, never retried

    def __str__(self) -> str:
        return self.value


NEW, PENDING, RUNNING, REQUEUED = State.NEW, State.PENDING, State.RUNNING, State.REQUEUED
DONE, FAILED, CANCELLED, PRUNED = State.DONE, State.FAILED, State.CANCELLED, State.PRUNED
STATES = tuple(State)
ACTIVE = frozenset({PENDING, RUNNING, REQUEUED})  # a process may still touch it
FINAL = frozenset({DONE, PRUNED})  # nothing ever changes them

# event -> (states it may start from, state it ends in; None: unchanged)
TRANSITIONS: dict[str, tuple[frozenset[State], State | None]] = {
    "submit": (frozenset({NEW, PENDING, CANCELLED, FAILED}), PENDING),
    "assign": (frozenset({PENDING}), None),  # the job id (Slurm task or local launch) that will run it
    "claim": (frozenset({PENDING, REQUEUED, RUNNING}), RUNNING),  # RUNNING: only its own job, after a hard kill
    "requeue": (frozenset({RUNNING}), REQUEUED),
    "finish": (frozenset({RUNNING}), DONE),
    "fail": (frozenset({PENDING, RUNNING, REQUEUED}), FAILED),
    "cancel": (frozenset({PENDING, RUNNING, REQUEUED}), CANCELLED),
    "prune": (frozenset({RUNNING}), PRUNED),
    "stop_request": (ACTIVE, None),  # cancel asked a running process to stop; it records the outcome
    "observe": (ACTIVE, None),  # what Slurm says of a queued task (slurm_state), nothing else
    "progress": (frozenset({RUNNING}), None),  # the running process's own notes (epoch)
}
EVENTS_KEPT = 30


class IllegalTransition(VlsmBatchError):
    """A transition the state machine forbids (e.g. failing a done trial); the record is unchanged."""

    def __init__(self, trial: str, event: str, state: State, why: str = ""):
        self.trial, self.event, self.state = trial, event, state
        super().__init__(f"trial {trial}: cannot {event} a trial that is {state}" + (f" ({why})" if why else ""))


class ClaimRefused(VlsmBatchError):
    """Another process trains this trial, or the record names another job: this process must not train it."""


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class TrialRecord:
    """What ``status.json`` holds. Unknown keys (older or newer versions) are kept in ``extra``."""

    state: State = NEW
    attempt: int = 0  # the current attempt's number (every claim that passed the record checks)
    starts: int = 0  # how many times training began
    executor: str | None = None
    job_id: str | None = None  # Slurm task id (<array>_<index>) or local launch id
    host: str | None = None
    pid: int | None = None
    submitted_at: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    updated_at: str | None = None
    wall_time_s: float | None = None
    error: dict[str, Any] | None = None  # class, message, traceback_tail
    spec_version: str | None = None  # the spec version (sha256 prefix) that last submitted it
    max_attempts: int | None = None  # starts allowed per submission (Slurm requeues)
    attempt_base: int = 0  # attempt counter at submission: the cap counts from here
    requeue_reason: str | None = None  # why the last requeue happened (kept after the trial runs again)
    stop_request: dict[str, Any] | None = None  # {by, signal, at}: who asked a running trial to stop
    slurm_state: str | None = None
    epoch: int | None = None  # last finished epoch reported by the running process
    pruned_epoch: int | None = None
    pack: list[str] | None = None  # ids of the trials sharing this launch's process (resources.pack); None: alone
    log_out: str | None = None  # relative to the study folder
    log_err: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> TrialRecord:
        if not isinstance(data, dict):
            return cls()
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names}
        try:
            known["state"] = State(known.get("state", NEW))
        except ValueError:
            known["state"] = FAILED
            known["error"] = {"class": "CorruptRecord", "message": f"unknown state {data.get('state')!r}"}
        for key in ("attempt", "starts", "attempt_base"):
            try:
                known[key] = int(known.get(key) or 0)
            except (TypeError, ValueError):
                known[key] = 0
        return cls(**known, extra={k: v for k, v in data.items() if k not in names})

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        data["state"] = self.state.value
        return {**self.extra, **data}

    def get(self, key: str, default: Any = None) -> Any:
        """Dict-style read (display code treats records and plain dicts alike)."""
        if key in self.extra:
            return self.extra[key]
        return getattr(self, key, default) if key != "extra" else default


def read(paths: TrialPaths) -> TrialRecord:
    """The trial's record as written (``new`` when none): no liveness verdict, see :mod:`.reconcile`."""
    return TrialRecord.from_json(read_json(paths.status))


def _record_lock(paths: TrialPaths) -> FileLock:
    return FileLock(paths.root / "record.lock", what="a trial-record update", timeout_s=60.0)


def claim_lock_path(paths: TrialPaths) -> Path:
    return paths.root / "claim.lock"


@contextmanager
def _locked(paths: TrialPaths, durable: bool) -> Iterator[TrialRecord]:
    """Read-modify-write the record under its lock; the caller mutates the yielded record."""
    paths.root.mkdir(parents=True, exist_ok=True)
    with _record_lock(paths):
        record = read(paths)
        yield record
        record.updated_at = now_iso()
        atomic_write_json(paths.status, record.to_json(), durable=durable)


def transition(
    paths: TrialPaths,
    event: str,
    *,
    durable: bool = True,
    by: str | None = None,
    expect_attempt: int | None = None,
    expect_job: str | None = None,
    **fields: Any,
) -> TrialRecord:
    """Apply ``event`` to the trial's record (re-read under its lock) and write it; refuse illegal ones.

    ``expect_attempt``/``expect_job``: refuse when the record moved on meanwhile (a verdict about an attempt
    must not land on the next one).
    """
    allowed, target = TRANSITIONS[event]
    with _locked(paths, durable) as record:
        if record.state not in allowed:
            raise IllegalTransition(paths.root.name, event, record.state)
        if expect_attempt is not None and record.attempt != expect_attempt:
            raise IllegalTransition(paths.root.name, event, record.state, "a newer attempt owns the record")
        if expect_job is not None and record.job_id != expect_job:
            raise IllegalTransition(paths.root.name, event, record.state, f"the record names job {record.job_id}")
        before = record.state
        for key, value in fields.items():
            if key in ("state", "events", "extra"):
                raise ValueError(f"{key} is set by the store itself")
            if hasattr(record, key):
                setattr(record, key, value)
            else:
                record.extra[key] = value
        if target is not None:
            record.state = target
        if event not in ("observe", "progress"):
            entry = {"at": now_iso(), "event": event, "from": before.value, "to": record.state.value}
            if by:
                entry["by"] = by
            record.events = [*record.events, entry][-EVENTS_KEPT:]
        return record


# --- named transitions -----------------------------------------------------------------------------------------


def submit(
    paths: TrialPaths,
    executor: str,
    spec_version: str | None,
    *,
    retry_failed: bool = False,
    max_attempts: int | None = None,
    durable: bool = False,
) -> TrialRecord:
    """Queue the trial for a (new) launch; a failed trial only with ``retry_failed``."""
    current = read(paths)
    if current.state == FAILED and not retry_failed:
        raise IllegalTransition(paths.root.name, "submit", FAILED, "failed trials relaunch only with --retry-failed")
    return transition(
        paths,
        "submit",
        durable=durable,
        executor=executor,
        spec_version=spec_version,
        submitted_at=now_iso(),
        job_id=None,
        error=None,
        ended_at=None,
        slurm_state=None,
        stop_request=None,
        requeue_reason=None,
        max_attempts=max_attempts,
        attempt_base=current.attempt,
        log_out=None,
        log_err=None,
        pack=None,  # the launch that follows names its pack again (a resubmission re-packs)
    )


def assign(paths: TrialPaths, job_id: str, durable: bool = False, **fields: Any) -> TrialRecord:
    """Record the job that will run this pending trial (refused when it was cancelled meanwhile)."""
    return transition(paths, "assign", durable=durable, job_id=job_id, **fields)


@dataclass
class Claim:
    """This process's right to train one trial: hold it until the final transition, then :meth:`release`."""

    paths: TrialPaths
    lock: FileLock
    record: TrialRecord

    def release(self) -> None:
        self.lock.release()


def claim(paths: TrialPaths, job_id: str | None, executor: str, wait_s: float = 2.0) -> Claim:
    """Take the trial for this process: the claim lock first, then pending/requeued -> running.

    Raises :class:`ClaimRefused` (with the reason) when another live process holds the claim, the record names
    another job, the trial was cancelled or finished meanwhile, or the attempt limit is reached (then the record
    says failed, with the limit and how to raise it). ``wait_s`` rides out a status reader testing the lock.
    """
    lock = FileLock(claim_lock_path(paths), what=f"trial {paths.root.name} ({executor} job {job_id})")
    try:
        lock.acquire(timeout_s=wait_s)
    except LockBusy as busy:
        raise ClaimRefused(
            f"trial {paths.root.name} is already being trained by {busy.holder.get('what') or 'another process'} "
            f"(pid {busy.holder.get('pid', '?')} on {busy.holder.get('host', '?')}): this process leaves it alone"
        ) from None
    try:
        record = read(paths)
        why = _claim_problem(record, job_id)
        if why:
            raise ClaimRefused(f"trial {paths.root.name}: {why}; this process leaves it alone")
        attempt = record.attempt + 1
        if record.max_attempts and attempt - record.attempt_base > record.max_attempts:
            used = attempt - 1 - record.attempt_base
            message = (
                f"attempt limit reached: the trial started {used} times in this submission without finishing "
                f"(each start was stopped by a time limit, preemption or requeue); the limit is max_attempts="
                f"{record.max_attempts} (environment variable VLSM_MAX_ATTEMPTS at submit time). Raise "
                "resources.timeout_min so that an attempt can finish, or raise VLSM_MAX_ATTEMPTS, then run "
                "`vlsm-batch submit SPEC --retry-failed`"
            )
            transition(
                paths,
                "fail",
                ended_at=now_iso(),
                attempt=attempt - 1,
                error={"class": "AttemptLimit", "message": message},
            )
            raise ClaimRefused(message)
        record = transition(
            paths,
            "claim",
            attempt=attempt,
            starts=record.starts + 1,
            executor=executor,
            job_id=job_id or record.job_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=now_iso(),
            ended_at=None,
            error=None,
            slurm_state=None,
            expect_attempt=record.attempt,  # nothing (cancel, a verdict) changed the record since it was read
        )
    except IllegalTransition as moved:
        lock.release()
        raise ClaimRefused(f"trial {paths.root.name} changed while this process claimed it ({moved})") from None
    except BaseException:
        lock.release()
        raise
    lock.write_info(trial=paths.root.name, job_id=job_id, attempt=record.attempt)
    return Claim(paths, lock, record)


def _claim_problem(record: TrialRecord, job_id: str | None) -> str | None:
    if record.state in FINAL or record.state in (FAILED, CANCELLED, NEW):
        return f"it is {record.state} (not queued for this job)"
    if record.job_id and job_id and record.job_id != job_id:
        return f"it is queued as job {record.job_id}, not {job_id} (a duplicate queue entry)"
    if record.state == RUNNING and not (record.job_id and record.job_id == job_id):
        return "its record says running under another process"
    return None


def claim_held(paths: TrialPaths) -> bool | None:
    """Whether a live process holds the trial's claim (None: this file system cannot tell)."""
    return is_locked(claim_lock_path(paths))


def import_record(paths: TrialPaths, state: State, durable: bool = False, **fields: Any) -> TrialRecord:
    """Write the first record of a trial that ran elsewhere (fixtures, imported results); refuses to overwrite.

    The synthetic analysis study uses it: thousands of trials that never ran through a process here.
    """
    with _locked(paths, durable) as record:
        if paths.status.exists():
            raise IllegalTransition(paths.root.name, "import", record.state, "it already has a record")
        for key, value in fields.items():
            if hasattr(record, key):
                setattr(record, key, value)
            else:
                record.extra[key] = value
        record.state = State(state)
        record.events = [{"at": now_iso(), "event": "import", "from": "new", "to": record.state.value}]
        return record


# --- errors ----------------------------------------------------------------------------------------------------

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_full_cause(exc: BaseException | None) -> OSError | None:
    """The ENOSPC/EDQUOT OSError in ``exc``'s cause/context chain, if any."""
    seen = 0
    while exc is not None and seen < 20:
        if isinstance(exc, OSError) and exc.errno in DISK_FULL:
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def error_record(exc: BaseException, traceback_tail: list[str] | None = None) -> dict[str, Any]:
    """``{class, message, traceback_tail}``; a full disk becomes ``DiskFull`` naming the path it could not write."""
    full = disk_full_cause(exc)
    if full is not None:
        where = full.filename or "a file of the study"
        what = "disk quota exceeded" if full.errno == errno.EDQUOT else "no space left on device"
        message = (
            f"{what} writing {where}: free space there (or point output_dir at a larger file system), then run "
            "`vlsm-batch submit SPEC --retry-failed`; the trial resumes from its last good checkpoint"
        )
        return {"class": "DiskFull", "message": message, "path": str(where), "traceback_tail": traceback_tail or []}
    return {"class": type(exc).__name__, "message": str(exc)[:2000], "traceback_tail": traceback_tail or []}
