"""Stand-in pack trainings for the jobs-side pack tests (importable as ``pack_job_helpers:pack_train`` by the local
worker and on a Slurm node through PYTHONPATH=tests): no torch, about a second per epoch.

``pack_train(roots, events)`` plays ``vlsm_batch.training.pack.train_pack``: its members step in lock-step, one
"epoch" of VLSM_TEST_EPOCH_S seconds at a time, each asking ``events.stop_reason`` between steps and ending
through ``events.ended`` as soon as it is over (done, failed, cancelled); the pack goes on with the rest. Each
finished epoch is one line of the member's ``history.txt`` (epoch, attempt, job, pid) and is its checkpoint: a
new attempt resumes after its own last line, so a repeated epoch means resume is broken. It also writes the
``history.csv`` rows that ``status`` reads. Knobs (environment):

* VLSM_TEST_EPOCHS: epochs per member (default 6); VLSM_TEST_SHORT_DEPTH: the member with that prompt_depth stops
  after 2 epochs (early stopping, done).
* VLSM_TEST_FAIL_DEPTH: the member with that prompt_depth fails alone at its second epoch (a planted error).
* VLSM_TEST_PRUNE_INDEX: the member at that place in the pack ends pruned after its second epoch.
* VLSM_TEST_INTERVALS: a file where each member that ends appends [trial id, pid, kind].
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlsm_batch.layout import TrialPaths, atomic_write_json


@dataclass
class MemberEnd:
    """The fields of ``vlsm_batch.training.pack.MemberEnd`` (that module imports torch: seconds per worker start;
    ``test_member_end_fields_match_the_training_side`` keeps the two in step)."""

    kind: str
    metrics: dict[str, Any] | None = None
    error: BaseException | None = None
    message: str = ""
    pruned_epoch: int | None = None


def history(root: Path) -> list[dict[str, Any]]:
    path = Path(root) / "history.txt"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, str(default)))


def _note(root: Path, kind: str) -> None:
    if os.environ.get("VLSM_TEST_INTERVALS"):
        with open(os.environ["VLSM_TEST_INTERVALS"], "a") as f:
            f.write(json.dumps([Path(root).name, os.getpid(), kind]) + "\n")


def pack_train(roots: Sequence[Path], events: Any) -> None:
    """Train every member of the pack in lock-step; end each one through ``events`` (see the module doc)."""
    live: dict[Path, dict[str, Any]] = {}
    for i, root in enumerate(roots):
        config = json.loads(TrialPaths(Path(root)).config.read_text())
        depth = config["params"].get("prompt_depth")
        epochs = 2 if depth == _env_int("VLSM_TEST_SHORT_DEPTH", -1) else _env_int("VLSM_TEST_EPOCHS", 6)
        done = [h["epoch"] for h in history(root)]
        pruned = i == _env_int("VLSM_TEST_PRUNE_INDEX", -1)
        live[Path(root)] = {"next": max(done) + 1 if done else 0, "epochs": epochs, "depth": depth, "prune": pruned}
    step = float(os.environ.get("VLSM_TEST_EPOCH_S", "1"))
    while live:
        for root in list(live):
            reason = events.stop_reason(root)
            if reason is not None:
                del live[root]
                _note(root, "cancelled")
                events.ended(root, MemberEnd("cancelled", message=reason))
        if not live:
            break
        time.sleep(step)
        for root, member in list(live.items()):
            epoch = member["next"]
            if member["depth"] == _env_int("VLSM_TEST_FAIL_DEPTH", -1) and epoch == 1:
                del live[root]
                _note(root, "failed")
                events.ended(root, MemberEnd("failed", error=RuntimeError("planted failure"), message="planted"))
                continue
            status = json.loads((Path(root) / "status.json").read_text())
            line = {"epoch": epoch, "attempt": status.get("attempt"), "job": status.get("job_id"), "pid": os.getpid()}
            with open(Path(root) / "history.txt", "a") as f:
                f.write(json.dumps(line) + "\n")
            rows = "".join(f"{h['epoch'] + 1},0.5,{step}\n" for h in history(root))
            (Path(root) / "history.csv").write_text("epoch,val/dice,epoch_time_s\n" + rows)
            member["next"] = epoch + 1
            pruned = member["prune"] and member["next"] == 2
            if member["next"] >= member["epochs"] or pruned:
                del live[root]
                metrics = {"val/dice": 0.1 * (member["depth"] or 1), "test/dice": 0.5, "epochs": member["next"]}
                atomic_write_json(TrialPaths(root).metrics, metrics)
                _note(root, "pruned" if pruned else "done")
                events.ended(
                    root, MemberEnd("pruned", metrics, pruned_epoch=2) if pruned else MemberEnd("done", metrics)
                )


PACK_TRAIN = "pack_job_helpers:pack_train"
