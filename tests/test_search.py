"""Adaptive search (tpe) and pruning (asha, median) with real processes and real Optuna journals.

Stand-in trainings (tests/search_helpers.py) report a per-epoch objective through the same hook as the real
training, so a study of 8-12 trials runs in seconds; one test runs the real tiny CLIPSeg with the real Lightning
callback. The Slurm requeue case lives in test_search_slurm.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest
from helpers import make_spec, one_trial_spec
from optuna.trial import TrialState
from search_helpers import CURVE

from vlsm_batch.cli import main
from vlsm_batch.errors import SpecError
from vlsm_batch.jobs import store
from vlsm_batch.jobs.submit import submit
from vlsm_batch.layout import StudyLayout, read_json
from vlsm_batch.search.optuna_study import open_study
from vlsm_batch.spec import load_spec
from vlsm_batch.spec.types import Distribution, PrunerSpec, ResourcesSpec, TrainSpec
from vlsm_batch.trials import expand

TESTS = Path(__file__).parent

HEAD = "study: t\nmodels: [clipseg-tiny]\ndatasets: [synthetic]\nstrategies: [coop]\n"  # lines 1-4


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return tmp_path


def search_spec(tmp_path: Path, method: str = "tpe", trials: int = 10, pruner: PrunerSpec | None = None, **over):
    base = make_spec(
        tmp_path,
        train=TrainSpec(max_epochs=over.pop("epochs", 9), min_epochs=3, batch_size=4),
        resources=ResourcesSpec(executor="local", max_parallel=over.pop("parallel", 2), timeout_min=5),
        space={"lr": Distribution("log_uniform", 1e-5, 1e-1), "prompt_depth": Distribution("int", 1, 4)},
        **over,
    )
    search = dataclasses.replace(
        base.search, method=method, trials=trials, n_startup_trials=4, pruner=pruner or PrunerSpec()
    )
    return dataclasses.replace(base, search=search)


def records(spec) -> dict[str, store.TrialRecord]:
    layout = StudyLayout(spec.output_dir)
    return {t.trial_id: store.read(layout.trial(t.trial_id)) for t in expand(spec).runnable}


def journal_trials(spec) -> list[optuna.trial.FrozenTrial]:
    """Every Optuna trial of the study's (single) cell, read back from its journal file."""
    (trial,) = {t.optuna["study"]: t for t in expand(spec).runnable}.values()
    return open_study(spec.output_dir, trial.optuna).trials


# --- spec -------------------------------------------------------------------------------------------------------

