"""The light commands stay light: no torch on the path of validate, plan, submit (up to launch), status, analyze."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vlsm_batch.cli import main

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).parent


def run_py(code: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(TESTS), **env}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=tmp_path,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_help_imports_nothing_heavy(tmp_path):
    proc = run_py(
        """
        import sys
        from vlsm_batch.cli import main
        try:
            main(["--help"])
        except SystemExit:
            pass
        heavy = [m for m in ("torch", "polars", "matplotlib", "jsonschema", "transformers", "submitit")
                 if m in sys.modules]
        assert not heavy, heavy
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr


def test_light_commands_never_import_torch(tmp_path):
    code = f"""
        import sys
        from pathlib import Path
        from helpers import SLEEPY
        from vlsm_batch.cli import main
        from vlsm_batch.jobs.submit import submit
        from vlsm_batch.spec import load_spec
        from vlsm_batch.trials import expand

        spec_path = {str(REPO / "specs" / "quickstart.yaml")!r}
        assert main(["validate", spec_path, {str(REPO / "specs" / "full_benchmark.yaml")!r}]) == 0
        assert main(["plan", spec_path]) == 0
        assert main(["submit", {str(REPO / "specs" / "full_benchmark.yaml")!r}]) == 2  # refused before launch
        spec = load_spec(spec_path)
        result = submit(spec, expand(spec), progress=False, train=SLEEPY)
        assert len(result.local.done) == len(expand(spec).trials) > 1, result.local
        assert main(["status"]) == 0
        assert main(["analyze", "--by", "prompt_depth"]) == 0
        assert "torch" not in sys.modules, "torch was imported"
        print("light-ok")
        """
    cris = tmp_path / "cris_best_single.pth"
    cris.write_bytes(b"")  # full_benchmark's local CRIS weights: validate requires a local path to exist
    proc = run_py(
        code,
        tmp_path,
        CRIS_WEIGHTS=str(cris),
        VLSM_RUNS=str(tmp_path / "runs"),
        VLSM_DATA=str(tmp_path / "data"),
        VLSM_TEST_INTERVALS=str(tmp_path / "iv.jsonl"),
        VLSM_TEST_SLEEP="0.05",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "light-ok" in proc.stdout
    assert "nothing was submitted" in proc.stderr
    assert not (tmp_path / "runs" / "tunevlseg-full").exists()  # refusal left nothing behind


@pytest.mark.parametrize(
    "argv",
    [["validate", "--help"], ["plan", "--help"], ["submit", "--help"], ["status", "--help"], ["analyze", "--help"]],
)
def test_every_command_has_help(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    assert "usage: vlsm-batch" in capsys.readouterr().out


def test_invalid_spec_exit_code_and_message(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("study: x\nmodels: [clipseg]\ndatasets: [synthetic]\nstrategies: [mapel]\n")
    assert main(["validate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:4:" in err and "did you mean 'maple'" in err


def test_plan_writes_nothing(tmp_path, tmp_path_factory, capsys, monkeypatch):
    cris = tmp_path_factory.mktemp("weights") / "cris_best_single.pth"
    cris.write_bytes(b"")  # full_benchmark's local CRIS weights must exist
    monkeypatch.setenv("CRIS_WEIGHTS", str(cris))
    monkeypatch.setenv("VLSM_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("VLSM_DATA", str(tmp_path / "data"))
    assert main(["plan", str(REPO / "specs" / "full_benchmark.yaml")]) == 0
    out = capsys.readouterr().out
    assert "not trainable in this build" not in out  # cris trains coop/cocoop and both baselines
    assert "50 cells skipped" in out and "cris has a convolutional image encoder" in out
    assert list(tmp_path.iterdir()) == []
