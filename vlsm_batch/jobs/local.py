"""Run trials on this machine through submitit's LocalExecutor, at most ``max_parallel`` at a time.

submitit's LocalExecutor starts every submitted job at once, so this module keeps its own queue and only
submits a trial when a slot is free. Ctrl-C cancels the running trials and marks them ``cancelled``: the
same ``submit`` command resumes the study.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..layout import TrialPaths, read_json
from .state import CANCELLED, DONE, FAILED, RUNNING, now_iso, read_status, write_status
from .task import run_trial_task

TaskFn = Callable[..., Any]


@dataclass
class LocalOutcome:
    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    interrupted: bool = False


def _finish(paths: TrialPaths, outcome: LocalOutcome) -> str:
    """Classify a finished job by its status marker; a job that died without one is failed (lost)."""
    status = read_status(paths)
    state = status.get("state")
    if state in (RUNNING, "pending", "new"):
        write_status(
            paths,
            FAILED,
            ended_at=now_iso(),
            error={"class": "LostProcess", "message": "the trial process ended without recording a result"},
        )
        state = FAILED
    {DONE: outcome.done, CANCELLED: outcome.cancelled}.get(state, outcome.failed).append(paths.root.name)
    return str(state)


def run_local(
    trial_dirs: list[Path],
    max_parallel: int,
    timeout_min: int,
    gpus: list[int] | None = None,
    task: TaskFn = run_trial_task,
    progress: bool = True,
    poll_s: float = 0.2,
) -> LocalOutcome:
    """Run every trial to completion (blocking), ``max_parallel`` at once, with a progress bar."""
    import os

    import submitit
    from tqdm import tqdm

    # Trials inherit this environment: share the cores instead of oversubscribing them.
    if "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // max(max_parallel, 1)))

    if gpus:
        max_parallel = min(max_parallel, len(gpus))  # one GPU per running trial, never a silent CPU slot
    queue = deque(trial_dirs)
    running: dict[str, tuple[Any, TrialPaths, int | None]] = {}
    free_gpus = list(gpus or [])
    outcome = LocalOutcome()
    # A bar on a terminal; in a log file (nohup, CI, a batch job) one plain line per finished trial instead of
    # carriage-return redraws.
    tty = progress and sys.stderr.isatty()
    bar = tqdm(total=len(trial_dirs), unit="trial", disable=not tty, file=sys.stderr, dynamic_ncols=True)
    finished = 0

    def postfix() -> None:
        bar.set_postfix(running=len(running), failed=len(outcome.failed), refresh=False)

    try:
        while queue or running:
            while queue and len(running) < max_parallel:
                paths = TrialPaths(Path(queue.popleft()))
                gpu = free_gpus.pop(0) if free_gpus else None
                executor = submitit.LocalExecutor(folder=paths.logs)
                executor.update_parameters(
                    timeout_min=timeout_min,
                    gpus_per_node=1 if gpu is not None else 0,
                    visible_gpus=(gpu,) if gpu is not None else (),
                )
                job = executor.submit(task, str(paths.root), "local")
                running[paths.root.name] = (job, paths, gpu)
                postfix()
                bar.refresh()
            for tid, (job, paths, gpu) in list(running.items()):
                if job.done():
                    del running[tid]
                    if gpu is not None:
                        free_gpus.append(gpu)
                    state = _finish(paths, outcome)
                    finished += 1
                    bar.update(1)
                    if state == FAILED and tty:
                        bar.write(f"  trial {tid} failed (vlsm-batch status shows why)")
                    elif progress and not tty:
                        why = " (vlsm-batch status shows why)" if state == FAILED else ""
                        print(f"[{finished}/{len(trial_dirs)}] trial {tid} {state}{why}", file=sys.stderr, flush=True)
                    postfix()
            if running:
                time.sleep(poll_s)
    except KeyboardInterrupt:
        outcome.interrupted = True
        for job, _paths, _gpu in running.values():
            job.cancel()
        deadline = time.time() + 15
        for job, paths, _gpu in running.values():
            while not job.done() and time.time() < deadline:
                time.sleep(0.1)
            raw = read_json(paths.status) or {}  # not read_status: a dead pid here means we stopped it
            if raw.get("state") in (RUNNING, "pending", None):
                write_status(paths, CANCELLED, ended_at=now_iso(), error={"class": "KeyboardInterrupt"})
            outcome.cancelled.append(paths.root.name)
    finally:
        bar.close()
    return outcome
