"""Builders shared by tests: typed specs without YAML, and fake tasks for the job layer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from vlsm_batch.layout import TrialPaths, atomic_write_json
from vlsm_batch.spec.types import Distribution, ResourcesSpec, SearchSpec, StudySpec, TrainSpec


def make_spec(tmp_path: Path, **over: Any) -> StudySpec:
    search = over.pop("search", None) or SearchSpec(
        method=over.pop("method", "random"),
        trials=over.pop("trials", 5),
        seed=over.pop("search_seed", 0),
        objective_metric="val/dice",
        objective_mode="max",
        space=over.pop(
            "space",
            {"lr": Distribution("log_uniform", 1e-4, 1e-2), "prompt_depth": Distribution("int", 1, 4)},
        ),
        per_strategy=over.pop("per_strategy", {}),
    )
    fields: dict[str, Any] = {
        "study": "t",
        "path": tmp_path / "spec.yaml",
        "text": "study: t\n",
        "output_dir": tmp_path / "runs" / "t",
        "data_root": tmp_path / "data",
        "seeds": (0,),
        "models": ("clipseg-tiny",),
        "datasets": ("synthetic",),
        "strategies": ("coop",),
        "baselines": (),
        "search": search,
        "train": TrainSpec(max_epochs=2, min_epochs=1, batch_size=4),
        "resources": ResourcesSpec(executor="local", max_parallel=2, timeout_min=5),
    }
    fields.update(over)
    return StudySpec(**fields)


def sleepy_train(root: Path) -> dict[str, Any]:
    """A stand-in for training, run inside the real task wrapper: records its run interval, sleeps, writes metrics.

    VLSM_TEST_SLEEP sets the seconds; a trial whose prompt_depth equals VLSM_TEST_FAIL_DEPTH raises.
    """
    paths = TrialPaths(Path(root))
    start = time.time()
    config = json.loads(paths.config.read_text())
    time.sleep(float(os.environ.get("VLSM_TEST_SLEEP", "0.6")))
    with open(Path(os.environ["VLSM_TEST_INTERVALS"]), "a") as f:
        f.write(json.dumps([config["trial_id"], start, time.time()]) + "\n")
    if config["params"].get("prompt_depth") == int(os.environ.get("VLSM_TEST_FAIL_DEPTH", "-1")):
        raise RuntimeError("planted failure")
    atomic_write_json(paths.metrics, {"val/dice": 0.1 * config["params"]["prompt_depth"], "test/dice": 0.5})
    return {}


SLEEPY = "helpers:sleepy_train"  # for submit(train=...): importable in the worker through PYTHONPATH=tests


def max_overlap(intervals: Path) -> int:
    """The most stand-in tasks running at once, from the [trial, start, end] lines ``sleepy_train`` appends."""
    spans = [json.loads(line)[1:] for line in intervals.read_text().splitlines()]
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda x: (x[0], x[1]))
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    return peak


def disk_filling_train(root: Path) -> dict[str, Any]:
    """Like ``sleepy_train``, but the result write fails with ENOSPC while the counter file in
    VLSM_TEST_DISK_FULL is above zero (each failure takes one off), as a full file system would."""
    import errno

    target = Path(root) / "metrics.json"
    counter = Path(os.environ["VLSM_TEST_DISK_FULL"])
    left = int(counter.read_text())
    if left > 0:
        counter.write_text(str(left - 1))
        raise OSError(errno.ENOSPC, "No space left on device", str(target))
    return sleepy_train(root)


ONE_TRIAL_SEARCH = """\
  method: random
  trials: 1
  seed: 0
  objective: {metric: val/dice, mode: max}
  space:
    lr: {choice: [0.01]}
    prompt_depth: {choice: [2]}
"""


def one_trial_spec(
    out: Path,
    data: Path,
    epochs: int,
    executor: str = "local",
    study: str = "life",
    search: str = ONE_TRIAL_SEARCH,
    train_extra: str = "",
) -> str:
    """A study file of real CoOp trials on the tiny CLIPSeg (by default one, fixed lr and depth; no early stop),
    for the tests that interrupt a real training and compare it with an uninterrupted one (same trial id for any
    out/executor). ``search`` replaces the search block's body, ``train_extra`` adds train lines."""
    slurm = "  cpus_per_task: 2\n  mem_gb: 2\n  slurm: {profile: local}\n" if executor == "slurm" else ""
    return f"""\
study: {study}
output_dir: {out}
data_root: {data}
seeds: [0]
models: [clipseg-tiny]
datasets: [synthetic]
strategies: [coop]
search:
{search}train:
  max_epochs: {epochs}
  min_epochs: {epochs}
  batch_size: 8
  precision: "32"
  early_stopping: {{monitor: val/loss, patience: 50, min_delta: 0.0}}
  num_context: 4
  context_init: "a photo of a"
{train_extra}resources:
  executor: {executor}
  timeout_min: 30
  local: {{max_parallel: 1}}
{slurm}"""


def sigint_as_in_a_terminal() -> None:
    """``preexec_fn`` for a child that a test sends Ctrl-C: SIGINT back to its default disposition. A shell's
    background job (``cmd &``, as CI runners and nohup start them) inherits SIGINT *ignored*, and Python then never
    installs its KeyboardInterrupt handler; a command typed in a terminal has the default."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_cli(args: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    """``python -m vlsm_batch ARGS`` as a user runs it from ``cwd``, with runs and data under it."""
    env = {**os.environ, "VLSM_RUNS": str(cwd / "runs"), "VLSM_DATA": str(cwd / "data")}
    return subprocess.run(
        [sys.executable, "-m", "vlsm_batch", *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip
