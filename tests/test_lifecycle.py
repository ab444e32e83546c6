"""Trial lifecycle with real processes and signals: concurrent submits, Ctrl-C mid-fit, cancel, a moved study,
a full disk, spec versions. Stand-in trainings (tests/helpers.py) where the training itself is not the point; the
real Lightning training of the tiny CLIPSeg where it is (Ctrl-C mid-fit, then resume to the same metrics)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers import one_trial_spec, sigint_as_in_a_terminal

from vlsm_batch.cli import main
from vlsm_batch.jobs import store
from vlsm_batch.layout import StudyLayout

TESTS = Path(__file__).parent
REPO = TESTS.parent

SUBMIT = """
import sys
from pathlib import Path
from helpers import SLEEPY, make_spec
from vlsm_batch.errors import SubmissionError
from vlsm_batch.jobs.submit import submit
from vlsm_batch.spec.types import ResourcesSpec
from vlsm_batch.trials import expand

spec = make_spec(Path(sys.argv[1]), trials=int(sys.argv[2]),
                 resources=ResourcesSpec(executor="local", max_parallel=int(sys.argv[3]), timeout_min=5))
try:
    result = submit(spec, expand(spec), progress=False, train=SLEEPY)
except SubmissionError as exc:
    print("REFUSED", exc)
    raise SystemExit(2)
