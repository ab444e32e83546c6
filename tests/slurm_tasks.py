"""Stand-in tasks for the Slurm tests (importable on the node through PYTHONPATH=tests): no torch, seconds each."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


def epoch_train(root: Path) -> dict[str, Any]:
    """A 'training' of VLSM_TEST_EPOCHS epochs of VLSM_TEST_EPOCH_S seconds that resumes like the real one.

    Each finished epoch is appended to ``history.txt`` (epoch, attempt, job) and is the checkpoint: a new attempt
    starts after the last recorded epoch, so a repeated epoch in the history means resume is broken.
    """
    root = Path(root)
    history = root / "history.txt"
    done = [json.loads(line)["epoch"] for line in history.read_text().splitlines()] if history.exists() else []
    status = json.loads((root / "status.json").read_text())
    attempt = status.get("attempt")
    n = int(os.environ.get("VLSM_TEST_EPOCHS", "10"))
    for epoch in range((max(done) + 1) if done else 0, n):
        time.sleep(float(os.environ.get("VLSM_TEST_EPOCH_S", "1")))
        with open(history, "a") as f:
            f.write(json.dumps({"epoch": epoch, "attempt": attempt, "job": os.environ.get("SLURM_JOB_ID")}) + "\n")
    metrics = {"val/dice": 0.5, "test/dice": 0.5, "epochs": n}
    (root / "metrics.json").write_text(json.dumps(metrics))
    return metrics
