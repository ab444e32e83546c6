"""What a job runs: claim one trial (or each trial of a pack), train it, and record how it ended through the store.

One place decides what each signal means to a running trial:

=========  =====================================  ============================================================
signal     sent by                                recorded
=========  =====================================  ============================================================
SIGINT     Ctrl-C (the terminal's process group)  ``cancelled`` (checkpoints kept; the same submit resumes)
SIGHUP     the terminal closing                   ``cancelled``
SIGTERM    local: ``vlsm-batch cancel``           ``cancelled``
SIGTERM    Slurm: ``scontrol requeue``,           ``requeued`` when Slurm put the job back in the queue (its
           preemption, ``scancel``                restart count grew), ``cancelled`` for scancel / vlsm-batch
                                                  cancel (with Slurm's state)
SIGUSR2    submitit, before the time limit        ``requeued`` (submitit requeues the task), or ``failed`` with
                                                  the attempt limit and how to raise it
=========  =====================================  ============================================================

A trial with an Optuna trial (``search.method: tpe``, or a pruner) asks for it after the claim (a requeued
attempt re-attaches to the one its config.json names), reports its objective every epoch through the training's
pruning callback, and tells the outcome: complete, pruned (the record goes to ``pruned`` with the epoch), or
fail for a failed or cancelled attempt (a requeue keeps it running).

A stop never loses more than the epoch in progress: checkpoints are written at every epoch end, and the next
attempt resumes from the last one. A process that loses the claim (another process trains the trial, or the
record names another job) exits cleanly saying why.

A pack (``resources.pack``: :func:`run_pack_task`, :class:`PackTask`) is several trials in one process. Each
member is claimed, attached to its Optuna trial and recorded on its own, as soon as the pack's training says it
ended (done, pruned, failed, or cancelled alone through its record's ``stop_request``: ``vlsm-batch cancel
--trial``). A signal stops the whole pack: every member not ended yet is recorded as the table says, exactly as a
trial alone, and resumes from its own last checkpoint.

This module is pickled by reference on the submitting side, so it imports nothing heavy: the training stack is
imported inside :func:`run_trial_task` and :func:`run_pack_task`, on the compute node.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..layout import TrialPaths
from . import store
from .store import ClaimRefused, IllegalTransition, now_iso

# Set by TrialTask.checkpoint (inside submitit's USR2 handler) just before submitit requeues the job and exits.
_requeue_reason: str | None = None
_attempt_limit: str | None = None
_stop: dict[str, Any] | None = None  # the first stop signal this process received: {signal, at}
_finishing = False  # recording the outcome: later signals are noted, never raised into that code
_scontrol_cache: dict[str, str | None] = {}  # Slurm's answer about this job after a stop signal
_member_limits: dict[str, str] = {}  # pack members over their attempt limit at USR2: trial id -> message


class StopSignal(BaseException):
    """Raised (once) into the training code when SIGTERM/SIGHUP asks the process to stop."""


def _job_id() -> str | None:
    for var in ("SLURM_ARRAY_JOB_ID", "SLURM_JOB_ID", "VLSM_LOCAL_JOB_ID", "SUBMITIT_LOCAL_JOB_ID"):
        if os.environ.get(var):
            if var == "SLURM_ARRAY_JOB_ID":
                return f"{os.environ[var]}_{os.environ.get('SLURM_ARRAY_TASK_ID', '0')}"
            return os.environ[var]
    return None


def _on_signal(signum: int, frame: Any) -> None:
    global _stop
    first = _stop is None
    if first:
        _stop = {"signal": signal.Signals(signum).name, "at": now_iso()}
    print(f"received {signal.Signals(signum).name}: stopping after recording the trial's state", file=sys.stderr)
    if not first or _finishing:
        return
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise StopSignal(signal.Signals(signum).name)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def install_signal_handlers() -> dict[int, Any]:
    """SIGINT, SIGTERM and SIGHUP stop the trial (Lightning adds its own SIGTERM notifier on top during fit and
    calls this one too); submitit's SIGUSR2 handler is left as it is. Returns the previous handlers."""
    global _stop, _finishing
    _stop, _finishing = None, False
    _scontrol_cache.clear()
    _member_limits.clear()
    previous: dict[int, Any] = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig in STOP_SIGNALS:
        signal.signal(sig, _on_signal)
    return previous