BAD = [
    ("unknown-pruner", "search:\n  method: tpe\n  trials: 4\n  pruner: {type: hyperband}\n", 8, 18,
     "'hyperband' is not allowed; valid: asha, median, none"),
    ("grace-over-max-epochs", "search:\n  method: random\n  trials: 4\n  pruner: {type: asha, grace: 50}\n"
     "train: {max_epochs: 10}\n", 8, 31, "grace 50 is larger than train.max_epochs 10"),
    ("tpe-grid-only", "search:\n  method: tpe\n  trials: 20\n  space:\n    prompt_depth: {int: [1, 4]}\n", 6, 11,
     "tpe over coop's space of 4 combination(s) (choice/int only) would ask repeated points"),
    ("warmup-on-asha", "search:\n  method: tpe\n  trials: 4\n  pruner: {type: asha, warmup: 2}\n", 8, 24,
     "warmup does not apply here: pruner asha takes min_resource, reduction_factor, grace"),
    ("startup-on-random", "search:\n  method: random\n  trials: 4\n  n_startup_trials: 2\n", 8, 3,
     "n_startup_trials applies to method tpe only"),
    ("tpe-without-trials", "search:\n  method: tpe\n", 6, 11, "search.trials: required for method tpe"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "line", "col", "fragment"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_search_is_reported_at_its_position(tmp_path, text, line, col, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(HEAD + text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    errors = str(info.value).splitlines()
    assert any(e.startswith(f"{path}:{line}:{col}: ") and fragment in e for e in errors), "\n".join(errors)


def test_plan_says_tpe_is_adaptive_without_importing_optuna(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(
        HEAD + f"output_dir: {tmp_path / 'out'}\nsearch:\n  method: tpe\n  trials: 12\n  n_startup_trials: 5\n"
        "  space: {lr: {log_uniform: [1.0e-4, 1.0e-2]}}\n  pruner: {type: asha, min_resource: 2}\n"
        "train: {max_epochs: 6}\n"
    )
    code = textwrap.dedent(f"""
        import sys
        from vlsm_batch.cli import main
        rc = main(["plan", {str(spec)!r}])
        print("OPTUNA", "optuna" in sys.modules)
        raise SystemExit(rc)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "12 trials will be asked from 1 Optuna TPE studies" in out.stdout and "adaptively" in out.stdout
    assert "pruner asha (min_resource 2, reduction_factor 3)" in out.stdout
    assert "OPTUNA False" in out.stdout


def test_tpe_ids_are_stable_before_values_are_known_and_raising_trials_keeps_them(tmp_path):
    small, large = expand(search_spec(tmp_path, trials=3)), expand(search_spec(tmp_path, trials=5))
    ids = [t.trial_id for t in small.trials]
    assert ids == [t.trial_id for t in large.trials][:3] and len(set(ids)) == 3
    assert all("lr" not in t.params and t.adaptive for t in small.trials)
    assert len({t.optuna["study"] for t in large.trials}) == 1  # one Optuna study per cell and seed
    other_seed = expand(search_spec(tmp_path, trials=3, search_seed=7))
    assert not set(ids) & {t.trial_id for t in other_seed.trials}  # another search is another study


# --- local studies ----------------------------------------------------------------------------------------------


def test_local_tpe_with_asha_prunes_some_trials_and_everything_agrees(env, capsys):
    """A real local study: 10 tpe trials, asha; store, journal, status and analyze tell the same story, and a
    resubmission is idempotent; raising trials continues the same Optuna study; pruned is never retried."""
    spec = search_spec(env, trials=10, pruner=PrunerSpec("asha", min_resource=1, reduction_factor=3))
    result = submit(spec, expand(spec), progress=False, train=CURVE)
    assert len(result.launched) == 10
    recs = records(spec)
    states = sorted(str(r.state) for r in recs.values())
    assert set(states) == {"done", "pruned"} and states.count("pruned") >= 3, states
    layout = StudyLayout(spec.output_dir)
    journal = {t.user_attrs["vlsm_trial"]: t for t in journal_trials(spec)}
    assert set(journal) == set(recs)
    for tid, rec in recs.items():
        ft = journal[tid]
        assert ft.number == rec.extra["optuna_trial"] and ft.params["lr"] == pytest.approx(
            rec.extra["params"]["lr"], rel=1e-5
        )
        config = read_json(layout.trial(tid).config)
        assert config["params"]["lr"] == rec.extra["params"]["lr"]  # the asked values reach the training
        if rec.state == "pruned":
            assert ft.state == TrialState.PRUNED and rec.pruned_epoch == max(ft.intermediate_values)
            assert (layout.trial(tid).root / "history.csv").is_file()  # history kept
        else:
            assert ft.state == TrialState.COMPLETE
            assert ft.value == pytest.approx(read_json(layout.trial(tid).metrics)["val/dice"])

    capsys.readouterr()
    assert main(["status", "--study", str(spec.output_dir)]) == 0
    out = capsys.readouterr().out
    n_pruned = states.count("pruned")
    assert f"{n_pruned} pruned (stopped early by the pruner" in out and "at epoch" in out
    assert main(["analyze", "--study", str(spec.output_dir), "--format", "json", "--curves", "none"]) == 0
    analysis = json.loads(capsys.readouterr().out)
    assert analysis["states"] == {"done": 10 - n_pruned, "pruned": n_pruned} and "failed" not in analysis["states"]
    best_id = analysis["best"][0]["trial_ids"]
    assert recs[best_id].state == "done"

    again = submit(spec, expand(spec), progress=False, train=CURVE, retry_failed=True)
    assert again.launched == [] and again.skipped_done == 10 and len(journal_trials(spec)) == 10

    more = search_spec(env, trials=13, pruner=PrunerSpec("asha", min_resource=1, reduction_factor=3))
    third = submit(more, expand(more), progress=False, train=CURVE)
    assert len(third.launched) == 3
    numbers = sorted(t.number for t in journal_trials(more))
    assert numbers == list(range(13))  # the same Optuna study went on: 10 earlier results informed the new asks


def test_random_search_with_a_median_pruner_keeps_its_values(env):
    """Pruning needs an Optuna study even when the values are not Optuna's: each trial registers its own."""
    spec = search_spec(env, method="random", trials=8, parallel=1, pruner=PrunerSpec("median", n_startup_trials=2))
    submit(spec, expand(spec), progress=False, train=CURVE)
    recs = records(spec)
    assert "pruned" in {str(r.state) for r in recs.values()}
    by_id = {t.trial_id: t for t in expand(spec).runnable}
    for ft in journal_trials(spec):
        trial = by_id[ft.user_attrs["vlsm_trial"]]
        assert ft.params == {"lr": trial.params["lr"], "prompt_depth": trial.params["prompt_depth"]}


JOURNAL_WRITER = """
import sys
from pathlib import Path
from vlsm_batch.search.optuna_study import open_study, make_sampler
root, opt, n, who = Path(sys.argv[1]), {"study": "cell", "journal": "search/cell.journal", "direction": "maximize"}, \
    int(sys.argv[2]), sys.argv[3]
study = open_study(root, opt, make_sampler({"sampler": {"type": "tpe", "n_startup_trials": 3}}, who, 1, None))
for i in range(n):
    trial = study.ask()
    x = trial.suggest_float("x", -3, 3)
    trial.set_user_attr("who", f"{who}-{i}")
    trial.report(-x * x, 1)
    study.tell(trial, -x * x)
"""


def test_a_journal_written_by_eight_concurrent_processes_loses_nothing(tmp_path):
    procs = [
        subprocess.Popen([sys.executable, "-c", JOURNAL_WRITER, str(tmp_path), "12", f"p{k}"], stderr=subprocess.PIPE)
        for k in range(8)
    ]
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err.decode()
    opt = {"study": "cell", "journal": "search/cell.journal"}
    trials = open_study(tmp_path, opt).trials
    assert sorted(t.number for t in trials) == list(range(96))
    assert {t.user_attrs["who"] for t in trials} == {f"p{k}-{i}" for k in range(8) for i in range(12)}
    assert all(t.state == TrialState.COMPLETE and t.value == -(t.params["x"] ** 2) for t in trials)


def test_a_sigkilled_task_is_reconciled_and_a_resubmit_asks_a_replacement(env):
    spec = search_spec(env, trials=1, parallel=1, pruner=PrunerSpec("asha"))
    hang = env / "started"
    code = textwrap.dedent(f"""
        import os, sys, dataclasses
        sys.path.insert(0, {str(TESTS)!r})
        from test_search import search_spec
        from vlsm_batch.jobs.submit import submit
        from vlsm_batch.spec.types import PrunerSpec
        from vlsm_batch.trials import expand
        spec = search_spec(__import__("pathlib").Path({str(env)!r}), trials=1, parallel=1, pruner=PrunerSpec("asha"))
        submit(spec, expand(spec), progress=False, train={CURVE!r})
    """)
    proc = subprocess.Popen(
        [sys.executable, "-c", code], env={**os.environ, "VLSM_TEST_HANG_FILE": str(hang)}, stderr=subprocess.PIPE
    )
    deadline = time.time() + 90
    while not hang.exists():
        assert time.time() < deadline and proc.poll() is None, "the trial never started"
        time.sleep(0.2)
    (tid,) = records(spec)
    first = records(spec)[tid].extra["optuna_trial"]
    assert journal_trials(spec)[first].state == TrialState.RUNNING
    os.kill(store.read(StudyLayout(spec.output_dir).trial(tid)).pid, signal.SIGKILL)
    proc.communicate(timeout=60)

    assert main(["status", "--study", str(spec.output_dir)]) == 0  # the one place that decides "lost"
    assert records(spec)[tid].state == "failed" and records(spec)[tid].error["class"] == "LostProcess"
    assert journal_trials(spec)[first].state == TrialState.FAIL  # no longer RUNNING for the sampler

    submit(spec, expand(spec), progress=False, train=CURVE, retry_failed=True)
    rec = records(spec)[tid]
    assert rec.state == "done" and rec.extra["optuna_trial"] != first
    trials = journal_trials(spec)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert read_json(StudyLayout(spec.output_dir).trial(tid).config)["optuna_trials"] == [first, trials[1].number]


# --- the real training ------------------------------------------------------------------------------------------

REAL_SEARCH = """\
  method: tpe
  trials: 4
  n_startup_trials: 4
  seed: 3
  objective: {metric: val/dice, mode: max}
  space:
    lr: {log_uniform: [1.0e-5, 3.0e-1]}
  pruner: {type: asha, min_resource: 1, reduction_factor: 2}
"""


def test_real_clipseg_training_reports_every_epoch_and_a_pruned_trial_stops_with_its_checkpoint(tmp_path):
    """The real Lightning callback on the tiny CLIPSeg: every epoch's val/dice reaches the journal, a pruned
    trial stops at the rung it lost at (min_epochs notwithstanding), keeps last.ckpt and history, and ends pruned."""
    path = tmp_path / "real.yaml"
    path.write_text(
        one_trial_spec(
            tmp_path / "out", tmp_path / "data", 3, study="real", search=REAL_SEARCH, train_extra="  prompt_depth: 1\n"
        )
    )
    assert main(["submit", str(path), "--no-progress"]) == 0
    spec = load_spec(path)
    layout = StudyLayout(spec.output_dir)
    recs = records(spec)
    journal = {t.user_attrs["vlsm_trial"]: t for t in journal_trials(spec)}
    assert {str(r.state) for r in recs.values()} <= {"done", "pruned"} and len(journal) == 4
    assert any(r.state == "pruned" for r in recs.values()), {k: str(r.state) for k, r in recs.items()}
    for tid, rec in recs.items():
        rows = list(csv_rows(layout.trial(tid).root / "history.csv"))
        reported = journal[tid].intermediate_values
        assert reported == {int(r["epoch"]): pytest.approx(float(r["val/dice"])) for r in rows}
        assert (layout.trial(tid).checkpoints / "last.ckpt").is_file()
        if rec.state == "pruned":
            assert len(rows) == rec.pruned_epoch < 3 and journal[tid].state == TrialState.PRUNED
        else:
            assert len(rows) == 3 and journal[tid].state == TrialState.COMPLETE


def csv_rows(path: Path):
    import csv

    with open(path, newline="") as f:
        yield from csv.DictReader(f)
