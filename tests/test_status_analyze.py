"""status and analyze over a study run with a stand-in task (real subprocesses, planted failure)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import make_spec

from vlsm_batch.cli import main
from vlsm_batch.jobs.submit import submit
from vlsm_batch.spec.types import Distribution
from vlsm_batch.trials import expand

TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("study")
    mp = pytest.MonkeyPatch()
    mp.setenv("VLSM_TEST_INTERVALS", str(tmp / "intervals.jsonl"))
    mp.setenv("PYTHONPATH", str(TESTS))
    mp.setenv("VLSM_TEST_SLEEP", "0.05")
    mp.setenv("VLSM_TEST_FAIL_DEPTH", "3")
    from helpers import SLEEPY

    spec = make_spec(
        tmp,
        method="grid",
        trials=None,
        seeds=(0, 1),
        space={"prompt_depth": Distribution("int", 1, 3), "lr": Distribution("choice", choices=(1e-3, 1e-2))},
    )
    submit(spec, expand(spec), progress=False, train=SLEEPY)
    mp.undo()
    return spec.output_dir


def test_status_table_and_failures(finished_study, capsys):
    assert main(["status", "--study", str(finished_study)]) == 0
    out = capsys.readouterr().out
    assert "clipseg-tiny  coop" in out
    header = next(line for line in out.splitlines() if "pending" in line)
    assert header.split()[:7] == ["model", "strategy", "new", "pending", "running", "done", "failed"]
    row = next(line for line in out.splitlines() if line.strip().startswith("clipseg-tiny"))
    assert row.split()[2:7] == ["0", "0", "0", "8", "4"]  # requeued, cancelled, pruned appear when present
    assert "0.2" in row  # best val/dice = 0.1 * depth 2
    assert "4 failed:" in out
    assert "RuntimeError: planted failure" in out
    assert "log:" in out and "| " in out  # the log tail is shown
    assert "--retry-failed" in out


def test_status_json(finished_study, capsys):
    assert main(["status", "--study", str(finished_study), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["totals"]["done"] == 8 and data["totals"]["failed"] == 4
    assert data["best"] == pytest.approx(0.2)
    assert {f["error_class"] for f in data["failures"]} == {"RuntimeError"}
    assert all(f["log_tail"] for f in data["failures"])


def test_status_defaults_to_latest_study(finished_study, capsys, monkeypatch):
    monkeypatch.chdir(finished_study.parent.parent)
    assert main(["status"]) == 0
    assert str(finished_study) in capsys.readouterr().out


def test_analyze_groups_writes_tables_and_plot(finished_study, capsys):
    assert main(["analyze", "--study", str(finished_study), "--by", "prompt_depth"]) == 0
    captured = capsys.readouterr()
    assert "8 of 12 trials done" in captured.out
    analysis = finished_study / "analysis"
    for name in (
        "tables/trials.csv",
        "tables/trials.parquet",
        "tables/by_prompt_depth.csv",
        "tables/by_prompt_depth.parquet",
        "plots/score_by_prompt_depth.png",
    ):
        assert (analysis / name).is_file(), name
    assert (analysis / "plots/score_by_prompt_depth.png").read_bytes()[:4] == b"\x89PNG"
    import polars as pl

    table = pl.read_csv(analysis / "tables/by_prompt_depth.csv")
    assert table["prompt_depth"].to_list() == [1, 2]  # depth 3 failed everywhere
    assert table["n"].to_list() == [4, 4]
    assert table["val/dice mean"].to_list() == pytest.approx([0.1, 0.2])


def test_analyze_several_by_and_json(finished_study, capsys):
    assert main(["analyze", "--study", str(finished_study), "--by", "prompt_depth,lr", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)["table"]  # the grouped table; takeaways and best cells beside it
    assert len(rows) == 4
    assert all(r["n"] == 2 for r in rows)


def test_analyze_unknown_column_says_what_to_use(finished_study, capsys):
    assert main(["analyze", "--study", str(finished_study), "--by", "prompt_dept"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'prompt_depth'" in err


def test_status_without_study_is_a_readable_error(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["status"]) == 2
    assert "no study found" in capsys.readouterr().err


def test_status_finds_study_under_vlsm_runs(finished_study, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VLSM_RUNS", str(finished_study.parent))
    assert main(["status"]) == 0
    assert str(finished_study) in capsys.readouterr().out