def _slurm_stop_kind(record: store.TrialRecord) -> tuple[str, str]:
    """("requeue" | "cancel", why) for a SIGTERM under Slurm: requeued iff Slurm's restart count grew."""
    from .cluster import slurm_cmd

    if (record.stop_request or {}).get("by"):
        return "cancel", f"cancelled with {record.stop_request['by']}"  # type: ignore[index]
    job = os.environ.get("SLURM_JOB_ID")
    if job and job not in _scontrol_cache:  # one question per stop, however many members the pack has
        _scontrol_cache[job] = slurm_cmd(["scontrol", "show", "job", "-o", job], timeout_s=8)
    text = _scontrol_cache.get(job) if job else None
    if text is None:
        return "requeue", "SIGTERM from Slurm (Slurm did not say why): will resume when Slurm runs it again"
    fields = dict(kv.split("=", 1) for kv in text.split() if "=" in kv)
    restarts = int(fields.get("Restarts", "0") or 0)
    mine = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    if restarts > mine:
        return "requeue", "requeued by Slurm (scontrol requeue or preemption): resumes from its last epoch"
    state, reason = fields.get("JobState", "?"), fields.get("Reason", "")
    if state in ("TIMEOUT", "PREEMPTED") or "TimeLimit" in reason or "Preempt" in reason:
        return "requeue", f"stopped by Slurm ({state}, {reason or 'no reason given'}): resumes when requeued"
    return "cancel", "cancelled on Slurm (scancel)" + ("" if state == "COMPLETING" else f"; job state {state}")


def _outcome(exc: BaseException, paths: TrialPaths, executor: str) -> tuple[str, str, str | None]:
    """("requeue" | "cancel" | "fail", message, error class) for the exception that ended training."""
    if _requeue_reason is not None:
        return "requeue", _requeue_reason, None
    if _attempt_limit is not None:
        return "fail", _attempt_limit, "AttemptLimit"
    sig = (_stop or {}).get("signal")
    if sig in ("SIGINT", "SIGHUP") or (sig is None and isinstance(exc, KeyboardInterrupt)):
        return "cancel", f"stopped by {sig or 'KeyboardInterrupt'} (Ctrl-C or the terminal closing)", None
    if sig == "SIGTERM":
        if executor == "slurm":
            kind, why = _slurm_stop_kind(store.read(paths))
            return kind, why, None
        request = store.read(paths).stop_request or {}
        if request.get("kind") == "timeout":
            return "fail", f"stopped by {request.get('by')}: raise resources.timeout_min", "Timeout"
        return "cancel", f"stopped by SIGTERM ({request.get('by') or 'kill'})", None
    return "fail", "", None


