"""The configuration says what the code does (issue 15.5): refused GPU counts, the Slurm throttle's place, site
profiles as package data, explicit weights forms and per-strategy train/resources overrides."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest

from vlsm_batch.errors import SpecError, SubmissionError
from vlsm_batch.jobs import slurm
from vlsm_batch.jobs.groups import group_by_resources, override_lines
from vlsm_batch.jobs.packing import pack_key
from vlsm_batch.spec import load_spec
from vlsm_batch.spec.site_profiles import PACKAGE_PROFILES, find_profile, load_profile
from vlsm_batch.trials import expand
from vlsm_batch.weights import loader_source, parse_weights

ROOT = Path(__file__).resolve().parents[1]
CLI = ROOT / ".venv" / "bin" / "vlsm-batch"
HEAD = "study: t\nmodels: [clipseg-tiny]\ndatasets: [synthetic]\nstrategies: [coop]\n"  # lines 1-4


def cli(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    (tmp_path / "data").mkdir(exist_ok=True)
    full = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **(env or {})}
    return subprocess.run([str(CLI), *args], cwd=tmp_path, capture_output=True, text=True, env=full, timeout=120)


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "data").mkdir(exist_ok=True)
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


def load(tmp_path: Path, text: str) -> Any:
    return load_spec(write(tmp_path, text), env={}, base_dir=tmp_path)


def errors(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        load(tmp_path, text)
    return info.value.errors


# --- a. gpus_per_task ----------------------------------------------------------------------------------------------


def test_validate_refuses_more_than_one_gpu_per_trial(tmp_path: Path) -> None:
    write(tmp_path, HEAD + "resources:\n  gpus_per_task: 2\n")
    run = cli(tmp_path, "validate", "spec.yaml")
    assert run.returncode != 0
    line = next(e for e in run.stderr.splitlines() if "gpus_per_task 2 is refused" in e)
    assert line.startswith("spec.yaml:6:18: resources.gpus_per_task:")
    assert "one trial per GPU" in line and "resources.pack" in line and "DDP" in line


@pytest.mark.parametrize("gpus", [0, 1])
def test_zero_and_one_gpu_keep_working(tmp_path: Path, gpus: int) -> None:
    write(tmp_path, HEAD + f"resources:\n  gpus_per_task: {gpus}\n")
    run = cli(tmp_path, "validate", "spec.yaml")
    assert run.returncode == 0, run.stderr
    assert load(tmp_path, HEAD + f"resources:\n  gpus_per_task: {gpus}\n").resources.gpus_per_task == gpus


def test_per_strategy_gpus_are_refused_too(tmp_path: Path) -> None:
    errs = errors(tmp_path, HEAD + "per_strategy:\n  coop:\n    resources: {gpus_per_task: 4}\n")
    assert any(e.startswith(f"{tmp_path}/spec.yaml:7:") and "gpus_per_task 4 is refused" in e for e in errs), errs


# --- b. the array throttle ---------------------------------------------------------------------------------------


def test_old_throttle_key_works_with_a_positioned_note(tmp_path: Path) -> None:
    write(tmp_path, HEAD + "resources:\n  executor: slurm\n  array_parallelism: 8\n")
    run = cli(tmp_path, "validate", "spec.yaml")
    assert run.returncode == 0, run.stderr
    note = next(line for line in run.stdout.splitlines() if "array_parallelism" in line)
    assert note.strip().startswith("note: spec.yaml:7:3: resources.array_parallelism: deprecated key")
    assert "resources: {slurm: {array_throttle: 8}}" in note
    spec = load(tmp_path, HEAD + "resources:\n  executor: slurm\n  array_parallelism: 8\n")
    assert (spec.resources.array_parallelism, spec.resources.slurm.array_throttle) == (8, 8)


def test_new_throttle_key_reaches_sbatch_without_a_note(tmp_path: Path) -> None:
    spec = load(tmp_path, HEAD + "resources:\n  executor: slurm\n  slurm: {array_throttle: 3}\n")
    assert spec.resources.slurm.array_throttle == 3 and spec.notes == ()
    (text,) = slurm.sbatch_texts(spec, 10, 1000, python="python")
    assert "#SBATCH --array=0-9%3" in text


def test_both_throttle_keys_are_an_error(tmp_path: Path) -> None:
    errs = errors(tmp_path, HEAD + "resources:\n  array_parallelism: 8\n  slurm: {array_throttle: 3}\n")
    assert any(":6:3: resources.array_parallelism:" in e and "remove this one" in e for e in errs), errs


# --- c. site profiles ----------------------------------------------------------------------------------------------


def test_profiles_are_package_data() -> None:
    assert PACKAGE_PROFILES == ROOT / "vlsm_batch" / "profiles"
    assert find_profile("local") == PACKAGE_PROFILES / "local.yaml"
    assert load_profile("example-site")[0]["partition"] == "gpu"
    package_data = (ROOT / "pyproject.toml").read_text().split("[tool.setuptools.package-data]")[1].split("[")[1]
    assert '"profiles/*.yaml"' in package_data
    assert not list((ROOT / "slurm" / "profiles").glob("*.yaml"))  # one copy only: the package's


def test_spec_stage_imports_no_jobs_and_no_pyyaml() -> None:
    code = (
        "import sys\n"
        "from vlsm_batch.spec.site_profiles import load_profile\n"
        "import vlsm_batch.spec.load, vlsm_batch.spec.resources\n"
        "load_profile('local')\n"
        "bad = sorted(m for m in sys.modules if m == 'yaml' or m.startswith('vlsm_batch.jobs'))\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_profiles_go_through_the_safe_yaml_reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "profiles"
    folder.mkdir()
    (folder / "dup.yaml").write_text("partition: a\npartition: b\n")
    (folder / "tag.yaml").write_text("partition: !!str gpu\n")
    (folder / "local.yaml").write_text("partition: mine\n")  # $VLSM_SLURM_PROFILES comes first
    monkeypatch.setenv("VLSM_SLURM_PROFILES", str(folder))
    with pytest.raises(SubmissionError, match="duplicate"):
        load_profile("dup")
    with pytest.raises(SubmissionError, match="tag"):
        load_profile("tag")
    assert load_profile("local")[0] == {"partition": "mine"}


# --- d. weights ----------------------------------------------------------------------------------------------------


def test_weights_forms_are_explicit() -> None:
    hub = parse_weights("hf-hub:CIDAS/clipseg-rd64")
    assert (hub.kind, hub.value) == ("hub", "CIDAS/clipseg-rd64")
    assert [parse_weights(p).kind for p in ("./a.pt", "../a", "/a", "~/a")] == ["path"] * 4
    assert parse_weights("CIDAS/clipseg-rd64").kind is None
    assert loader_source("hf-hub:CIDAS/clipseg-rd64") == "CIDAS/clipseg-rd64"
    assert loader_source("/abs/ckpt.pt") == "/abs/ckpt.pt" and loader_source(None) is None


def test_bare_weights_get_a_note_with_the_new_spelling(tmp_path: Path) -> None:
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "tiny.pt").write_bytes(b"")
    write(tmp_path, HEAD + "weights: {clipseg-tiny: ckpt/tiny.pt}\n")
    run = cli(tmp_path, "validate", "spec.yaml")
    assert run.returncode == 0, run.stderr
    assert "note: spec.yaml:5:25: weights.clipseg-tiny: deprecated bare weights value" in run.stdout
    assert "write './ckpt/tiny.pt'" in run.stdout
    write(tmp_path, HEAD + "weights: {clipseg-tiny: openai/clip-vit-base-patch16}\n")
    assert "write 'hf-hub:openai/clip-vit-base-patch16'" in cli(tmp_path, "validate", "spec.yaml").stdout


def test_explicit_weights_validate_quietly(tmp_path: Path) -> None:
    (tmp_path / "tiny.pt").write_bytes(b"")
    spec = load(tmp_path, HEAD + "weights: {clipseg-tiny: 'hf-hub:openai/clip-vit-base-patch16'}\n")
    assert spec.weights == {"clipseg-tiny": "openai/clip-vit-base-patch16"} and spec.notes == ()
    spec = load(tmp_path, HEAD + "weights: {clipseg-tiny: ./tiny.pt}\n")
    assert spec.weights == {"clipseg-tiny": str(tmp_path / "tiny.pt")} and spec.notes == ()
    errs = errors(tmp_path, HEAD + "weights: {clipseg-tiny: 'hf-hub:org/na--me'}\n")
    assert any(":5:" in e and "names a Hugging Face id" in e for e in errs), errs


# --- e. per_strategy train and resources ---------------------------------------------------------------------------

TWO = (
    "study: t\nmodels: [clipseg-tiny]\ndatasets: [synthetic]\nstrategies: [coop]\nbaselines: [finetune]\n"
    "train: {max_epochs: 5, min_epochs: 1}\nresources: {executor: slurm}\n"
)  # lines 1-7
OVERRIDE = (
    "per_strategy:\n  finetune: {train: {max_epochs: 3, lr: 1.0e-4}, resources: {timeout_min: 120, mem_gb: 16}}\n"
)


def test_override_changes_trial_ids_and_effective_values(tmp_path: Path) -> None:
    plain = expand(load(tmp_path, TWO)).trials
    spec = load(tmp_path, TWO + OVERRIDE)
    over = expand(spec).trials
    by = {t.strategy: t for t in plain}, {t.strategy: t for t in over}
    assert by[0]["coop"].trial_id == by[1]["coop"].trial_id  # untouched strategy keeps its id
    assert by[0]["finetune"].trial_id != by[1]["finetune"].trial_id
    assert by[1]["finetune"].train["max_epochs"] == 3 and by[1]["finetune"].params["lr"] == 1e-4
    assert by[1]["coop"].train["max_epochs"] == 5
    assert pack_key(by[0]["finetune"]) != pack_key(by[1]["finetune"])
    assert spec.resources_for("finetune").timeout_min == 120 and spec.resources_for("coop").timeout_min == 240
    groups = group_by_resources(spec, ["coop", "finetune", "coop"])
    assert [members for _, members in groups] == [[0, 2], [1]]
    assert override_lines(spec) == [
        "per_strategy finetune: train max_epochs=3, lr=0.0001; resources 1 GPU, 8 CPUs, 16 GB, 120 min (its own job "
        "arrays)"
    ]


def test_plan_shows_the_override_and_its_own_array(tmp_path: Path) -> None:
    write(tmp_path, TWO + OVERRIDE)
    run = cli(tmp_path, "plan", "spec.yaml")
    assert run.returncode == 0, run.stderr
    assert "per_strategy finetune: train max_epochs=3" in run.stdout and "16 GB, 120 min" in run.stdout
    run = cli(tmp_path, "plan", "spec.yaml", "--sbatch", "--max-array-size", "100")
    assert run.returncode == 0, run.stderr
    arrays = run.stdout.split("# === ")[1:]
    assert len(arrays) == 2
    coop, finetune = (next(a for a in arrays if name in a.splitlines()[0]) for name in ("coop", "finetune"))
    assert "#SBATCH --time=240" in coop and "#SBATCH --mem=32GB" in coop
    assert "#SBATCH --time=120" in finetune and "#SBATCH --mem=16GB" in finetune


@pytest.mark.parametrize(
    ("text", "where", "fragment"),
    [
        ("per_strategy:\n  finetune: {train: {max_epoch: 3}}\n", ":9:", "max_epoch"),
        ("per_strategy:\n  finetune: {resources: {executor: local}}\n", ":9:", "executor"),
        ("per_strategy:\n  finetune: {train: {max_epochs: 0}}\n", ":9:", "max_epochs"),
        ("per_strategy:\n  vpt: {train: {max_epochs: 3}}\n", ":9:3:", "vpt is not in strategies or baselines"),
        ("per_strategy:\n  coop: {train: {loggers: csv}}\n", ":9:", "loggers are study-wide"),
        ("per_strategy:\n  coop: {train: {use_lora: true}}\n", ":9:", "coop does not take 'use_lora'"),
        ("per_strategy:\n  coop: {train: {min_epochs: 9}}\n", ":9:", "min_epochs 9 is above its max_epochs 5"),
        ("per_strategy:\n  coop: {turbo: {}}\n", ":9:", "turbo"),
    ],
)
def test_bad_overrides_are_positioned_errors(tmp_path: Path, text: str, where: str, fragment: str) -> None:
    errs = errors(tmp_path, TWO + text)
    assert any(where in e and fragment in e for e in errs), errs


def test_searched_parameter_cannot_also_be_fixed_for_the_strategy(tmp_path: Path) -> None:
    text = TWO.replace("train:", "search: {space: {lr: {choice: [0.1, 0.01]}}}\ntrain:")
    errs = errors(tmp_path, text + "per_strategy:\n  coop: {train: {lr: 0.5}}\n")
    assert any(":10:" in e and "lr is fixed here and searched for coop" in e for e in errs), errs


class _FakeJob:
    def __init__(self, job_id: str) -> None:
        self.job_id = job_id


class _FakeExecutor:
    arrays: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, folder: Any, max_num_timeout: int) -> None:
        self.params: dict[str, Any] = {}

    def update_parameters(self, **params: Any) -> None:
        self.params = params

    @contextlib.contextmanager
    def batch(self) -> Any:
        self.jobs: list[_FakeJob] = []
        yield
        array = str(100 + len(_FakeExecutor.arrays))
        _FakeExecutor.arrays.append({"params": self.params, "n": len(self.jobs)})
        for i, job in enumerate(self.jobs):
            job.job_id = f"{array}_{i}"

    def submit(self, fn: Any, *args: Any) -> _FakeJob:
        job = _FakeJob("")
        self.jobs.append(job)
        return job


def test_submit_puts_each_resource_group_in_its_own_array(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import submitit

    spec = load(tmp_path, TWO + OVERRIDE)
    units = []
    for i, strategy in enumerate(["coop", "finetune", "coop"]):
        d = tmp_path / "trials" / f"t{i}"
        d.mkdir(parents=True)
        (d / "config.json").write_text(json.dumps({"strategy": strategy}))
        units.append(d)
    _FakeExecutor.arrays = []
    monkeypatch.setattr(submitit, "SlurmExecutor", _FakeExecutor)
    monkeypatch.setattr(slurm, "_assign_unit", lambda layout, unit, job_id: None)
    ids = slurm.submit_slurm(spec, slurm.StudyLayout(tmp_path / "study"), units, max_array_size=100, hold=False)
    assert ids == ["100_0", "101_0", "100_1"]  # in the units' order, two arrays
    first, second = _FakeExecutor.arrays
    assert (first["n"], first["params"]["time"], first["params"]["mem"]) == (2, 240, "32GB")
    assert (second["n"], second["params"]["time"], second["params"]["mem"]) == (1, 120, "16GB")


def test_local_executor_says_it_ignores_override_job_sizes(tmp_path: Path) -> None:
    local = TWO.replace("executor: slurm", "executor: local")
    spec = load(tmp_path, local + OVERRIDE)
    assert any(":9:" in n and "mem_gb size Slurm jobs only" in n for n in spec.notes)
    assert not any("local executor" in n for n in load(tmp_path, TWO + OVERRIDE).notes)
    timeout_only = OVERRIDE.replace(", mem_gb: 16", "")
    assert not any("local executor" in n for n in load(tmp_path, local + timeout_only).notes)


LOCAL_TIMEOUT = (
    TWO.replace("executor: slurm}", "executor: local, local: {max_parallel: 2}, timeout_min: 240}")
    + "per_strategy:\n  finetune: {resources: {timeout_min: 1, gpus_per_task: 0}}\n"
)


def test_per_strategy_timeout_and_gpus_reach_each_local_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vlsm_batch.jobs import submit as submit_mod
    from vlsm_batch.jobs.local import LocalOutcome

    seen: dict[str, Any] = {}

    def fake_run_local(units: list[list[Path]], **kw: Any) -> LocalOutcome:
        seen.update(kw, units=units)
        return LocalOutcome()

    monkeypatch.setattr(submit_mod, "run_local", fake_run_local)
    monkeypatch.setattr(submit_mod, "visible_gpu_ids", lambda: [0, 1])
    spec = load(tmp_path, LOCAL_TIMEOUT)
    submit_mod.submit(spec, expand(spec), progress=False, train="test_config_truth:timed_train")
    strategies = [json.loads((unit[0] / "config.json").read_text())["strategy"] for unit in seen["units"]]
    assert sorted(strategies) == ["coop", "finetune"]
    want = {"coop": (240, True), "finetune": (1, False)}
    assert list(zip(seen["timeouts"], seen["wants_gpu"])) == [want[s] for s in strategies]
    assert seen["gpus"] == [0, 1]


def timed_train(root: Path) -> dict[str, Any]:
    """A stand-in training: finetune marks that it runs and sleeps past any test; coop finishes at once."""
    import os
    import time

    from vlsm_batch.layout import TrialPaths, atomic_write_json

    paths = TrialPaths(Path(root))
    if json.loads(paths.config.read_text())["strategy"] == "finetune":
        Path(os.environ["VLSM_TEST_MARK"]).write_text("running")
        time.sleep(120)
    atomic_write_json(paths.metrics, {"val/dice": 0.5, "test/dice": 0.5})
    return {}


def test_a_strategys_own_timeout_stops_only_its_local_trials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from vlsm_batch.jobs import local, store
    from vlsm_batch.jobs.submit import submit

    mark = tmp_path / "finetune-running"
    monkeypatch.setenv("VLSM_TEST_MARK", str(mark))
    monkeypatch.setenv("PYTHONPATH", str(ROOT / "tests"))

    class Clock:  # two minutes pass once finetune trains: past its 1 min, far from coop's 240
        def __getattr__(self, name: str) -> Any:
            return getattr(time, name)

        def monotonic(self) -> float:
            return time.monotonic() + (120.0 if mark.exists() else 0.0)

    monkeypatch.setattr(local, "time", Clock())
    spec = load(tmp_path, LOCAL_TIMEOUT)
    result = submit(spec, expand(spec), progress=False, train="test_config_truth:timed_train")
    assert result.local is not None
    by = {t.strategy: t.trial_id for t in expand(spec).trials}
    assert result.local.done == [by["coop"]] and result.local.failed == [by["finetune"]]
    record = store.read(result.layout.trial(by["finetune"]))
    assert record.error is not None and record.error["class"] == "Timeout"
    assert "timeout_min=1" in record.error["message"]
