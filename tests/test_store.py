"""The trial store: legal and illegal transitions, claims raced by real processes, locks without POSIX locks."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vlsm_batch.jobs import locks, store
from vlsm_batch.jobs.store import ClaimRefused, IllegalTransition
from vlsm_batch.layout import TrialPaths

TESTS = Path(__file__).parent


def _pending(tmp_path: Path, job: str | None = "7_0") -> TrialPaths:
    paths = TrialPaths(tmp_path / "trial")
    store.submit(paths, "slurm", "v1", max_attempts=3)
    if job:
        store.assign(paths, job)
    return paths


def test_a_done_trial_is_never_overwritten(tmp_path):
    paths = _pending(tmp_path)
    claim = store.claim(paths, "7_0", "slurm")
    store.transition(paths, "finish")
    claim.release()
    for event in ("fail", "cancel", "requeue", "claim", "prune"):
        with pytest.raises(IllegalTransition, match="done"):
            store.transition(paths, event)
    with pytest.raises(IllegalTransition):
        store.submit(paths, "slurm", "v2", retry_failed=True)
    rec = store.read(paths)
    assert rec.state == "done" and rec.starts == 1 and rec.attempt == 1
    assert [e["event"] for e in rec.events] == ["submit", "assign", "claim", "finish"]


def test_failed_needs_retry_and_cancelled_resubmits(tmp_path):
    paths = _pending(tmp_path)
    store.claim(paths, "7_0", "slurm").release()
    store.transition(paths, "fail", error={"class": "X", "message": "boom"})
    with pytest.raises(IllegalTransition, match="--retry-failed"):
        store.submit(paths, "slurm", "v1")
    assert store.submit(paths, "slurm", "v1", retry_failed=True).state == "pending"
    store.transition(paths, "cancel")
    assert store.submit(paths, "local", "v1").state == "pending"


def test_claim_checks_the_job_and_the_state(tmp_path):
    paths = _pending(tmp_path)
    with pytest.raises(ClaimRefused, match="duplicate queue entry"):
        store.claim(paths, "9_0", "slurm")
    store.transition(paths, "cancel")
    with pytest.raises(ClaimRefused, match="cancelled"):
        store.claim(paths, "7_0", "slurm")
    assert store.read(paths).starts == 0


def test_a_requeued_job_takes_over_its_own_running_record(tmp_path):
    """After a hard kill (node failure) Slurm requeues the same job id while the record still says running."""
    paths = _pending(tmp_path)
    store.claim(paths, "7_0", "slurm").release()  # the process died without recording anything
    claim = store.claim(paths, "7_0", "slurm")
    assert claim.record.attempt == 2 and claim.record.starts == 2
    claim.release()
    with pytest.raises(ClaimRefused, match="not 8_0"):
        store.claim(paths, "8_0", "slurm")


def test_attempt_limit_fails_with_the_limit_and_the_fix(tmp_path):
    paths = _pending(tmp_path)
    for _ in range(3):
        store.claim(paths, "7_0", "slurm").release()
        store.transition(paths, "requeue", requeue_reason="USR2")
    with pytest.raises(ClaimRefused, match="attempt limit reached"):
        store.claim(paths, "7_0", "slurm")
    rec = store.read(paths)
    assert rec.state == "failed" and rec.error["class"] == "AttemptLimit"
    assert "max_attempts=3" in rec.error["message"] and "timeout_min" in rec.error["message"]


RACE = """
import json, sys, time
from pathlib import Path
from vlsm_batch.jobs import store
from vlsm_batch.layout import TrialPaths
paths = TrialPaths(Path(sys.argv[1]))
start = float(sys.argv[2])
while time.time() < start:
    time.sleep(0.001)
try:
    claim = store.claim(paths, "7_0", "slurm", wait_s=0.5)
except store.ClaimRefused as exc:
    print(json.dumps({"won": False, "why": str(exc)}))
else:
    time.sleep(1.5)  # hold it while the others try
    store.transition(paths, "finish")
    claim.release()
    print(json.dumps({"won": True}))
