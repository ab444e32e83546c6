"""What a job runs: claim one trial, train it, and record how it ended through the trial store.

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

This module is pickled by reference on the submitting side, so it imports nothing heavy: the training stack is
imported inside :func:`run_trial_task`, on the compute node.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
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
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig in STOP_SIGNALS:
        signal.signal(sig, _on_signal)
    return previous


def _slurm_stop_kind(record: store.TrialRecord) -> tuple[str, str]:
    """("requeue" | "cancel", why) for a SIGTERM under Slurm: requeued iff Slurm's restart count grew."""
    from .cluster import slurm_cmd

    if (record.stop_request or {}).get("by"):
        return "cancel", f"cancelled with {record.stop_request['by']}"  # type: ignore[index]
    job = os.environ.get("SLURM_JOB_ID")
    text = slurm_cmd(["scontrol", "show", "job", "-o", job], timeout_s=8) if job else None
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
    try:
        if search:
            from ..search.optuna_study import objective_value

            _tell(paths, search, "complete", objective_value(metrics, search["optuna"]))
        store.transition(paths, "finish", ended_at=now_iso(), wall_time_s=round(time.time() - started, 2))
    except IllegalTransition as exc:  # cannot happen while we hold the claim; say so rather than hide it
        print(f"could not record the result: {exc}", file=sys.stderr, flush=True)
    finally:
        claim.release()
    return metrics


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


def _record_end(
    paths: TrialPaths, kind: str, message: str, error_class: str | None, exc: BaseException, started: float
) -> None:
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
            tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
            error = store.error_record(exc, "".join(tb).rstrip().splitlines()[-25:])
            if message:
                error = {**error, "class": error_class or "Stopped", "message": message}
            store.transition(paths, "fail", ended_at=now_iso(), wall_time_s=wall, error=error)
            print(f"trial {paths.root.name} failed: {error['class']}: {error['message']}", file=sys.stderr, flush=True)
    except (OSError, IllegalTransition) as write_error:  # e.g. the disk is full: the verdict goes to the log
        print(
            f"trial {paths.root.name} ended ({kind}: {message or type(exc).__name__}: {exc}) but its record could "
            f"not be written: {write_error}",
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
        cap = int(record.max_attempts or 0)
        used = record.attempt - record.attempt_base
        if cap and used >= cap:
            _attempt_limit = (
                f"attempt limit reached: the trial was stopped by the time limit or preemption in each of its {used} "
                f"attempts (max_attempts={cap}, set by VLSM_MAX_ATTEMPTS at submit time). Raise resources.timeout_min "
                "so that an attempt can finish, or raise VLSM_MAX_ATTEMPTS, then `vlsm-batch submit SPEC "
                "--retry-failed`: it resumes from its last epoch"
            )
            print(_attempt_limit, file=sys.stderr, flush=True)
            return None  # submitit then raises UncompletedJobError; run_trial_task records the limit
        _requeue_reason = "time limit or preemption notice (USR2): requeued, resumes from its last epoch"
        print(f"requeueing trial {Path(trial_dir).name} after attempt {used}", file=sys.stderr, flush=True)
        return DelayedSubmission(self, trial_dir, executor)