def run_trial_task(
    trial_dir: str, executor: str = "local", train: Any = None, job_id: str | None = None
) -> dict[str, Any]:
    """Claim and train the trial in ``trial_dir``; record done | failed | cancelled | requeued.

    ``train(trial_root) -> metrics`` defaults to the real training. Returns the metrics, or
    ``{"skipped": why}`` when this process must not train the trial (claim refused: not an error). Re-raises
    what ended a failed or requeued attempt, so the executor sees it (submitit's requeue needs its SystemExit).
    """
    previous = install_signal_handlers()
    try:
        return _run(TrialPaths(Path(trial_dir)), executor, train, job_id or _job_id())
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(paths: TrialPaths, executor: str, train: Any, job_id: str | None) -> dict[str, Any]:
    global _finishing
    try:
        claim = store.claim(paths, job_id, executor)
    except ClaimRefused as why:
        print(str(why), file=sys.stderr, flush=True)
        return {"skipped": str(why)}
    except (KeyboardInterrupt, StopSignal):  # stopped before it began: the record still says pending
        print(f"trial {paths.root.name} stopped before it started", file=sys.stderr, flush=True)
        return {"cancelled": "stopped before it started"}
    started = time.time()
    search: dict[str, Any] | None = None
    try:
        search = _attach_search(paths, claim.record)
        if train is None:
            from ..training.entry import train_trial as train  # heavy: torch, Lightning, transformers

        metrics = train(paths.root)
    except BaseException as exc:
        _finishing = True
        pruned = _pruned_epoch(paths) if search else None
        if pruned is not None and type(exc).__name__ == "TrialPruned":  # a stand-in training raised Optuna's signal
            return _record_pruned(paths, claim, search, pruned, started, {})
        kind, message, error_class = _outcome(exc, paths, executor)
        _record_end(paths, kind, message, error_class, exc, started)
        if search and kind != "requeue":  # a requeued attempt continues the same Optuna trial
            _tell(paths, search, "fail")
        claim.release()
        if kind == "cancel":
            return {"cancelled": message}
        raise
    _finishing = True
    pruned = _pruned_epoch(paths) if search else None
    if pruned is not None:
        return _record_pruned(paths, claim, search, pruned, started, metrics)
    _record_done(paths, claim, search, started, metrics)
    return metrics


def _record_done(
    paths: TrialPaths, claim: store.Claim, search: dict[str, Any] | None, started: float, metrics: Any
) -> None:
    """Done: Optuna told the objective, the record finished, the claim released."""
    try:
        if search:
            from ..search.optuna_study import objective_value

            _tell(paths, search, "complete", objective_value(metrics, search["optuna"]))
        store.transition(paths, "finish", ended_at=now_iso(), wall_time_s=round(time.time() - started, 2))
    except IllegalTransition as exc:  # cannot happen while we hold the claim; say so rather than hide it
        print(f"could not record the result: {exc}", file=sys.stderr, flush=True)
    finally:
        claim.release()


def _attach_search(paths: TrialPaths, record: store.TrialRecord) -> dict[str, Any] | None:
    """Ask (or re-attach to) this trial's Optuna trial when it has one (tpe, or a pruner): the sampled values go
    into config.json and the record (``optuna_trial``, ``params``) before training starts."""
    from ..layout import read_json

    config = read_json(paths.config) or {}
    if not config.get("optuna"):
        return None
    from ..search.optuna_study import attach  # imports Optuna: only trials that use it pay for it

    attached = attach(paths.root, attempt=record.attempt)
    verb = "continues" if attached.reattached else "asked"
    print(f"trial {paths.root.name} {verb} Optuna trial {attached.number}: {attached.params}", flush=True)
    store.transition(paths, "progress", optuna_trial=attached.number, params=attached.params)
    return {"optuna": config["optuna"], "number": attached.number}


def _pruned_epoch(paths: TrialPaths) -> int | None:
    from ..search.optuna_study import pruned_epoch

    return pruned_epoch(paths.root)


def _tell(paths: TrialPaths, search: dict[str, Any], state: str, value: float | None = None) -> None:
    from ..search.optuna_study import study_root_of, tell

    try:
        tell(study_root_of(paths.root), search["optuna"], search["number"], state, value)
    except Exception as exc:  # the record is the truth; reconcile repairs the journal later
        print(f"could not tell Optuna trial {search['number']} ({state}): {exc}", file=sys.stderr, flush=True)


def _record_pruned(
    paths: TrialPaths, claim: store.Claim, search: Any, epoch: int, started: float, metrics: dict[str, Any]
) -> dict[str, Any]:
    """Pruned: finished, not failed; checkpoints, history and metrics stay as they are."""
    try:
        _tell(paths, search, "pruned")
        store.transition(
            paths, "prune", ended_at=now_iso(), wall_time_s=round(time.time() - started, 2), pruned_epoch=epoch
        )
        print(f"trial {paths.root.name} pruned at epoch {epoch}", file=sys.stderr, flush=True)
    except IllegalTransition as exc:
        print(f"could not record the result: {exc}", file=sys.stderr, flush=True)
    finally:
        claim.release()
    return {**metrics, "pruned_epoch": epoch}


