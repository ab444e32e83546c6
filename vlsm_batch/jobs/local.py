"""Run trials on this machine, one worker process per trial or per pack, at most ``max_parallel`` at a time.

Each worker (``python -m vlsm_batch.jobs.worker``) claims its trial (or each trial of its pack) and records its
own outcome through the trial store; this launcher only decides when to start one and what to record when a
worker could not. A pack (``resources.pack``) is one process: ``max_parallel`` counts processes, and its log
files are shared by every member (hard links in each member's ``logs/``).
Before each launch it re-reads the trial's record (``assign`` refuses a trial that was cancelled meanwhile), so
``vlsm-batch cancel`` stops pending trials before they start.

Ctrl-C (SIGINT to the whole process group, as a terminal sends it) stops launching, lets every running worker
record ``cancelled`` with its checkpoints kept (a second Ctrl-C kills them at once, recorded the same), leaves
the trials not started yet ``pending``, and returns: the same ``submit`` command resumes the study.

Workers are plain subprocesses rather than submitit's LocalExecutor: its controller SIGKILLs a task one second
after SIGINT, before a trial inside a long forward pass can record anything, and it starts every job at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..layout import TrialPaths
from . import store
from .store import CANCELLED, DONE, FAILED, PENDING, PRUNED, RUNNING, IllegalTransition, now_iso

STOP_GRACE_S = 60.0  # after Ctrl-C: how long running trials get to record their state before they are killed


@dataclass
class LocalOutcome:
    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    not_started: list[str] = field(default_factory=list)  # still pending (interrupted, disk full)
    skipped: list[str] = field(default_factory=list)  # another process trains it
    interrupted: bool = False
    problems: list[str] = field(default_factory=list)


@dataclass
class _Running:
    members: list[TrialPaths]  # one trial, or the trials of one pack
    job_id: str
    proc: subprocess.Popen[bytes]
    started: float
    gpu: int | None
    files: list[IO[bytes]]
    timeout_min: int = 0  # this unit's limit (its strategy's resources); 0: none
    timed_out: bool = False


def _open_logs(paths: TrialPaths, job_id: str) -> list[IO[bytes]]:
    paths.logs.mkdir(parents=True, exist_ok=True)
    stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{job_id}"
    out = open(paths.logs / f"{stem}_log.out", "ab")  # noqa: SIM115 - closed when the worker ends
    try:
        err = open(paths.logs / f"{stem}_log.err", "ab")  # noqa: SIM115
    except BaseException:
        out.close()
        raise
    return [out, err]


def _share_logs(files: list[IO[bytes]], members: list[TrialPaths]) -> None:
    """The pack's log files in every other member's ``logs/`` too (a hard link; a relative symlink where the file
    system refuses), so ``vlsm-batch logs TRIAL`` shows each member's every attempt."""
    for paths in members:
        paths.logs.mkdir(parents=True, exist_ok=True)
        for f in files:
            source = Path(str(f.name))
            target = paths.logs / source.name
            try:
                os.link(source, target)
            except OSError:
                with contextlib.suppress(OSError):
                    target.symlink_to(os.path.relpath(source, paths.logs))


def _spawn(
    members: list[TrialPaths], job_id: str, gpu: int | None, train: str | None, threads: int, pack: bool
) -> _Running:
    files = _open_logs(members[0], job_id)
    try:
        _share_logs(files, members[1:])
    except BaseException:
        for f in files:
            f.close()
        raise
    env = {**os.environ, "VLSM_LOCAL_JOB_ID": job_id}
    env.setdefault("OMP_NUM_THREADS", str(threads))
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    elif "CUDA_VISIBLE_DEVICES" not in os.environ:
        env["CUDA_VISIBLE_DEVICES"] = ""  # one GPU per trial or none: never a silent share of every GPU
    cmd = [sys.executable, "-m", "vlsm_batch.jobs.worker", *(str(p.root) for p in members), "--job-id", job_id]
    if pack:
        cmd.append("--pack")
    if train:
        cmd += ["--train", train]
    try:
        proc = subprocess.Popen(cmd, stdout=files[0], stderr=files[1], stdin=subprocess.DEVNULL, env=env)
    except BaseException:
        for f in files:
            f.close()
        raise
    return _Running(members, job_id, proc, time.monotonic(), gpu, files)


