"""Packs on the jobs side (``resources.pack``): one process / one array task per pack, every member recorded alone.

Real worker processes and signals, with the stand-in pack training of tests/pack_job_helpers.py (no torch): it
steps its members in lock-step, one line per finished epoch in each member's history, and resumes each member
after its own last epoch. The cluster test runs on the real local Slurm (slurm/start.sh) like tests/test_slurm.py
and is skipped with the reason when no controller answers (required when CI=true).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers import make_spec, sigint_as_in_a_terminal
from pack_job_helpers import PACK_TRAIN, history, pack_train
from test_slurm import slurm, wait_for  # noqa: F401  (slurm: the cluster fixture)

from vlsm_batch.cli import main
from vlsm_batch.jobs import store
from vlsm_batch.jobs.submit import submit
from vlsm_batch.layout import StudyLayout
from vlsm_batch.spec.types import Distribution, ResourcesSpec, SlurmSpec
from vlsm_batch.trials import expand

TESTS = Path(__file__).parent
DEPTHS = {"prompt_depth": Distribution("int", 1, 4)}  # grid: four trials of one cell, depths 1..4


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("VLSM_TEST_INTERVALS", str(tmp_path / "ends.jsonl"))
    monkeypatch.setenv("VLSM_TEST_EPOCH_S", "0.3")
    monkeypatch.setenv("VLSM_TEST_EPOCHS", "3")
    return tmp_path


def local_spec(tmp_path: Path, pack: int | str = 4, max_parallel: int = 2, **over):
    res = ResourcesSpec(executor="local", max_parallel=max_parallel, timeout_min=5, pack=pack)
    return make_spec(tmp_path, resources=res, **over)


def grid_spec(tmp_path: Path, **over):
    return local_spec(tmp_path, method="grid", trials=None, space=DEPTHS, **over)


def records(spec) -> dict[str, store.TrialRecord]:
    layout = StudyLayout(spec.output_dir)
    return {t.trial_id: store.read(layout.trial(t.trial_id)) for t in expand(spec).runnable}


def ends(tmp_path: Path) -> list[list]:
    path = tmp_path / "ends.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def epochs_of(spec, tid: str) -> list[int]:
    return [h["epoch"] for h in history(StudyLayout(spec.output_dir).trial(tid).root)]


def depth_of(spec, depth: int) -> str:
    return next(t.trial_id for t in expand(spec).runnable if t.params["prompt_depth"] == depth)


# --- local ------------------------------------------------------------------------------------------------------


def test_pack_of_four_runs_eight_trials_in_two_processes(env, capsys):
    spec = local_spec(env, trials=8)
    result = submit(spec, expand(spec), progress=False, pack_train=PACK_TRAIN)
    assert [len(p) for p in result.packs] == [4, 4] and result.launched == [t for p in result.packs for t in p]
    assert sorted(result.local.done) == sorted(result.launched)
    recs = records(spec)
    assert {str(r.state) for r in recs.values()} == {"done"}
    for pack in result.packs:  # one launch id, one process, one pack list per pack
        assert len({recs[t].job_id for t in pack}) == 1 and all(recs[t].pack == pack for t in pack)
        assert len({recs[t].pid for t in pack}) == 1
        assert all(epochs_of(spec, t) == [0, 1, 2] for t in pack)
    assert len({r.job_id for r in recs.values()}) == 2
    assert len({pid for _, pid, _ in ends(env)}) == 2  # two worker processes trained all eight
    layout = StudyLayout(spec.output_dir)
    for tid in result.launched:  # every member sees the pack's log in its own logs/ (hard links)
        assert any(p.name.endswith("_log.err") for p in layout.trial(tid).log_files()), tid
    assert main(["logs", result.packs[0][3], "--study", str(layout.root), "--tail", "20"]) == 0
    assert "pack of 4 trial(s) in one process" in capsys.readouterr().out
    again = submit(spec, expand(spec), progress=False, pack_train=PACK_TRAIN)
    assert again.launched == [] and again.skipped_done == 8


def test_one_failing_member_fails_alone_and_retry_relaunches_only_it(env, monkeypatch):
    monkeypatch.setenv("VLSM_TEST_FAIL_DEPTH", "2")
    spec = grid_spec(env)
    result = submit(spec, expand(spec), progress=False, pack_train=PACK_TRAIN)
    bad = depth_of(spec, 2)
    assert result.packs == [result.launched] and result.local.failed == [bad]
    recs = records(spec)
    assert recs[bad].state == "failed" and recs[bad].error["class"] == "RuntimeError"
    assert recs[bad].error["message"] == "planted failure" and recs[bad].error["traceback_tail"]
    assert all(recs[t].state == "done" and epochs_of(spec, t) == [0, 1, 2] for t in result.launched if t != bad)
    assert epochs_of(spec, bad) == [0]  # it left the pack at its second epoch; the others went on
    monkeypatch.setenv("VLSM_TEST_FAIL_DEPTH", "-1")
    retried = submit(spec, expand(spec), progress=False, retry_failed=True, pack_train=PACK_TRAIN)
    assert retried.launched == [bad] and retried.local.done == [bad]
    assert epochs_of(spec, bad) == [0, 1, 2]  # resumed after its own last epoch
    assert records(spec)[bad].pack is None  # alone this time


def test_tpe_members_of_a_pack_each_ask_and_tell_their_own_optuna_trial(env, monkeypatch):
    import dataclasses

    from optuna.trial import TrialState
    from test_search import journal_trials

    monkeypatch.setenv("VLSM_TEST_PRUNE_INDEX", "1")
    base = local_spec(env, trials=4, max_parallel=1)
    spec = dataclasses.replace(base, search=dataclasses.replace(base.search, method="tpe", n_startup_trials=4))
    result = submit(spec, expand(spec), progress=False, pack_train=PACK_TRAIN)
    assert len(result.packs) == 1 and len(result.local.done) == 3 and len(result.local.pruned) == 1
    recs = records(spec)
    pruned = result.packs[0][1]
    assert recs[pruned].state == "pruned" and recs[pruned].pruned_epoch == 2
    numbers = {tid: r.extra["optuna_trial"] for tid, r in recs.items()}
    assert sorted(numbers.values()) == [0, 1, 2, 3]  # one ask per member
    trials = {t.number: t for t in journal_trials(spec)}
    assert trials[numbers[pruned]].state == TrialState.PRUNED
    for tid in recs:
        if tid != pruned:
            trial = trials[numbers[tid]]
            assert trial.state == TrialState.COMPLETE and trial.value == pytest.approx(
                0.1 * recs[tid].extra["params"]["prompt_depth"]
            )


SUBMIT = """
import sys
from pathlib import Path
from test_pack_jobs import grid_spec, local_spec
from pack_job_helpers import PACK_TRAIN
from vlsm_batch.jobs.submit import submit
from vlsm_batch.trials import expand

