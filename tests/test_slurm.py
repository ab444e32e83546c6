"""Slurm submission against a real cluster (slurm/start.sh), plus the parts that need none (chunking, sbatch text).

Cluster tests are required when CI=true (scripts/test.sh starts the cluster through slurm/ci_start.sh) and skipped
elsewhere, with the reason, when no controller answers. Tasks are stand-ins from tests/helpers.py and
tests/slurm_tasks.py (importable on the node through PYTHONPATH=tests), so each runs in seconds; the requeue and
timeout tests use a stand-in training that records every finished epoch in a history file and resumes after the
last one, wrapped in the real Checkpointable (vlsm_batch.jobs.task.TrialTask).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import make_spec, max_overlap, one_trial_spec

from vlsm_batch.cli import main
from vlsm_batch.jobs import cluster
from vlsm_batch.jobs.slurm import plan_chunks
from vlsm_batch.layout import StudyLayout, read_json
from vlsm_batch.spec.types import Distribution, ResourcesSpec, SlurmSpec

TESTS = Path(__file__).parent
GOLDEN = TESTS / "golden"

# --- no cluster needed ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "cap", "throttle"), [(30, 11, 3), (30, 11, 64), (10_000, 1001, 64), (5, 11, 2),
                                                     (100, 11, 4), (1, 11, 8), (12, 11, 1)])  # fmt: skip
def test_chunks_fit_max_array_size_and_split_the_throttle(n, cap, throttle):
    chunks = plan_chunks(n, cap, throttle)
    assert sum(c.size for c in chunks) == n
    assert all(1 <= c.size <= cap for c in chunks)  # every array indexed 0..size-1 < MaxArraySize
    assert [c.offset for c in chunks] == [sum(c.size for c in chunks[:i]) for i in range(len(chunks))]
    # chunks run in lanes (afterany on the previous chunk of the lane); lanes' throttles sum to at most the throttle
    lanes = [c for c in chunks if c.after is None]
    assert sum(c.throttle for c in lanes) <= throttle
    for c in chunks:
        if c.after is not None:
            assert c.after == c.index - len(lanes)  # same lane, strictly one after the other
            assert c.throttle <= chunks[c.after].throttle


def test_chunks_thirty_under_eleven():
    chunks = plan_chunks(30, 11, 3)
    assert [(c.size, c.throttle, c.after) for c in chunks] == [(10, 1, None), (10, 1, None), (10, 1, None)]
    assert [(c.size, c.throttle, c.after) for c in plan_chunks(30, 11, 2)] == [(10, 1, None), (10, 1, None), (10, 1, 0)]


@pytest.mark.parametrize(("text", "minutes"), [("UNLIMITED", None), ("10", 10), ("00:10:00", 10), ("2:00:00", 120),
                                               ("1-00:00:00", 1440), ("1-2", 1560), ("5:30", 6)])  # fmt: skip
def test_parse_minutes(text, minutes):
    assert cluster.parse_minutes(text) == minutes


def test_expand_array_ranges():
    assert cluster.expand_ids("7_[0-2,5%2]") == ["7_0", "7_1", "7_2", "7_5"]
    assert cluster.expand_ids("7_3") == ["7_3"]


def _plan_sbatch_text(tmp_path, capsys, spec_path=GOLDEN / "sbatch_study.yaml"):
    os.environ["VLSM_RUNS"] = str(tmp_path / "runs")
    try:
        assert main(["plan", str(spec_path), "--sbatch", "--max-array-size", "11"]) == 0
    finally:
        del os.environ["VLSM_RUNS"]
    out = capsys.readouterr().out
    return out.replace(str(tmp_path / "runs"), "<RUNS>").replace(sys.executable, "<PYTHON>")


def test_plan_sbatch_golden(tmp_path, capsys):
    text = _plan_sbatch_text(tmp_path, capsys)
    golden = GOLDEN / "plan_sbatch.txt"
    if os.environ.get("VLSM_UPDATE_GOLDEN") == "1":
        golden.write_text(text)
    assert text == golden.read_text(), "sbatch text changed: review, then VLSM_UPDATE_GOLDEN=1 to accept"
    assert not (tmp_path / "runs").exists()  # plan writes nothing
    assert text.count("#!/bin/bash") == 3 and text.count("#SBATCH --array=0-9%") == 3
    assert "#SBATCH --time=45" in text and "#SBATCH --job-name=vlsm-golden" in text
    assert "export OMP_NUM_THREADS=1" in text  # the profile's setup line
    assert "#SBATCH --partition=debug" in text and "#SBATCH --qos=normal" in text  # profile + study override


def test_unknown_profile_is_refused(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text((GOLDEN / "sbatch_study.yaml").read_text().replace("profile: local", "profile: nosuchsite"))
    os.environ["VLSM_RUNS"] = str(tmp_path / "runs")
    try:
        assert main(["plan", str(spec), "--sbatch", "--max-array-size", "11"]) == 1  # a spec error, with its line
    finally:
        del os.environ["VLSM_RUNS"]
    err = capsys.readouterr().err
    assert "Slurm profile 'nosuchsite' not found" in err and f"{spec}:" in err


def test_bad_profile_name_has_a_line_number(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text("study: t\nmodels: [clipseg-tiny]\ndatasets: [synthetic]\nstrategies: [coop]\n"
                    "resources:\n  slurm:\n    profile: 'a b'\n")  # fmt: skip
    assert main(["validate", str(spec)]) == 1
    err = capsys.readouterr().err
    assert f"{spec}:7:" in err and "resources.slurm.profile" in err


def test_attempts_are_counted_and_capped(tmp_path):
    from vlsm_batch.jobs.task import run_trial_task
    from vlsm_batch.layout import TrialPaths, atomic_write_json

    paths = TrialPaths(tmp_path / "trial")
    atomic_write_json(
        paths.status, {"state": "requeued", "attempt": 4, "attempt_base": 2, "max_attempts": 2, "job_id": "7_0"}
    )
    ran = []
    result = run_trial_task(str(paths.root), "slurm", train=lambda root: ran.append(root), job_id="7_0")
    assert "skipped" in result and not ran  # the limit refuses the start before training
    st = read_json(paths.status)
    assert st["state"] == "failed" and st["error"]["class"] == "AttemptLimit" and st["attempt"] == 4
    assert "VLSM_MAX_ATTEMPTS" in st["error"]["message"] and "timeout_min" in st["error"]["message"]


def test_preflight_checks_limits_without_a_real_cluster(tmp_path, monkeypatch):
    from vlsm_batch.errors import SubmissionError
    from vlsm_batch.jobs.slurm import preflight_slurm

    monkeypatch.setattr(cluster, "cluster_config", lambda: {"MaxArraySize": "11", "MaxJobCount": "100"})
    monkeypatch.setattr(cluster, "partitions", lambda: {"gpu": cluster.Partition("gpu", "UP", 60, True)})
    monkeypatch.setattr(cluster, "max_submit_jobs", lambda user: 20)
    monkeypatch.setattr(cluster, "node_hosts", lambda: [socket.gethostname()])  # tmp_path is node-local
    node = cluster.NodeResources("n1", cpus=16, memory_mb=64_000, gpus=2)
    monkeypatch.setattr(cluster, "node_resources", lambda: [node])
    spec = make_spec(tmp_path, resources=ResourcesSpec(executor="slurm", timeout_min=30, slurm=SlurmSpec("gpu")))
    assert preflight_slurm(spec, 20)["max_array_size"] == 11
    huge = ResourcesSpec(executor="slurm", mem_gb=512, cpus_per_task=64, gpus_per_task=4, slurm=SlurmSpec("gpu"))
    with pytest.raises(SubmissionError) as refused:  # what no node can give is refused before anything is written
        preflight_slurm(make_spec(tmp_path, resources=huge), 1)
    for what in ("mem_gb 512 exceeds", "cpus_per_task 64 exceeds", "gpus_per_task 4 exceeds"):
        assert what in str(refused.value)
    with pytest.raises(SubmissionError, match="21 trials exceed MaxSubmitJobs of your association"):
        preflight_slurm(spec, 21)
    long = make_spec(tmp_path, resources=ResourcesSpec(executor="slurm", timeout_min=90, slurm=SlurmSpec("gpu")))
    with pytest.raises(SubmissionError, match="timeout_min 90 exceeds partition gpu's MaxTime of 60 min"):
        preflight_slurm(long, 1)
    monkeypatch.setattr(cluster, "node_hosts", lambda: ["node01", "node02"])
    local = make_spec(tmp_path, output_dir=Path("/tmp/vlsm-node-local-probe/runs"),
                      resources=ResourcesSpec(executor="slurm", slurm=SlurmSpec("gpu")))  # fmt: skip
    with pytest.raises(SubmissionError, match="node-local path"):
        preflight_slurm(local, 1)


# --- against a real cluster -------------------------------------------------------------------------------------


def _find_conf() -> str | None:
    if os.environ.get("SLURM_CONF"):
        return os.environ["SLURM_CONF"]
    for base in (os.environ.get("VLSM_SLURM_BASE"), "/tmp/vlsm-slurm-ci", "/tmp/vlsm-slurm"):
        if base and (Path(base) / "etc" / "slurm.conf").is_file():
            return str(Path(base) / "etc" / "slurm.conf")
    return None


@pytest.fixture(scope="module")
def slurm():
    conf = _find_conf()
    if conf:
        os.environ["SLURM_CONF"] = conf
    from vlsm_batch.jobs.executor import slurm_controller_answers

    if not conf or not slurm_controller_answers():
        why = (
            f"no Slurm controller answers (SLURM_CONF={conf or 'unset'}); start one with "
            "`slurm/start.sh` (root, Debian packages) or run scripts/test.sh as root with CI=true"
        )
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true requires the Slurm tests: " + why)
        pytest.skip(why)
    return cluster.cluster_config() or {}


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    monkeypatch.setenv("VLSM_TEST_INTERVALS", str(tmp_path / "intervals.jsonl"))
    monkeypatch.setenv("VLSM_TEST_SLEEP", "0.5")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return tmp_path


def slurm_spec(tmp_path, trials=4, throttle=8, timeout_min=5, partition="debug", **over):
    res = ResourcesSpec(
        executor="slurm",
        gpus_per_task=over.pop("gpus", 0),
        cpus_per_task=1,
        mem_gb=1,
        timeout_min=timeout_min,
        array_parallelism=throttle,
        slurm=SlurmSpec(partition=partition),
    )
    return make_spec(tmp_path, trials=trials, resources=res, **over)


def _submit(spec, task=None, **kw):
    from helpers import sleepy_train

    from vlsm_batch.jobs.submit import submit
    from vlsm_batch.jobs.task import TrialTask
    from vlsm_batch.trials import expand

    return submit(spec, expand(spec), progress=False, task=task or TrialTask(train=sleepy_train), **kw)


def states(spec) -> dict[str, dict]:
    from vlsm_batch.jobs.study import study_states

    return {
        s.trial.trial_id: s.status.to_json() for s in study_states(StudyLayout(spec.output_dir), with_metrics=False)
    }


def wait_for(spec, pred, timeout_s=240, poll_s=2.0):
    deadline = time.time() + timeout_s
    while True:
        st = states(spec)
        if pred(st):
            return st
        if time.time() > deadline:
            raise AssertionError(f"timed out; states: { {k: v.get('state') for k, v in st.items()} }")
        time.sleep(poll_s)


def all_ended(st):
    return all(s.get("state") in ("done", "failed", "cancelled", "pruned") for s in st.values())


def test_thirty_trials_become_three_rebased_arrays_under_the_throttle(slurm, env):
    if cluster.max_array_size(slurm) != 11:
        pytest.skip(
            f"needs a cluster with MaxArraySize=11 (slurm/start.sh default), this one has {slurm.get('MaxArraySize')}"
        )
    spec = slurm_spec(env, trials=30, throttle=3)
    result = _submit(spec)
    arrays = list(dict.fromkeys(j.split("_")[0] for j in result.job_ids))
    assert len(result.launched) == 30 and len(arrays) == 3
    for a in arrays:  # every array indexed from 0
        assert sorted(int(j.split("_")[1]) for j in result.job_ids if j.startswith(a + "_")) == list(range(10))
    layout = StudyLayout(spec.output_dir)
    scripts = sorted(layout.submitit.glob("*/*_submission.sh"))
    texts = {p.read_text() for p in scripts}
    assert len(texts) == 3, scripts
    for t in texts:
        assert "#SBATCH --array=0-9%1" in t and "#SBATCH --time=5" in t and "#SBATCH --job-name=vlsm-t" in t
        assert "#SBATCH --comment=vlsm-batch:t:chunk" in t
    st = wait_for(spec, all_ended, timeout_s=400)
    assert {s["state"] for s in st.values()} == {"done"}
    assert max_overlap(env / "intervals.jsonl") <= 3
    sub = json.loads(layout.submissions.read_text().splitlines()[-1])
    assert sub["executor"] == "slurm" and sub["job_ids"] == result.job_ids
    again = _submit(spec)
    assert again.launched == [] and again.skipped_done == 30


def test_scancel_and_cancel_record_cancelled_and_a_plain_submit_relaunches(slurm, env, monkeypatch, capsys):
    from vlsm_batch.jobs import store
    from vlsm_batch.jobs.reconcile import reconcile

    monkeypatch.setenv("VLSM_TEST_SLEEP", "40")
    spec = slurm_spec(env, method="grid", trials=None, space={"prompt_depth": Distribution("int", 1, 3)})
    result = _submit(spec)
    assert len(result.launched) == 3
    st = wait_for(spec, lambda st: all(s.get("state") == "running" for s in st.values()), timeout_s=120)
    killed, cancelled, kept = result.launched
    subprocess.run(["scancel", st[killed]["job_id"]], check=True, timeout=30)  # the user's own scancel
    assert main(["cancel", "--study", str(spec.output_dir), "--trial", cancelled[:8]]) == 0
    layout = StudyLayout(spec.output_dir)
    st = wait_for(spec, lambda st: st[killed]["state"] != "running" and st[cancelled]["state"] != "running", 60)
    assert st[killed]["state"] == "cancelled" and "scancel" in st[killed]["error"]["message"], st[killed]
    assert st[cancelled]["state"] == "cancelled" and "vlsm-batch cancel" in st[cancelled]["error"]["message"]
    assert st[kept]["state"] == "running"
    raw = {tid: store.read(layout.trial(tid)) for tid in result.launched}
    monkeypatch.setenv("VLSM_NO_SACCT", "1")
    without = reconcile(layout, raw, persist=False)
    monkeypatch.delenv("VLSM_NO_SACCT")
    with_sacct = reconcile(layout, raw, persist=False)
    assert {k: v.state for k, v in without.items()} == {k: v.state for k, v in with_sacct.items()}

    monkeypatch.setenv("VLSM_TEST_SLEEP", "0.2")
    assert main(["status", "--study", str(spec.output_dir)]) == 0
    out = capsys.readouterr().out
    assert "cancelled" in out and "failed:" not in out
    assert main(["logs", killed, "--study", str(spec.output_dir), "--tail", "5"]) == 0
    assert "_log.err <==" in capsys.readouterr().out
    retried = _submit(spec)  # cancelled trials need no --retry-failed; the running one is never relaunched
    assert sorted(retried.launched) == sorted([killed, cancelled])
    st = wait_for(spec, lambda st: st[killed].get("state") == "done" and st[cancelled].get("state") == "done")
    assert main(["cancel", "--study", str(spec.output_dir)]) == 0  # stops the 40 s trial
    st = wait_for(spec, lambda st: st[kept]["state"] != "running", 60)
    assert st[kept]["state"] == "cancelled"


def _history(spec, tid):
    path = StudyLayout(spec.output_dir).trial(tid).root / "history.txt"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_scontrol_requeue_resumes_without_repeating_epochs(slurm, env, monkeypatch):
    from slurm_tasks import epoch_train

    from vlsm_batch.jobs.task import TrialTask

    monkeypatch.setenv("VLSM_TEST_EPOCHS", "12")
    monkeypatch.setenv("VLSM_TEST_EPOCH_S", "1")
    spec = slurm_spec(env, trials=1)
    result = _submit(spec, task=TrialTask(train=epoch_train))
    (tid,) = result.launched
    deadline = time.time() + 120
    while len(_history(spec, tid)) < 3:
        assert time.time() < deadline, "the trial never got going"
        time.sleep(1)
    subprocess.run(["scontrol", "requeue", result.job_ids[0]], check=True, timeout=30)
    st = wait_for(spec, all_ended, timeout_s=180)
    assert st[tid]["state"] == "done", st[tid]
    hist = _history(spec, tid)
    assert [h["epoch"] for h in hist] == list(range(12)), hist  # nothing repeated, nothing skipped
    assert len({h["attempt"] for h in hist}) >= 2 and st[tid]["attempt"] >= 2


def test_time_limit_checkpoints_requeues_and_resumes(slurm, env, monkeypatch):
    from slurm_tasks import epoch_train

    from vlsm_batch.jobs.task import TrialTask

    monkeypatch.setenv("VLSM_TEST_EPOCHS", "50")  # 50 s of work under a 1-minute limit: USR2 15-45 s in
    monkeypatch.setenv("VLSM_TEST_EPOCH_S", "1")
    spec = slurm_spec(env, trials=1, timeout_min=1)
    result = _submit(spec, task=TrialTask(train=epoch_train))
    (tid,) = result.launched
    st = wait_for(spec, all_ended, timeout_s=400, poll_s=3)
    assert st[tid]["state"] == "done", st[tid]
    hist = _history(spec, tid)
    assert [h["epoch"] for h in hist] == list(range(50))
    assert st[tid]["attempt"] >= 2 and st[tid].get("requeue_reason")
    assert any(e["event"] == "requeue" for e in st[tid]["events"]) and st[tid]["starts"] == st[tid]["attempt"]


def test_preflight_refuses_before_anything_is_written(slurm, env):
    from vlsm_batch.errors import SubmissionError

    with pytest.raises(SubmissionError, match="partition 'nosuch' does not exist"):
        _submit(slurm_spec(env, partition="nosuch"))
    with pytest.raises(SubmissionError, match="exceeds partition short's MaxTime of 10 min"):
        _submit(slurm_spec(env, partition="short", timeout_min=30))
    assert not (env / "runs").exists()


def _quickstart_on_slurm(tmp_path: Path) -> Path:
    text = (REPO / "specs" / "quickstart.yaml").read_text()
    assert "  executor: local\n" in text
    text = text.replace(
        "  executor: local\n",
        "  executor: slurm\n  gpus_per_task: 1\n  cpus_per_task: 2\n  mem_gb: 2\n  array_parallelism: 2\n"
        "  slurm: {profile: local}\n",
    )
    spec = tmp_path / "quickstart_slurm.yaml"
    spec.write_text(text)
    return spec


REPO = TESTS.parent


def _cli(args, tmp_path, timeout=600):
    env = {**os.environ, "VLSM_RUNS": str(tmp_path / "runs"), "VLSM_DATA": str(tmp_path / "data")}
    return subprocess.run(
        [sys.executable, "-m", "vlsm_batch", *args], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip


def test_quickstart_spec_through_slurm_to_analysis_with_stand_in(slurm, env, monkeypatch):
    """The quickstart spec, submitted to Slurm (fake GPU gres, profile), a stand-in per trial, then status/analyze."""
    from vlsm_batch.spec import load_spec

    monkeypatch.setenv("VLSM_RUNS", str(env / "runs"))
    monkeypatch.setenv("VLSM_DATA", str(env / "data"))
    spec = load_spec(_quickstart_on_slurm(env))
    result = _submit(spec)
    assert len(result.launched) == 8
    st = wait_for(spec, all_ended, timeout_s=300)
    assert {s["state"] for s in st.values()} == {"done"}
    for args in (["status"], ["analyze", "--by", "prompt_depth"]):
        proc = _cli(args, env)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


def test_quickstart_trains_through_slurm_to_analysis(slurm, tmp_path):
    """The real thing: `vlsm-batch submit` of the quickstart on the local cluster, real training, then analyze."""
    spec = _quickstart_on_slurm(tmp_path)
    proc = _cli(["submit", str(spec)], tmp_path)
    assert proc.returncode == 0 and "submitted 8 trials to Slurm" in proc.stdout, proc.stdout + proc.stderr
    from vlsm_batch.spec import load_spec

    loaded = load_spec(spec, env={**os.environ, "VLSM_RUNS": str(tmp_path / "runs")}, base_dir=tmp_path)
    st = wait_for(loaded, all_ended, timeout_s=1800, poll_s=10)
    assert {s["state"] for s in st.values()} == {"done"}, {k: v.get("error") for k, v in st.items()}
    for args in (["status"], ["analyze", "--by", "prompt_depth"]):
        proc = _cli(args, tmp_path)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


RACE_SUBMIT = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from test_slurm import slurm_spec, _submit
result = _submit(slurm_spec(Path(sys.argv[1]), trials=4))
print("LAUNCHED", len(result.launched))
"""