def _error_of(exc: BaseException) -> dict[str, Any]:
    tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
    return store.error_record(exc, "".join(tb).rstrip().splitlines()[-25:])


def _record_end(
    paths: TrialPaths, kind: str, message: str, error_class: str | None, exc: BaseException, started: float
) -> None:
    error = None
    if kind not in ("requeue", "cancel"):
        error = _error_of(exc)
        if message:
            error = {**error, "class": error_class or "Stopped", "message": message}
    _write_end(paths, kind, message, error, started, f"{message or type(exc).__name__}: {exc}")


def _write_end(
    paths: TrialPaths, kind: str, message: str, error: dict[str, Any] | None, started: float, what: str
) -> None:
    """Record requeued | cancelled (``message`` says why) | failed (``error``); a failed write goes to the log."""
    wall = round(time.time() - started, 2)
    try:
        if kind == "requeue":
            store.transition(paths, "requeue", requeue_reason=message, ended_at=now_iso(), wall_time_s=wall)
            print(f"trial {paths.root.name} requeued: {message}", file=sys.stderr, flush=True)
        elif kind == "cancel":
            error = {"class": "Cancelled", "message": message}
            store.transition(paths, "cancel", ended_at=now_iso(), wall_time_s=wall, error=error, by=message)
            print(f"trial {paths.root.name} cancelled: {message}", file=sys.stderr, flush=True)
        else:
            error = error or {"class": "Failed", "message": message}
            store.transition(paths, "fail", ended_at=now_iso(), wall_time_s=wall, error=error)
            print(f"trial {paths.root.name} failed: {error['class']}: {error['message']}", file=sys.stderr, flush=True)
    except (OSError, IllegalTransition) as write_error:  # e.g. the disk is full: the verdict goes to the log
        print(
            f"trial {paths.root.name} ended ({kind}: {what}) but its record could not be written: {write_error}",
            file=sys.stderr,
            flush=True,
        )


class TrialTask:
    """What a Slurm array task runs: a submitit Checkpointable around :func:`run_trial_task`.

    On USR2 (time limit or preemption notice) submitit calls :meth:`checkpoint`; returning a resubmission makes
    submitit requeue the task (``scontrol requeue``), and the next attempt resumes from the trial's last epoch
    checkpoint on disk (Lightning's own SLURM requeue is off, see ``training.entry.slurm_plugins``). Attempts per
    submission are capped (``max_attempts`` in the record).
    """

    def __init__(self, train: Any = None) -> None:
        self.train = train

    def __call__(self, trial_dir: str, executor: str = "slurm") -> dict[str, Any]:
        return run_trial_task(trial_dir, executor, train=self.train)

    def checkpoint(self, trial_dir: str, executor: str = "slurm") -> Any:
        global _requeue_reason, _attempt_limit
        from submitit.helpers import DelayedSubmission

        record = store.read(TrialPaths(Path(trial_dir)))
        limit = _attempt_limit_reached(record)
        if limit is not None:
            _attempt_limit = limit
            print(_attempt_limit, file=sys.stderr, flush=True)
            return None  # submitit then raises UncompletedJobError; run_trial_task records the limit
        _requeue_reason = USR2_REQUEUE
        used = record.attempt - record.attempt_base
        print(f"requeueing trial {Path(trial_dir).name} after attempt {used}", file=sys.stderr, flush=True)
        return DelayedSubmission(self, trial_dir, executor)


USR2_REQUEUE = "time limit or preemption notice (USR2): requeued, resumes from its last epoch"