root, kind = Path(sys.argv[1]), sys.argv[2]
spec = grid_spec(root) if kind == "grid" else local_spec(root, trials=8, max_parallel=1)
result = submit(spec, expand(spec), progress=False, pack_train=PACK_TRAIN)
o = result.local
print("RESULT", len(result.launched), len(o.done), len(o.cancelled), len(o.not_started), o.interrupted)
"""


def _submit_proc(tmp_path: Path, kind: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(SUBMIT), str(tmp_path), kind],
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=sigint_as_in_a_terminal,
    )


def _wait(pred, timeout_s: float = 60, what: str = "condition"):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_cancel_of_one_member_stops_it_alone_and_submit_resumes_it(env, monkeypatch, capsys):
    monkeypatch.setenv("VLSM_TEST_EPOCHS", "10")
    monkeypatch.setenv("VLSM_TEST_EPOCH_S", "0.4")
    spec = grid_spec(env)
    proc = _submit_proc(env, "grid")
    victim = depth_of(spec, 3)
    layout = StudyLayout(spec.output_dir)
    _wait(lambda: layout.trials_dir.exists() and len(epochs_of(spec, victim)) >= 1, what="the pack's first epoch")
    assert {str(r.state) for r in records(spec).values()} == {"running"}
    assert main(["status", "--study", str(layout.root)]) == 0
    out = capsys.readouterr().out
    assert "4 of them train in 1 pack(s), one process each" in out and out.count("(pack of 4)") == 4, out
    assert main(["cancel", "--study", str(layout.root), "--trial", victim[:10]]) == 0
    out = capsys.readouterr().out
    assert "1 running and 0 waiting trial(s) share a process" in out and "0 Slurm task(s)" in out, out
    out, err = proc.communicate(timeout=60)
    assert "RESULT 4 3 1 0 False" in out, out + err
    recs = records(spec)
    assert recs[victim].state == "cancelled" and "vlsm-batch cancel" in recs[victim].error["message"]
    assert len(epochs_of(spec, victim)) < 10  # stopped mid-pack, its epochs kept
    others = [t for t in recs if t != victim]
    assert all(recs[t].state == "done" and epochs_of(spec, t) == list(range(10)) for t in others)
    assert len({recs[t].pid for t in recs}) == 1  # nobody was signalled: the one process finished the rest
    kept = epochs_of(spec, victim)
    monkeypatch.setenv("VLSM_TEST_EPOCH_S", "0.05")
    again = submit(spec, expand(spec), progress=False, pack_train=PACK_TRAIN)
    assert again.launched == [victim] and again.local.done == [victim]
    assert epochs_of(spec, victim) == list(range(10)) and epochs_of(spec, victim)[: len(kept)] == kept


def test_ctrl_c_of_a_packed_local_run_cancels_the_running_pack_and_resubmit_resumes(env, monkeypatch):
    monkeypatch.setenv("VLSM_TEST_EPOCHS", "40")
    spec = local_spec(env, trials=8, max_parallel=1)
    proc = _submit_proc(env, "random")
    layout = StudyLayout(spec.output_dir)
    _wait(
        lambda: layout.trials_dir.exists() and sum(bool(epochs_of(spec, t)) for t in records(spec)) == 4,
        what="the first pack's first epoch",
    )
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert "RESULT 8 0 4 4 True" in out, out + err
    recs = records(spec)
    started = [t for t in recs if epochs_of(spec, t)]
    assert sorted(str(recs[t].state) for t in recs) == ["cancelled"] * 4 + ["pending"] * 4
    assert all(recs[t].state == "cancelled" and "SIGINT" in recs[t].error["message"] for t in started)
    kept = {t: epochs_of(spec, t) for t in started}
    monkeypatch.setenv("VLSM_TEST_EPOCHS", "6")
    monkeypatch.setenv("VLSM_TEST_EPOCH_S", "0.05")
    again = submit(spec, expand(spec), progress=False, pack_train=PACK_TRAIN)
    assert sorted(again.launched) == sorted(recs) and len(again.local.done) == 8
    for tid in recs:  # the interrupted ones continue after their own last epoch, nothing repeated
        assert epochs_of(spec, tid) == list(range(max(6, len(kept.get(tid, []))))), tid
        assert epochs_of(spec, tid)[: len(kept.get(tid, []))] == kept.get(tid, [])


def test_run_pack_task_records_each_member_and_refuses_finished_ones(env):
    """In-process: a done member is refused at claim, the others train; a pack training that forgets a member
    leaves it failed (never running)."""
    from vlsm_batch.jobs.task import run_pack_task

    spec = grid_spec(env)
    layout = StudyLayout(spec.output_dir)
    from vlsm_batch.jobs.study import write_study

    write_study(spec, expand(spec).runnable)
    ids = [t.trial_id for t in expand(spec).runnable]
    for tid in ids:
        store.submit(layout.trial(tid), "local", "v")
        store.assign(layout.trial(tid), "job-1", pack=ids)
    first = run_pack_task([layout.trial(ids[0]).root], "local", train=pack_train, job_id="job-1")
    assert "done" in first[ids[0]] and records(spec)[ids[0]].state == "done"

    def forgetful(roots, events):
        roots = list(roots)
        pack_train(roots[:-1], events)  # trains all but the last, which it never ends

    results = run_pack_task([layout.trial(t).root for t in ids], "local", train=forgetful, job_id="job-1")
    assert "skipped" in results[ids[0]] and "it is done" in results[ids[0]]["skipped"]
    recs = records(spec)
    assert all(recs[t].state == "done" for t in ids[1:3])
    assert recs[ids[3]].state == "failed" and recs[ids[3]].error["class"] == "PackMemberLost"
    assert all(recs[t].pack == ids[1:] for t in ids[1:])  # the members this process claimed
    assert not any(store.claim_held(layout.trial(t)) for t in ids)  # every claim released


# --- Slurm ------------------------------------------------------------------------------------------------------


def test_scontrol_requeue_of_a_pack_requeues_every_unfinished_member_and_each_resumes(slurm, env, monkeypatch):  # noqa: F811
    from vlsm_batch.jobs.task import PackTask

    monkeypatch.setenv("VLSM_TEST_EPOCHS", "10")
    monkeypatch.setenv("VLSM_TEST_EPOCH_S", "1")
    monkeypatch.setenv("VLSM_TEST_SHORT_DEPTH", "1")  # this member is done after 2 epochs, before the requeue
    res = ResourcesSpec(
        executor="slurm", gpus_per_task=0, cpus_per_task=1, mem_gb=1, timeout_min=5, pack=3,
        slurm=SlurmSpec(partition="debug"),
    )  # fmt: skip
    spec = make_spec(env, method="grid", trials=None, space={"prompt_depth": Distribution("int", 1, 3)}, resources=res)
    result = submit(spec, expand(spec), progress=False, task=PackTask(train=pack_train))
    assert len(result.packs) == 1 and len(set(result.job_ids)) == 1  # one array task for the three
    short = depth_of(spec, 1)
    long = [t for t in result.launched if t != short]
    deadline = time.time() + 120
    while min(len(epochs_of(spec, t)) for t in long) < 3:
        assert time.time() < deadline, "the pack never got going"
        time.sleep(0.5)
    assert str(records(spec)[short].state) == "done"
    subprocess.run(["scontrol", "requeue", result.job_ids[0]], check=True, timeout=30)
    st = wait_for(spec, lambda st: all(s.get("state") in ("done", "failed", "cancelled") for s in st.values()), 180)
    assert {s["state"] for s in st.values()} == {"done"}, st
    for tid in long:  # requeued, then resumed after its own last epoch: nothing repeated, nothing skipped
        rec = st[tid]
        assert any(e["event"] == "requeue" for e in rec["events"]) and "requeued by Slurm" in rec["requeue_reason"]
        hist = history(StudyLayout(spec.output_dir).trial(tid).root)
        assert [h["epoch"] for h in hist] == list(range(10)) and len({h["attempt"] for h in hist}) == 2, hist
        assert rec["starts"] == 2 and rec["job_id"] == result.job_ids[0]
    assert st[short]["starts"] == 1 and epochs_of(spec, short) == [0, 1]  # refused at the rerun: it was done


def test_member_end_fields_match_the_training_side():
    """The stand-in's MemberEnd has the real one's fields (read from the source: no torch import here)."""
    import ast
    import dataclasses

    from pack_job_helpers import MemberEnd

    source = (TESTS.parent / "vlsm_batch" / "training" / "pack.py").read_text()
    (cls,) = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ClassDef) and n.name == "MemberEnd"]
    real = [n.target.id for n in cls.body if isinstance(n, ast.AnnAssign)]
    assert real == [f.name for f in dataclasses.fields(MemberEnd)]


def test_sbatch_text_and_preflight_count_array_tasks_not_trials(tmp_path, monkeypatch):
    from vlsm_batch.errors import SubmissionError
    from vlsm_batch.jobs import cluster
    from vlsm_batch.jobs.slurm import preflight_slurm, sbatch_plan_text

    res = ResourcesSpec(executor="slurm", timeout_min=30, pack=4, slurm=SlurmSpec("gpu"))
    spec = make_spec(tmp_path, trials=8, resources=res)
    text = sbatch_plan_text(spec, 2, max_array_size=11, n_trials=8)
    assert "(MaxArraySize 11, 2 array tasks: 8 trials in packs)" in text and "#SBATCH --array=0-1%" in text
    monkeypatch.setattr(cluster, "cluster_config", lambda: {"MaxArraySize": "11", "MaxJobCount": "100"})
    monkeypatch.setattr(cluster, "partitions", lambda: {"gpu": cluster.Partition("gpu", "UP", 60, True)})
    monkeypatch.setattr(cluster, "max_submit_jobs", lambda user: 2)
    monkeypatch.setattr(cluster, "node_resources", lambda: [])
    assert preflight_slurm(spec, 8, 2)["max_array_size"] == 11  # 8 trials in 2 tasks fit MaxSubmitJobs 2
    with pytest.raises(SubmissionError, match=r"3 array tasks \(9 trials in packs\) exceed MaxSubmitJobs"):
        preflight_slurm(spec, 9, 3)
