"""status and logs name the same log file for a trial with several attempts (one choice in jobs/logs.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import SLEEPY, make_spec

from vlsm_batch.cli import main
from vlsm_batch.jobs.submit import submit
from vlsm_batch.layout import StudyLayout
from vlsm_batch.spec.types import Distribution
from vlsm_batch.trials import expand

TESTS = Path(__file__).parent


def test_status_and_logs_show_the_same_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mp = pytest.MonkeyPatch()
    mp.setenv("PYTHONPATH", str(TESTS))
    mp.setenv("VLSM_TEST_SLEEP", "0.01")
    mp.setenv("VLSM_TEST_FAIL_DEPTH", "2")
    spec = make_spec(tmp_path, method="grid", trials=None, space={"prompt_depth": Distribution("choice", choices=(2,))})
    submit(spec, expand(spec), progress=False, train=SLEEPY)
    mp.undo()
    assert main(["status", "--study", str(spec.output_dir), "--json"]) == 0
    (failure,) = json.loads(capsys.readouterr().out)["failures"]
    logs = StudyLayout(spec.output_dir).trial(failure["trial_id"]).logs
    real = Path(failure["log"])
    # two earlier attempts (older .err and .out) and a later .out: the newest stderr log still speaks for the trial
    for age, name in ((300, "20000101-000000-1_log.err"), (300, "20000101-000000-1_log.out"), (-60, "z_log.out")):
        path = logs / name
        path.write_text(f"attempt {name}\n")
        stamp = real.stat().st_mtime - age
        os.utime(path, (stamp, stamp))
    assert main(["status", "--study", str(spec.output_dir), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["failures"][0]["log"]
    assert Path(shown) == real
    assert main(["logs", failure["trial_id"], "--study", str(spec.output_dir), "--tail", "3"]) == 0
    headers = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("==> ")]
    assert len(headers) == 5  # the run's .out/.err and the three planted ones
    marked = [h for h in headers if h.endswith("(the log status shows)")]
    assert marked == [headers[-1]] and marked[0].startswith(f"==> {shown} <==")