def _attempt_limit_reached(record: store.TrialRecord) -> str | None:
    """The attempt-limit message when a USR2 stop must not requeue this trial again (None: requeue it)."""
    cap = int(record.max_attempts or 0)
    used = record.attempt - record.attempt_base
    if not (cap and used >= cap):
        return None
    return (
        f"attempt limit reached: the trial was stopped by the time limit or preemption in each of its {used} "
        f"attempts (max_attempts={cap}, set by VLSM_MAX_ATTEMPTS at submit time). Raise resources.timeout_min "
        "so that an attempt can finish, or raise VLSM_MAX_ATTEMPTS, then `vlsm-batch submit SPEC "
        "--retry-failed`: it resumes from its last epoch"
    )


# --- packs: several trials of one cell in one process (resources.pack) --------------------------------------------

STOP_POLL_S = 1.0  # a running member's record is read at most this often for a stop request of its own


@dataclass
class _Member:
    """One claimed trial of a running pack."""

    paths: TrialPaths
    claim: store.Claim
    started: float
    search: dict[str, Any] | None = None
    ended: bool = False
    checked: float = -math.inf  # monotonic time of the last stop-request read
    stop: str | None = None  # the stop request once seen (then returned at every poll)


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Record a member's end without a stop signal tearing the writes apart; a signal that arrived meanwhile is
    raised once they are done, into the pack's training (a pack-wide stop)."""
    global _finishing
    before, was = _stop, _finishing
    _finishing = True
    try:
        yield
    finally:
        _finishing = was
    if not was and before is None and _stop is not None:
        if _stop["signal"] == "SIGINT":
            raise KeyboardInterrupt
        raise StopSignal(_stop["signal"])


class StoreEvents:
    """``training.pack.PackEvents`` for the jobs side: a member's own stop request in, its end recorded at once."""

    def __init__(self, members: dict[str, _Member], results: dict[str, dict[str, Any]]) -> None:
        self.members, self.results = members, results

    def _member(self, trial_root: Path) -> _Member | None:
        return self.members.get(Path(trial_root).name)

    def stop_reason(self, trial_root: Path) -> str | None:
        """Why this member alone must stop (``vlsm-batch cancel --trial``), else None; the record is read at most
        every :data:`STOP_POLL_S`. A local time-limit request is left to the SIGTERM that follows it (a failure,
        not a cancel)."""
        m = self._member(trial_root)
        if m is None or m.ended:
            return None
        if m.stop is None and time.monotonic() - m.checked >= STOP_POLL_S:
            m.checked = time.monotonic()
            try:
                request = store.read(m.paths).stop_request or {}
            except OSError:
                request = {}
            if request and request.get("kind") != "timeout":
                m.stop = f"stopped by {request.get('by') or 'a stop request'}"
        return m.stop

    def ended(self, trial_root: Path, end: Any) -> None:
        """Record ``end`` (a ``training.pack.MemberEnd``) through the store, tell Optuna, release the claim."""
        m = self._member(trial_root)
        if m is None or m.ended:
            print(f"pack: a second end for {Path(trial_root).name} ignored ({end.kind})", file=sys.stderr, flush=True)
            return
        with _signals_deferred():
            m.ended = True
            try:
                self.results[m.paths.root.name] = _record_member_end(m, end)
            except Exception as exc:  # one member's record must never stop the others (e.g. a full disk)
                print(f"trial {m.paths.root.name} ended ({end.kind}) but recording it failed: {exc}", file=sys.stderr)
                self.results[m.paths.root.name] = {"failed": f"recording its end failed: {exc}"}
                m.claim.release()


