"""tpe on the real local Slurm (slurm/start.sh): `scontrol requeue` mid-trial continues the same Optuna trial.

Skipped with the reason when no controller answers (required when CI=true), like test_slurm.py, whose fixture
this module reuses. The task is the real Checkpointable (TrialTask) around the per-epoch stand-in training.
"""

from __future__ import annotations

import dataclasses
import subprocess
import time

import pytest
from optuna.trial import TrialState
from search_helpers import curve_train
from test_search import journal_trials, records
from test_slurm import TESTS, slurm, slurm_spec, wait_for  # noqa: F401  (slurm: the cluster fixture)

from vlsm_batch.jobs.submit import submit
from vlsm_batch.jobs.task import TrialTask
from vlsm_batch.layout import StudyLayout, read_json
from vlsm_batch.spec.types import Distribution, PrunerSpec, TrainSpec
from vlsm_batch.trials import expand


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("VLSM_TEST_EPOCH_S", "1")
    return tmp_path


def _rows(path):
    return path.read_text().splitlines()[1:] if path.is_file() else []


def test_scontrol_requeue_continues_the_same_optuna_trial(slurm, env):  # noqa: F811
    base = slurm_spec(
        env,
        trials=1,
        space={"lr": Distribution("log_uniform", 1e-4, 1e-2)},
        train=TrainSpec(max_epochs=12, min_epochs=1, batch_size=4),
    )
    pruner = PrunerSpec("median", n_startup_trials=5)  # reports every epoch; never prunes a lone trial
    spec = dataclasses.replace(base, search=dataclasses.replace(base.search, method="tpe", pruner=pruner))
    result = submit(spec, expand(spec), progress=False, task=TrialTask(train=curve_train))
    (tid,) = result.launched
    history = StudyLayout(spec.output_dir).trial(tid).root / "history.csv"
    deadline = time.time() + 120
    while len(_rows(history)) < 3:
        assert time.time() < deadline, "the trial never got going"
        time.sleep(0.5)
    asked = records(spec)[tid].extra["optuna_trial"]
    subprocess.run(["scontrol", "requeue", result.job_ids[0]], check=True, timeout=30)
    st = wait_for(spec, lambda st: st[tid].get("state") in ("done", "failed", "cancelled"), timeout_s=180)
    assert st[tid]["state"] == "done" and st[tid]["starts"] == 2, st[tid]
    assert any(e["event"] == "requeue" for e in st[tid]["events"])
    (trial,) = journal_trials(spec)  # never a second ask
    assert trial.number == asked == st[tid]["optuna_trial"] and trial.state == TrialState.COMPLETE
    assert read_json(StudyLayout(spec.output_dir).trial(tid).config)["optuna_trials"] == [asked]
    assert sorted(trial.intermediate_values) == list(range(1, 13))  # both attempts reported to it
    assert [int(r.split(",")[0]) for r in _rows(history)] == list(range(1, 13))