o = result.local
print("RESULT", len(result.launched), len(o.done) if o else 0, len(o.cancelled) if o else 0, result.skipped_active)
"""


def _env(tmp_path: Path, sleep: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(TESTS),
        "VLSM_TEST_INTERVALS": str(tmp_path / "iv.jsonl"),
        "VLSM_TEST_SLEEP": sleep,
    }


def _submit_proc(tmp_path: Path, trials: int, parallel: int, sleep: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(SUBMIT), str(tmp_path), str(trials), str(parallel)],
        env=_env(tmp_path, sleep),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=sigint_as_in_a_terminal,
    )


def _states(layout: StudyLayout) -> dict[str, str]:
    return {p.name: str(store.read(layout.trial(p.name)).state) for p in sorted(layout.trials_dir.glob("*"))}


def _wait(pred, timeout_s: float = 90, what: str = "condition"):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_two_concurrent_submits_train_every_trial_once(tmp_path):
    procs = [_submit_proc(tmp_path, 4, 2, "1.0") for _ in range(2)]
    outs = [p.communicate(timeout=180) for p in procs]
    codes = [p.returncode for p in procs]
    assert sorted(codes) == [0, 2], outs  # one runs the study, the other is refused while it runs
    refused = next(out for (out, _), c in zip(outs, codes) if c == 2)
    assert "REFUSED" in refused and "is in use by vlsm-batch submit" in refused and "pid" in refused
    assert len(refused.strip().splitlines()) == 1
    runs = [json.loads(line)[0] for line in (tmp_path / "iv.jsonl").read_text().splitlines()]
    assert len(runs) == len(set(runs)) == 4  # every trial trained exactly once
    layout = StudyLayout(tmp_path / "runs" / "t")
    assert set(_states(layout).values()) == {"done"}
    assert all(store.read(layout.trial(t)).starts == 1 for t in _states(layout))
    # and once it is over, the same submit is safe: nothing runs again
    again = _submit_proc(tmp_path, 4, 2, "1.0")
    out, err = again.communicate(timeout=120)
    assert "RESULT 0 0 0 0" in out, out + err


def test_local_cancel_stops_pending_before_they_start_and_running_as_cancelled(tmp_path):
    proc = _submit_proc(tmp_path, 3, 1, "60")
    layout = StudyLayout(tmp_path / "runs" / "t")
    _wait(lambda: layout.trials_dir.exists() and "running" in _states(layout).values(), what="a running trial")
    assert main(["cancel", "--study", str(layout.root), "--state", "pending"]) == 0
    states = _states(layout)
    assert sorted(states.values()) == ["cancelled", "cancelled", "running"]
    assert main(["cancel", "--study", str(layout.root)]) == 0
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + err
    assert set(_states(layout).values()) == {"cancelled"}
    records = [store.read(layout.trial(t)) for t in states]
    assert sorted(r.starts for r in records) == [0, 0, 1]  # the pending ones never started
    running = next(r for r in records if r.starts == 1)
    assert running.error["class"] == "Cancelled" and "vlsm-batch cancel" in running.error["message"]
    assert not (tmp_path / "iv.jsonl").exists()  # nothing ran to its end
    # a plain submit resumes all three
    proc = _submit_proc(tmp_path, 3, 1, "0.05")
    out, err = proc.communicate(timeout=120)
    assert "RESULT 3 3 0 0" in out, out + err


def test_a_killed_local_trial_is_lost_and_decided_once(tmp_path):
    proc = _submit_proc(tmp_path, 1, 1, "60")
    layout = StudyLayout(tmp_path / "runs" / "t")
    _wait(lambda: layout.trials_dir.exists() and "running" in _states(layout).values(), what="a running trial")
    (tid,) = _states(layout)
    os.kill(store.read(layout.trial(tid)).pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    rec = store.read(layout.trial(tid))
    assert rec.state == "failed" and rec.error["class"] == "LostProcess" and "signal 9" in rec.error["message"]


def _quick_spec(tmp_path: Path, out: Path, epochs: int = 5, name: str = "spec.yaml") -> Path:
    spec = tmp_path / name
    spec.write_text(one_trial_spec(out, tmp_path / "data", epochs))
    return spec


def _cli(args: list[str], cwd: Path, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "vlsm-batch"), *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=sigint_as_in_a_terminal,
        start_new_session=True,  # its own process group, which gets the SIGINT a terminal would send
        **popen,
    )


def _history_epochs(trial_root: Path) -> int:
    path = trial_root / "history.csv"
    return max(0, len(path.read_text().splitlines()) - 1) if path.is_file() else 0


def test_ctrl_c_mid_fit_records_cancelled_and_a_moved_study_resumes_to_the_same_metrics(tmp_path):
    """Ctrl-C (SIGINT to the process group) during a real fit; then `mv` the study; the same submit command
    (pointed at the new place) resumes and ends with the metrics of an uninterrupted run."""
    first = tmp_path / "runs" / "life"
    spec = _quick_spec(tmp_path, first)
    proc = _cli(["submit", str(spec), "--no-progress"], tmp_path)
    layout = StudyLayout(first)
    # the epoch's history row is written before its checkpoint (EpochReport): wait for both
    _wait(
        lambda: (
            layout.trials_dir.exists()
            and any(
                _history_epochs(p) >= 1 and (p / "checkpoints" / "last.ckpt").is_file()
                for p in layout.trials_dir.iterdir()
            )
        ),
        timeout_s=240,
        what="the first epoch and its checkpoint",
    )
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert "run the same submit command again to resume" in err
    (tid,) = _states(layout)
    rec = store.read(layout.trial(tid))
    assert rec.state == "cancelled" and rec.starts == 1, rec
    assert (layout.trial(tid).checkpoints / "last.ckpt").is_file()  # its checkpoint is kept
    done_epochs = _history_epochs(layout.trial(tid).root)

    moved = tmp_path / "elsewhere" / "life"
    moved.parent.mkdir()
    shutil.move(str(first), str(moved))
    spec = _quick_spec(tmp_path, moved)
    proc = _cli(["submit", str(spec), "--no-progress"], tmp_path)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, out + err
    assert "1 done" in out
    rec = store.read(StudyLayout(moved).trial(tid))
    assert rec.state == "done" and rec.starts == 2
    resumed = json.loads(StudyLayout(moved).trial(tid).metrics.read_text())
    history = (StudyLayout(moved).trial(tid).root / "history.csv").read_text().splitlines()
    assert [int(line.split(",")[0]) for line in history[1:]] == [1, 2, 3, 4, 5]  # no epoch repeated or lost
    assert done_epochs >= 1

    reference = tmp_path / "runs" / "reference"
    spec = _quick_spec(tmp_path, reference, name="ref.yaml")
    proc = _cli(["submit", str(spec), "--no-progress"], tmp_path)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, out + err
    alone = json.loads(StudyLayout(reference).trial(tid).metrics.read_text())
    for key in ("val/dice", "val/loss", "test/dice", "best_epoch", "epochs"):
        assert resumed[key] == pytest.approx(alone[key], abs=1e-6), key
    proc = _cli(["status", "--study", str(moved), "--json"], tmp_path)
    out, err = proc.communicate(timeout=60)
    row = json.loads(out)["trials"][0]
    assert row["state"] == "done" and row["starts"] == 2 and row["attempt"] == 2


def test_an_edited_spec_shows_what_changed_and_versions_are_recorded(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    monkeypatch.setenv("VLSM_TEST_INTERVALS", str(tmp_path / "iv.jsonl"))
    monkeypatch.setenv("VLSM_TEST_SLEEP", "0.05")
    from helpers import SLEEPY

    from vlsm_batch.jobs.submit import submit
    from vlsm_batch.spec import load_spec
    from vlsm_batch.trials import expand

    out = tmp_path / "runs" / "life"
    changes = []
    spec = load_spec(_quick_spec(tmp_path, out, epochs=1))
    submit(spec, expand(spec), progress=False, train=SLEEPY, on_change=changes.append)
    spec = load_spec(_quick_spec(tmp_path, out, epochs=2))
    result = submit(spec, expand(spec), progress=False, train=SLEEPY, on_change=changes.append)
    assert not changes[0].changed and changes[1].changed
    summary = changes[1].summary()
    assert "-  max_epochs: 1" in summary and "+  max_epochs: 2" in summary
    assert "it adds 1 trial(s)" in summary and "max_epochs 1 -> 2" in summary
    layout = StudyLayout(out)
    versions = [json.loads(line) for line in layout.spec_versions.read_text().splitlines()]
    assert len(versions) == 2 and versions[1]["previous"] == versions[0]["version"]
    for v in versions:
        assert layout.spec_version_copy(v["version"]).is_file()
    assert {store.read(layout.trial(t)).spec_version for t in result.launched} == {versions[1]["version"]}
    assert main(["status", "--study", str(out)]) == 0
    assert "trials by spec version" in capsys.readouterr().out


def test_a_full_disk_fails_the_trial_as_disk_full_and_submit_goes_on(tmp_path, monkeypatch):
    """ENOSPC injected where a trial writes its results: DiskFull naming the file; submit itself does not crash,
    the other trials finish, and `--retry-failed` after freeing space finishes the study without hand edits."""
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    monkeypatch.setenv("VLSM_TEST_INTERVALS", str(tmp_path / "iv.jsonl"))
    monkeypatch.setenv("VLSM_TEST_SLEEP", "0.05")
    monkeypatch.setenv("VLSM_TEST_DISK_FULL", str(tmp_path / "disk-is-full"))
    (tmp_path / "disk-is-full").write_text("2")  # the stand-in's next 2 result writes hit ENOSPC
    from helpers import make_spec

    from vlsm_batch.jobs.submit import submit
    from vlsm_batch.spec.types import ResourcesSpec
    from vlsm_batch.trials import expand

    spec = make_spec(tmp_path, trials=4, resources=ResourcesSpec(executor="local", max_parallel=1, timeout_min=5))
    result = submit(spec, expand(spec), progress=False, train="helpers:disk_filling_train")
    assert len(result.local.done) == 2 and len(result.local.failed) == 2
    layout = StudyLayout(spec.output_dir)
    for tid in result.local.failed:
        err = store.read(layout.trial(tid)).error
        assert err["class"] == "DiskFull" and "metrics.json" in err["message"] and "--retry-failed" in err["message"]
    retried = submit(spec, expand(spec), progress=False, retry_failed=True, train="helpers:disk_filling_train")
    assert sorted(retried.launched) == sorted(result.local.failed) and len(retried.local.done) == 2