def _record_member_end(m: _Member, end: Any) -> dict[str, Any]:
    """One member's end as the solo task records it: done | pruned | failed | cancelled."""
    paths, kind = m.paths, str(getattr(end, "kind", ""))
    metrics = getattr(end, "metrics", None) or {}
    if kind in ("done", "pruned"):
        epoch = getattr(end, "pruned_epoch", None) if kind == "pruned" else None
        if epoch is None and m.search:
            epoch = _pruned_epoch(paths)  # the Reporter's marker: pruned, even if the runner said done
        if epoch is None and kind == "pruned":
            epoch = int(store.read(paths).epoch or 0)
        if epoch is not None:
            _record_pruned(paths, m.claim, m.search, int(epoch), m.started, metrics)
            return {"pruned": int(epoch)}
        _record_done(paths, m.claim, m.search, m.started, metrics)
        return {"done": metrics}
    message = str(getattr(end, "message", "") or "")
    try:
        if kind == "cancelled":
            message = message or "stopped alone in its pack"
            _write_end(paths, "cancel", message, None, m.started, message)
            return {"cancelled": message}
        exc = getattr(end, "error", None)
        if isinstance(exc, BaseException):
            error = _error_of(exc)
            if message and not error["message"]:
                error["message"] = message
        else:
            error = {"class": "Failed", "message": message or f"ended as {kind or 'nothing'} (no error given)"}
        _write_end(paths, "fail", error["message"], error, m.started, f"{error['class']}: {error['message']}")
        return {"failed": error["message"]}
    finally:
        if m.search:
            _tell(paths, m.search, "fail")
        m.claim.release()


def _member_outcome(exc: BaseException, paths: TrialPaths, executor: str) -> tuple[str, str, str | None]:
    """What a pack-wide stop means to one unfinished member (its own attempt limit first)."""
    limit = _member_limits.get(paths.root.name)
    if limit is not None:
        return "fail", limit, "AttemptLimit"
    return _outcome(exc, paths, executor)


def run_pack_task(
    trial_dirs: Sequence[str | Path], executor: str = "local", train: Any = None, job_id: str | None = None
) -> dict[str, dict[str, Any]]:
    """Claim and train the trials of one pack in this process; record each one's end as soon as it ends.

    One trial with the real training is :func:`run_trial_task` (the solo Lightning path). Otherwise ``train(roots,
    events) -> None`` (default ``training.pack.train_pack``) trains every claimed member, asking
    :class:`StoreEvents` whether a member must stop alone and telling it each member's end. A pack-wide stop
    (signal, requeue) records every member not ended yet as :func:`_outcome` says, as for one trial, and is
    re-raised unless it only cancelled. Returns trial id -> {done | pruned | failed | cancelled | requeued |
    skipped: detail}.
    """
    dirs = [Path(d) for d in trial_dirs]
    if len(dirs) == 1 and train is None:
        return {dirs[0].name: _solo_result(run_trial_task(str(dirs[0]), executor, None, job_id))}
    previous = install_signal_handlers()
    try:
        return _run_pack([TrialPaths(d) for d in dirs], executor, train, job_id or _job_id())
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _solo_result(result: dict[str, Any]) -> dict[str, Any]:
    if "skipped" in result or "cancelled" in result:
        return result
    if "pruned_epoch" in result:
        return {"pruned": result["pruned_epoch"]}
    return {"done": result}


