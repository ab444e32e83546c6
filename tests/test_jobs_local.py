"""The job layer on the local executor, with a stand-in task (real subprocesses, no training)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import make_spec, max_overlap

from vlsm_batch.jobs.store import read as read_record
from vlsm_batch.jobs.submit import submit
from vlsm_batch.layout import StudyLayout
from vlsm_batch.trials import expand

TESTS = Path(__file__).parent


@pytest.fixture
def fake_env(tmp_path, monkeypatch):
    intervals = tmp_path / "intervals.jsonl"
    monkeypatch.setenv("VLSM_TEST_INTERVALS", str(intervals))
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    monkeypatch.setenv("VLSM_TEST_SLEEP", "0.8")
    return intervals


def _submit(spec, **kw):
    from helpers import SLEEPY

    return submit(spec, expand(spec), progress=False, train=SLEEPY, **kw)


def test_local_parallelism_limit_and_resubmission(tmp_path, fake_env):
    spec = make_spec(tmp_path, trials=5)
    result = _submit(spec)
    assert result.executor == "local"
    assert len(result.launched) == 5
    assert len(result.local.done) == 5
    peak = max_overlap(fake_env)
    assert peak == 2, f"max_parallel is 2 but {peak} trials overlapped"

    layout = StudyLayout(spec.output_dir)
    for name in ("study.yaml", "trials.jsonl", "submissions.jsonl"):
        assert (layout.root / name).is_file()
    sub = json.loads(layout.submissions.read_text().splitlines()[0])
    assert sub["executor"] == "local" and sub["n_trials"] == 5
    assert "versions" in sub and "git_commit" in sub and sub["time"]
    for t in expand(spec).trials:
        assert str(read_record(layout.trial(t.trial_id)).state) == "done"
        assert json.loads(layout.trial(t.trial_id).config.read_text())["trial_id"] == t.trial_id

    again = _submit(spec)
    assert again.launched == []
    assert again.skipped_done == 5
    assert len(fake_env.read_text().splitlines()) == 5  # nothing ran a second time


def test_progress_in_a_log_file_is_one_line_per_finished_trial(tmp_path, fake_env, monkeypatch, capsys):
    from helpers import SLEEPY

    from vlsm_batch.spec.types import Distribution

    monkeypatch.setenv("VLSM_TEST_SLEEP", "0.1")
    monkeypatch.setenv("VLSM_TEST_FAIL_DEPTH", "2")
    spec = make_spec(tmp_path, method="grid", trials=None, space={"prompt_depth": Distribution("int", 1, 3)})
    submit(spec, expand(spec), progress=True, train=SLEEPY)  # stderr is captured: not a terminal
    lines = capsys.readouterr().err.splitlines()
    finished = [line for line in lines if line.startswith("[")]
    assert [line.split("]")[0] for line in finished] == ["[1/3", "[2/3", "[3/3"]
    assert sum(line.endswith("failed (vlsm-batch status shows why)") for line in finished) == 1
    assert not any("\r" in line for line in lines)


def test_failed_trial_does_not_stop_the_study_and_retry_relaunches_only_it(tmp_path, fake_env, monkeypatch):
    from vlsm_batch.spec.types import Distribution

    monkeypatch.setenv("VLSM_TEST_SLEEP", "0.1")
    monkeypatch.setenv("VLSM_TEST_FAIL_DEPTH", "2")
    spec = make_spec(tmp_path, method="grid", trials=None, space={"prompt_depth": Distribution("int", 1, 3)})
    result = _submit(spec)
    assert len(result.local.done) == 2 and len(result.local.failed) == 1

    again = _submit(spec)
    assert again.launched == [] and again.skipped_failed == 1

    monkeypatch.setenv("VLSM_TEST_FAIL_DEPTH", "-1")
    retried = _submit(spec, retry_failed=True)
    assert retried.launched == result.local.failed
    assert len(retried.local.done) == 1


def test_more_trials_runs_only_the_difference(tmp_path, fake_env, monkeypatch):
    monkeypatch.setenv("VLSM_TEST_SLEEP", "0.05")
    first = _submit(make_spec(tmp_path, trials=2))
    second = _submit(make_spec(tmp_path, trials=4))
    assert len(second.launched) == 2
    assert set(second.launched).isdisjoint(first.launched)
    manifest = StudyLayout(make_spec(tmp_path).output_dir).trials_manifest.read_text().splitlines()
    assert len(manifest) == 4