def test_concurrent_submits_queue_each_trial_once_and_cancel_gets_all(slurm, env):
    """Two submits of one study at the same moment (held arrays): 4 array tasks for 4 trials, not 8."""
    run_env = {**os.environ, "VLSM_SLURM_HOLD": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACE_SUBMIT, str(env), str(TESTS)], env=run_env, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=180)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert sorted(int(o.split("LAUNCHED")[1]) for o in outs) == [0, 4], outs
    spec = slurm_spec(env, trials=4)
    layout = StudyLayout(spec.output_dir)
    jobs = {s["job_id"] for s in states(spec).values()}
    queued = subprocess.run(["squeue", "-h", "-r", "-n", "vlsm-t", "-o", "%i"], capture_output=True, text=True)
    ours = {j for j in queued.stdout.split() if j in jobs}
    assert len(jobs) == 4 and ours == jobs, (jobs, queued.stdout)
    assert main(["cancel", "--study", str(layout.root)]) == 0
    st = wait_for(spec, all_ended, timeout_s=60)
    assert {s["state"] for s in st.values()} == {"cancelled"}
    left = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True).stdout.split()
    assert not set(left) & jobs


def test_scontrol_requeue_of_a_real_lightning_trial_resumes_to_the_same_metrics(slurm, tmp_path):
    """The real training on the real cluster: `scontrol requeue` mid-fit records requeued (never failed), the
    requeued task resumes from its last epoch and ends with the metrics of an uninterrupted (local) run."""
    runs, data = tmp_path / "runs", tmp_path / "data"
    for name, executor in (("slurm.yaml", "slurm"), ("local.yaml", "local")):
        (tmp_path / name).write_text(one_trial_spec(runs / executor, data, 16, executor=executor, study="rq"))
    proc = _cli(["submit", str(tmp_path / "slurm.yaml")], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    from vlsm_batch.spec import load_spec

    spec = load_spec(tmp_path / "slurm.yaml")
    layout = StudyLayout(spec.output_dir)
    (tid,) = states(spec)
    history = layout.trial(tid).history
    deadline = time.time() + 600
    while not history.is_file() or len(history.read_text().splitlines()) < 3:  # two epochs done
        assert time.time() < deadline, states(spec)
        time.sleep(1)
    job = states(spec)[tid]["job_id"]
    subprocess.run(["scontrol", "requeue", job], check=True, timeout=30)
    seen = set()
    deadline = time.time() + 900
    while True:
        st = states(spec)[tid]
        seen.add(st["state"])
        if st["state"] in ("done", "failed", "cancelled"):
            break
        assert time.time() < deadline, st
        time.sleep(1)
    assert st["state"] == "done", st
    assert "failed" not in seen and any(e["event"] == "requeue" for e in st["events"]), st["events"]
    assert st["starts"] == 2 and "requeued by Slurm" in st["requeue_reason"]
    epochs = [int(line.split(",")[0]) for line in history.read_text().splitlines()[1:]]
    assert epochs == list(range(1, 17))
    proc = _cli(["submit", str(tmp_path / "local.yaml")], tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    resumed = json.loads(layout.trial(tid).metrics.read_text())
    alone = json.loads(StudyLayout(runs / "local").trial(tid).metrics.read_text())
    for key in ("val/dice", "val/loss", "test/dice", "best_epoch", "epochs"):
        assert resumed[key] == pytest.approx(alone[key], abs=1e-6), key
