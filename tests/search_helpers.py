"""Stand-in trainings for the search tests: real processes that report a per-epoch objective to the pruner.

``curve_train`` plays a training whose val/dice climbs towards a ceiling set by lr (best near 3e-3): bad values
stay low from the first epochs, which is what a pruner exploits. It writes history.csv and metrics.json like the
real training and reports through the same hook (``vlsm_batch.search.optuna_study.Reporter``).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from vlsm_batch.layout import TrialPaths, atomic_write_json


def ceiling(params: dict[str, Any]) -> float:
    """The val/dice a trial reaches with enough epochs: a bump in log10(lr)."""
    return 0.9 * math.exp(-((math.log10(float(params["lr"])) - math.log10(3e-3)) ** 2) / 0.4)


def curve_train(root: Path) -> dict[str, Any]:
    paths = TrialPaths(Path(root))
    config = json.loads(paths.config.read_text())
    params, epochs = config["params"], int(config["train"]["max_epochs"])
    report = None
    if config.get("optuna") and config["optuna"]["pruner"]["type"] != "none":
        from vlsm_batch.search.optuna_study import Reporter

        report = Reporter(paths.root)
    if os.environ.get("VLSM_TEST_HANG_FILE"):  # tell the test we started, then wait to be killed
        Path(os.environ["VLSM_TEST_HANG_FILE"]).write_text(config["trial_id"])
        time.sleep(600)
    pause = float(os.environ.get("VLSM_TEST_EPOCH_S", "0.02"))
    rows = paths.history.read_text().splitlines(keepends=True)[1:] if paths.history.is_file() else []  # resume
    dice = float(rows[-1].split(",")[1]) if rows else 0.0
    for epoch in range(len(rows) + 1, epochs + 1):
        time.sleep(pause)
        dice = ceiling(params) * (1 - 0.6**epoch)
        rows.append(f"{epoch},{dice:.6f}\n")
        paths.history.write_text("epoch,val/dice\n" + "".join(rows))
        if report is not None and report(epoch, dice):
            break
    atomic_write_json(paths.metrics, {"val/dice": dice, "test/dice": dice, "epochs": len(rows)})
    return {"val/dice": dice}


CURVE = "search_helpers:curve_train"