"""


def test_processes_racing_for_one_trial_train_it_once(tmp_path):
    import time

    paths = _pending(tmp_path)
    start = time.time() + 1.5
    procs = [
        subprocess.Popen([sys.executable, "-c", RACE, str(paths.root), str(start)], stdout=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    results = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert sum(r["won"] for r in results) == 1, results
    assert all("already being trained" in r["why"] or "it is done" in r["why"] for r in results if not r["won"])
    rec = store.read(paths)
    assert rec.state == "done" and rec.starts == 1


def test_lock_is_dropped_when_its_holder_is_killed(tmp_path):
    code = textwrap.dedent(
        f"""
        import time
        from vlsm_batch.jobs.locks import FileLock
        FileLock({str(tmp_path / "l")!r}, what="holder").acquire()
        print("held", flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    with pytest.raises(locks.LockBusy) as busy:
        locks.FileLock(tmp_path / "l").acquire(timeout_s=0.2)
    assert busy.value.holder["what"] == "holder" and busy.value.holder["pid"] == proc.pid
    assert locks.is_locked(tmp_path / "l") is True
    proc.kill()
    proc.wait()
    with locks.FileLock(tmp_path / "l").acquire(timeout_s=2):
        pass
    assert locks.is_locked(tmp_path / "l") is False


def test_exclusive_file_fallback_where_posix_locks_are_refused(tmp_path, monkeypatch):
    def no_locks(fd, cmd, *a):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(locks.fcntl, "lockf", no_locks)
    first = locks.FileLock(tmp_path / "l", what="first").acquire(timeout_s=0)
    with pytest.raises(locks.LockBusy):
        locks.FileLock(tmp_path / "l", what="second").acquire(timeout_s=0.1)
    assert json.loads((tmp_path / "l.excl").read_text())["what"] == "first"  # an O_EXCL file names its holder
    first.release()
    assert not (tmp_path / "l.excl").exists()
    locks.FileLock(tmp_path / "l").acquire(timeout_s=0).release()
    # a stale claim file of a dead process on this host is taken over
    (tmp_path / "l.excl").write_text(json.dumps({"pid": 2**22 + 12345, "host": os.uname().nodename}))
    locks.FileLock(tmp_path / "l").acquire(timeout_s=1).release()


def test_unknown_keys_survive_and_a_bad_state_reads_as_failed(tmp_path):
    paths = TrialPaths(tmp_path / "t")
    paths.root.mkdir()
    paths.status.write_text(json.dumps({"state": "pending", "future_field": 3}))
    rec = store.transition(paths, "observe", slurm_state="PENDING (Priority)")
    assert rec.extra["future_field"] == 3 and json.loads(paths.status.read_text())["future_field"] == 3
    paths.status.write_text(json.dumps({"state": "exploded"}))
    assert store.read(paths).state == "failed"


def test_disk_full_errors_name_the_path():
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/runs/x/trials/a/checkpoints/last.ckpt")
        except OSError as exc:
            raise RuntimeError("saving failed") from exc
    except RuntimeError as outer:
        err = store.error_record(outer)
    assert err["class"] == "DiskFull" and "last.ckpt" in err["message"] and "--retry-failed" in err["message"]


@pytest.mark.parametrize(
    ("state", "executor", "job", "plain", "retry"),
    [
        ("new", None, None, True, True),
        ("cancelled", "slurm", "7_0", True, True),
        ("pending", "local", None, True, True),  # a local run stopped before it got there
        ("pending", "slurm", "7_0", False, False),  # queued on Slurm
        ("requeued", "slurm", "7_0", False, False),  # Slurm runs it again by itself
        ("running", "slurm", "7_0", False, False),
        ("failed", "slurm", "7_0", False, True),
        ("done", "slurm", "7_0", False, False),
        ("pruned", "slurm", "7_0", False, False),
    ],
)
def test_what_submit_and_retry_failed_launch(state, executor, job, plain, retry):
    from vlsm_batch.jobs.submit import launchable

    record = store.TrialRecord(state=store.State(state), executor=executor, job_id=job)
    assert launchable(record, retry_failed=False) is plain
    assert launchable(record, retry_failed=True) is retry