def _settle(run: _Running, interrupted: bool) -> dict[str, store.State]:
    """Each member's state once its worker ended (trial id -> state); writes what the worker could not."""
    for f in run.files:
        with contextlib.suppress(OSError):
            f.close()
    return {paths.root.name: _settle_trial(run, paths, interrupted) for paths in run.members}


def _settle_trial(run: _Running, paths: TrialPaths, interrupted: bool) -> store.State:
    """One trial's state after its worker ended: what the worker recorded, else cancelled or failed (it died, or
    never started)."""
    record = store.read(paths)
    if record.job_id != run.job_id or record.state not in (PENDING, RUNNING):
        return record.state
    code = run.proc.returncode
    try:
        if interrupted or (code is not None and code < 0 and record.stop_request):
            store.transition(
                paths, "cancel", by="Ctrl-C", expect_job=run.job_id, ended_at=now_iso(),
                error={"class": "Cancelled", "message": "stopped by Ctrl-C before it could record its state"},
            )  # fmt: skip
        elif record.state == PENDING and code == 0:
            return PENDING  # the worker found another process training it and left it alone
        else:
            what = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
            message = (
                f"the trial's process ended ({what}) without recording a result"
                + (" before it started" if record.state == PENDING else "")
                + "; `vlsm-batch logs TRIAL` shows its last lines"
            )
            store.transition(
                paths, "fail", expect_job=run.job_id, ended_at=now_iso(),
                error={"class": "LostProcess", "message": message},
            )  # fmt: skip
    except (IllegalTransition, OSError):  # it wrote its own end meanwhile, or the disk is full: re-read below
        pass
    return store.read(paths).state


