"""Ctrl-C during a local submit leaves a resumable study: the same submit finishes it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from helpers import sigint_as_in_a_terminal

from vlsm_batch.jobs.store import read as read_record
from vlsm_batch.layout import StudyLayout

TESTS = Path(__file__).parent

SCRIPT = """
import sys
from pathlib import Path
from helpers import SLEEPY, make_spec
from vlsm_batch.jobs.submit import submit
from vlsm_batch.trials import expand

spec = make_spec(Path(sys.argv[1]), trials=4)
result = submit(spec, expand(spec), progress=False, train=SLEEPY)
print("RESULT", len(result.launched), len(result.local.done), len(result.local.cancelled), result.local.interrupted)
"""


def _run(tmp_path: Path, sleep: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": str(TESTS),
        "VLSM_TEST_INTERVALS": str(tmp_path / "iv.jsonl"),
        "VLSM_TEST_SLEEP": sleep,
    }
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(SCRIPT), str(tmp_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=sigint_as_in_a_terminal,
    )


def test_ctrl_c_marks_running_cancelled_and_resubmit_resumes(tmp_path):
    proc = _run(tmp_path, "60")
    layout = StudyLayout(tmp_path / "runs" / "t")
    deadline = time.time() + 60
    while time.time() < deadline:  # wait until two trials are running
        states = (
            [str(read_record(layout.trial(p.name)).state) for p in layout.trials_dir.glob("*")]
            if (layout.trials_dir.exists())
            else []
        )
        if states.count("running") == 2:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert "RESULT 4 0 2 True" in out, out + err
    states = sorted(str(read_record(layout.trial(p.name)).state) for p in layout.trials_dir.glob("*"))
    assert states == ["cancelled", "cancelled", "pending", "pending"]

    proc = _run(tmp_path, "0.05")
    out, err = proc.communicate(timeout=120)
    assert "RESULT 4 4 0 False" in out, out + err
    assert all(str(read_record(layout.trial(p.name)).state) == "done" for p in layout.trials_dir.glob("*"))
    finished = [json.loads(line)[0] for line in (tmp_path / "iv.jsonl").read_text().splitlines()]
    assert len(finished) == 4  # the interrupted ones never wrote a result
