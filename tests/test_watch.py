"""status of running trials (epoch / max, last val objective, s/epoch, ETA from history.csv) and status --watch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vlsm_batch.analysis.synthetic import write_study
from vlsm_batch.cli import main, watch_status
from vlsm_batch.jobs.status import format_status, load_status, read_progress
from vlsm_batch.layout import StudyLayout

REPO = Path(__file__).resolve().parent.parent
HEADER = "epoch,train/loss,val/loss,val/dice,val/iou,lr,train_images,train_time_s,epoch_time_s\n"


def _history(path: Path, epochs: int, seconds: float = 12.0) -> None:
    rows = [f"{e},0.5,0.4,{0.1 * e:.4f},0.1,0.001,8,{seconds - 1},{seconds}\n" for e in range(1, epochs + 1)]
    path.write_text(HEADER + "".join(rows), encoding="utf-8")


@pytest.fixture
def running_study(tmp_path):
    syn = write_study(
        tmp_path / "runs" / "live", configs=4, datasets=("isic",), strategies=("vpt",), running=0.6, failed=0.0
    )
    layout = StudyLayout(syn.root)
    running = [s for s in load_status(layout).states if s.state == "running"]
    assert running, "the synthetic study must have running trials"
    _history(layout.trial(running[0].trial.trial_id).history, 3)
    return layout, running


def test_status_shows_epoch_objective_and_eta_of_a_running_trial(running_study, capsys):
    layout, running = running_study
    tid = running[0].trial.trial_id
    text = format_status(load_status(layout))
    row = next(line for line in text.splitlines() if line.strip().startswith(tid))
    max_epochs = running[0].trial.train["max_epochs"]
    assert f"3/{max_epochs}" in row and "0.3000" in row  # epoch 3 of max; last val/dice
    assert "12 s" in row  # per epoch
    eta = (max_epochs - 3) * 12
    assert f"{eta // 60} min {eta % 60:02d} s" in row
    assert f"{len(running)} running:" in text
    others = [r.trial.trial_id for r in running[1:]]
    for other in others:  # no history yet: shown as starting
        assert "starting" in next(line for line in text.splitlines() if line.strip().startswith(other))
    assert main(["status", "--study", str(layout.root), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    prog = next(t for t in data["trials"] if t["trial_id"] == tid)["progress"]
    assert prog["epoch"] == 3 and prog["max_epochs"] == max_epochs and prog["s_per_epoch"] == pytest.approx(12.0)
    assert prog["eta_s"] == pytest.approx(eta)


def test_progress_survives_half_written_or_missing_history(tmp_path):
    assert read_progress(tmp_path / "none.csv", 5, "val/dice").epoch is None
    bad = tmp_path / "h.csv"
    bad.write_text(HEADER + "1,0.5,0.4,0.2,0.1,0.001,8,1,2\n2,0.5,", encoding="utf-8")  # cut mid-row
    p = read_progress(bad, 5, "val/dice")
    assert p.epoch == 1 and p.objective == pytest.approx(0.2) and p.eta_s == pytest.approx(8.0)


def test_watch_redraws_until_finished(running_study, capsys):
    layout, running = running_study
    assert watch_status(layout, 0.01, max_rounds=2) == 0
    out = capsys.readouterr().out
    assert out.count("--- ") == 2 and "Ctrl-C" in out  # not a terminal: one block per refresh
    for r in running:  # the trials finish: the watch ends by itself
        (layout.trial(r.trial.trial_id).status).write_text(json.dumps({"state": "done"}))
    assert watch_status(layout, 0.01) == 0
    assert capsys.readouterr().out.rstrip().endswith("study finished.")


def test_watch_command_in_a_terminal_redraws_in_place(tmp_path):
    syn = write_study(tmp_path / "runs" / "fin", configs=1, datasets=("isic",), strategies=("vpt",), running=0.0)
    import pty

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    pid, fd = pty.fork()
    if pid == 0:  # child: the real command on a pseudo-terminal
        os.execve(sys.executable, [sys.executable, "-m", "vlsm_batch", "status", "--study", str(syn.root),
                                   "--watch", "0.1"], env)  # fmt: skip
    chunks = []
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    _, code = os.waitpid(pid, 0)
    out = b"".join(chunks).decode()
    assert os.waitstatus_to_exitcode(code) == 0
    assert "\x1b[H\x1b[J" in out and "study finished." in out


def test_watch_rejects_a_bad_interval(tmp_path, capsys):
    syn = write_study(tmp_path / "runs" / "x", configs=1, datasets=("isic",), strategies=("vpt",), running=0.0)
    assert main(["status", "--study", str(syn.root), "--watch", "0"]) != 0
    assert "positive number of seconds" in capsys.readouterr().err


def test_status_command_stays_light():
    code = "import sys, vlsm_batch.cli as c, vlsm_batch.jobs.status\nc.build_parser()\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "False"