def _run_pack(pack: list[TrialPaths], executor: str, train: Any, job_id: str | None) -> dict[str, dict[str, Any]]:
    global _finishing
    results: dict[str, dict[str, Any]] = {}
    members: dict[str, _Member] = {}
    try:
        for paths in pack:
            try:
                claim = store.claim(paths, job_id, executor)
            except ClaimRefused as why:  # done, cancelled meanwhile, or trained elsewhere: the others go on
                print(str(why), file=sys.stderr, flush=True)
                results[paths.root.name] = {"skipped": str(why)}
                continue
            members[paths.root.name] = _Member(paths, claim, time.time())
        if len(members) > 1:  # who shares this process now (the launch may have raced the task's start)
            for m in members.values():
                try:
                    store.transition(m.paths, "progress", durable=False, pack=list(members))
                except (OSError, IllegalTransition) as exc:
                    print(f"could not record the pack of {m.paths.root.name}: {exc}", file=sys.stderr, flush=True)
        events = StoreEvents(members, results)
        for m in members.values():
            try:
                m.search = _attach_search(m.paths, m.claim.record)
            except Exception as exc:  # its Optuna study cannot be read or written: it fails alone
                with _signals_deferred():
                    m.ended = True
                    error = _error_of(exc)
                    _write_end(m.paths, "fail", error["message"], error, m.started, f"{type(exc).__name__}: {exc}")
                    m.claim.release()
                    results[m.paths.root.name] = {"failed": error["message"]}
        live = [m for m in members.values() if not m.ended]
        if not live:
            return results
        if train is None:
            from ..training.pack import train_pack as train  # heavy: torch, transformers

        ids = ", ".join(m.paths.root.name for m in live)
        print(f"pack of {len(live)} trial(s) in one process (job {job_id}): {ids}", file=sys.stderr, flush=True)
        train([m.paths.root for m in live], events)
    except BaseException as exc:
        _finishing = True
        kinds = []
        for m in members.values():
            if m.ended:
                continue
            m.ended = True
            kind, message, error_class = _member_outcome(exc, m.paths, executor)
            kinds.append(kind)
            _record_end(m.paths, kind, message, error_class, exc, m.started)
            if m.search and kind != "requeue":  # a requeued attempt continues the same Optuna trial
                _tell(m.paths, m.search, "fail")
            m.claim.release()
            key = {"cancel": "cancelled", "requeue": "requeued"}.get(kind, "failed")
            results[m.paths.root.name] = {key: message or f"{type(exc).__name__}: {exc}"}
        for paths in pack:  # not claimed yet: the record still says pending
            results.setdefault(paths.root.name, {"cancelled": "stopped before it started"})
        stopped = isinstance(exc, (KeyboardInterrupt, StopSignal))
        if (kinds and all(k == "cancel" for k in kinds)) or (not kinds and stopped):
            return results
        raise
    _finishing = True
    for m in members.values():  # the training returned without an end for it: say so rather than leave it running
        if not m.ended:
            m.ended = True
            message = "the pack's training returned without reporting this trial's end"
            error = {"class": "PackMemberLost", "message": message}
            _write_end(m.paths, "fail", message, error, m.started, message)
            if m.search:
                _tell(m.paths, m.search, "fail")
            m.claim.release()
            results[m.paths.root.name] = {"failed": message}
    return results


class PackTask:
    """What a Slurm array task of a pack runs: :func:`run_pack_task`, Checkpointable like :class:`TrialTask`.

    On USR2 the whole pack is requeued with its members that are still active; a member that has used up its
    attempts fails alone (AttemptLimit) and the others are requeued. ``train`` is a pack training
    ``(roots, events)`` (tests' stand-ins); None is the real one.
    """

    def __init__(self, train: Any = None) -> None:
        self.train = train

    def __call__(self, trial_dirs: Sequence[str], executor: str = "slurm") -> dict[str, dict[str, Any]]:
        return run_pack_task(list(trial_dirs), executor, train=self.train)

    def checkpoint(self, trial_dirs: Sequence[str], executor: str = "slurm") -> Any:
        global _requeue_reason, _attempt_limit
        from submitit.helpers import DelayedSubmission

        again = []
        for d in trial_dirs:
            record = store.read(TrialPaths(Path(d)))
            if record.state not in store.ACTIVE:
                continue  # ended in the pack already
            limit = _attempt_limit_reached(record)
            if limit is not None:
                _member_limits[Path(d).name] = limit
                print(f"trial {Path(d).name}: {limit}", file=sys.stderr, flush=True)
            else:
                again.append(str(d))
        if not again:
            _attempt_limit = next(iter(_member_limits.values()), None)
            return None  # submitit then raises UncompletedJobError; run_pack_task records each member
        _requeue_reason = USR2_REQUEUE
        print(f"requeueing the pack ({len(again)} trial(s)): {', '.join(Path(d).name for d in again)}", flush=True)
        return DelayedSubmission(self, again, executor)