def run_local(
    trial_dirs: Sequence[Path | Sequence[Path]],
    max_parallel: int,
    timeout_min: int,
    gpus: list[int] | None = None,
    train: str | None = None,
    progress: bool = True,
    poll_s: float = 0.2,
    pack_train: str | None = None,
    timeouts: Sequence[int] | None = None,
    wants_gpu: Sequence[bool] | None = None,
) -> LocalOutcome:
    """Run every pending trial of ``trial_dirs`` to an end (blocking), ``max_parallel`` processes at once.

    Each item is a trial folder or a pack (a list of folders, one process). ``train`` replaces the training of a
    trial that runs alone, ``pack_train`` that of a pack (a pack training ``(roots, events)``; with it, a
    one-trial item runs as a pack of one unless ``train`` is given too). ``timeouts`` and ``wants_gpu`` hold each
    item's own limit and GPU need (its strategy's resources, ``per_strategy`` overrides included); without them
    every item has ``timeout_min`` and wants one of ``gpus``. An item that wants a GPU waits for a free one (none
    visible at all: it runs on the CPU); one that does not runs with no GPU.
    """
    from tqdm import tqdm

    units = [
        [TrialPaths(Path(d))] if isinstance(d, (str, Path)) else [TrialPaths(Path(x)) for x in d] for d in trial_dirs
    ]
    if train and not pack_train and any(len(u) > 1 for u in units):
        raise ValueError("train= replaces the training of one trial; packs need pack_train= (roots, events)")
    limits = list(timeouts) if timeouts is not None else [timeout_min] * len(units)
    needs = [bool(w and gpus) for w in wants_gpu] if wants_gpu is not None else [bool(gpus)] * len(units)
    if len(limits) != len(units) or len(needs) != len(units):
        raise ValueError("timeouts and wants_gpu need one entry per item of trial_dirs")
    if gpus and all(needs):
        max_parallel = min(max_parallel, len(gpus))  # one GPU per running process, never a silent CPU slot
    threads = max(1, (os.cpu_count() or 1) // max(max_parallel, 1))  # share the cores, do not oversubscribe
    queue = deque(zip(units, limits, needs))
    running: dict[str, _Running] = {}  # by launch (job) id
    free_gpus = list(gpus or [])
    outcome = LocalOutcome()
    tty = progress and sys.stderr.isatty()
    total, finished = sum(len(u) for u in units), 0
    bar = tqdm(total=total, unit="trial", disable=not tty, file=sys.stderr, dynamic_ncols=True)
    stop_launching = False

    def report(tid: str, state: store.State) -> None:
        nonlocal finished
        lists = {DONE: outcome.done, CANCELLED: outcome.cancelled, PRUNED: outcome.pruned, PENDING: outcome.skipped}
        lists.get(state, outcome.failed).append(tid)
        finished += 1
        bar.update(1)
        why = " (vlsm-batch status shows why)" if state == FAILED else ""
        if tty and state == FAILED:
            bar.write(f"  trial {tid} failed{why}")
        elif progress and not tty:
            print(f"[{finished}/{total}] trial {tid} {state}{why}", file=sys.stderr, flush=True)
        bar.set_postfix(running=len(running), failed=len(outcome.failed), refresh=False)

    def launch(unit: list[TrialPaths], limit: int, needs_gpu: bool) -> bool:
        nonlocal stop_launching
        job_id = f"local-{uuid.uuid4().hex[:10]}"
        packed: dict[str, Any] = {"pack": [p.root.name for p in unit]} if len(unit) > 1 else {}
        members = []
        for paths in unit:
            try:
                store.assign(paths, job_id, executor="local", host=None, pid=None, **packed)
            except IllegalTransition as exc:  # cancelled (or otherwise taken) since submit queued it
                report(paths.root.name, exc.state)
                continue
            members.append(paths)
        if not members:
            return False
        gpu = free_gpus.pop(0) if needs_gpu and free_gpus else None
        as_pack = len(members) > 1 or bool(pack_train and not train)
        try:
            run = _spawn(members, job_id, gpu, pack_train if as_pack else train, threads, as_pack)
        except OSError as exc:
            if gpu is not None:
                free_gpus.append(gpu)
            error = store.error_record(exc)
            for paths in members:
                outcome.problems.append(f"trial {paths.root.name} not started: {error['message']}")
                outcome.not_started.append(paths.root.name)
            stop_launching = store.disk_full_cause(exc) is not None  # the next launch would fail the same way
            return False
        run.timeout_min = limit
        running[job_id] = run
        return True

    def can_launch() -> bool:  # a slot, and a free GPU for an item that wants one
        return (
            bool(queue) and len(running) < max_parallel and not stop_launching and (not queue[0][2] or bool(free_gpus))
        )

    try:
        while queue or running:
            while can_launch():
                launch(*queue.popleft())
            for job_id, run in list(running.items()):
                if run.proc.poll() is not None:
                    del running[job_id]
                    if run.gpu is not None:
                        free_gpus.append(run.gpu)
                    for tid, state in _settle(run, interrupted=False).items():
                        report(tid, state)
                elif run.timeout_min and not run.timed_out and time.monotonic() - run.started > run.timeout_min * 60:
                    run.timed_out = True
                    limit = f"the local time limit (timeout_min={run.timeout_min})"
                    _request_stop(run, {"by": limit, "kind": "timeout"})
            if stop_launching and not running:
                outcome.not_started += [p.root.name for u, _, _ in queue for p in u]
                queue.clear()
            if running:
                time.sleep(poll_s)
    except KeyboardInterrupt:
        outcome.interrupted = True
        outcome.not_started += [p.root.name for u, _, _ in queue for p in u]
        _stop_all(running, outcome, report)
    finally:
        bar.close()
    return outcome


def _request_stop(run: _Running, request: dict[str, Any]) -> None:
    for paths in run.members:  # members that ended already refuse it
        with contextlib.suppress(IllegalTransition, OSError):
            store.transition(paths, "stop_request", stop_request={**request, "at": now_iso()})
    with contextlib.suppress(ProcessLookupError):
        run.proc.send_signal(signal.SIGTERM)


def _stop_all(running: dict[str, _Running], outcome: LocalOutcome, report: Any) -> None:
    """After Ctrl-C: every worker records its own cancellation; a second Ctrl-C (or the grace time) kills them."""
    force = False

    def again(signum: int, frame: Any) -> None:
        nonlocal force
        force = True

    previous = signal.signal(signal.SIGINT, again)
    try:
        if running:
            n = sum(len(r.members) for r in running.values())
            print(
                f"\nstopping {n} running trial(s): they record their state and keep their checkpoints "
                "(Ctrl-C again to kill them now)",
                file=sys.stderr,
                flush=True,
            )
        for run in running.values():  # the terminal signalled the whole group; a `kill -INT` reached only us
            with contextlib.suppress(ProcessLookupError):
                run.proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + STOP_GRACE_S
        while any(r.proc.poll() is None for r in running.values()) and not force and time.monotonic() < deadline:
            time.sleep(0.1)
        for run in running.values():
            if run.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    run.proc.kill()
                run.proc.wait()
        for run in running.values():
            for tid, state in _settle(run, interrupted=True).items():
                report(tid, state)
    finally:
        signal.signal(signal.SIGINT, previous)
