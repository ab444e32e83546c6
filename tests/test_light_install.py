"""`pip install vlsm-batch` (no extras) is enough for validate, plan, plan --sbatch, submit's checks and status,
and refuses analyze and a local training run with one sentence naming the extra, in a fresh venv without torch.

Marked ``slow``: it builds a virtual environment and installs the core dependencies (pip's cache or the package
registry; about a minute).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SPECS = REPO / "specs"

pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def light_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with vlsm-batch installed from a copy of this checkout, with its core dependencies only."""
    base = tmp_path_factory.mktemp("light")
    src = base / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "vlsm_batch", src / "vlsm_batch", ignore=shutil.ignore_patterns("__pycache__"))
    venv = base / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    made = _run([sys.executable, "-m", "venv", str(venv)], base, env)
    assert made.returncode == 0, made.stderr
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    installed = _run([*pip, str(src)], base, env)
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    return venv


def _env(tmp_path: Path) -> dict[str, str]:
    cris = tmp_path / "cris_best_single.pth"
    cris.write_bytes(b"")  # full_benchmark's local CRIS weights: validate requires the path to exist
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(CRIS_WEIGHTS=str(cris), VLSM_RUNS=str(tmp_path / "runs"), VLSM_DATA=str(tmp_path / "data"))
    return env


def test_light_install_has_no_heavy_packages(light_venv: Path, tmp_path: Path) -> None:
    py = str(light_venv / "bin" / "python")
    for module in ("torch", "torchvision", "pytorch_lightning", "transformers", "open_clip", "polars", "matplotlib"):
        proc = _run([py, "-c", f"import {module}"], tmp_path, _env(tmp_path))
        assert proc.returncode != 0 and "ModuleNotFoundError" in proc.stderr, module
    proc = _run(
        [py, "-c", "import vlsm_batch, jsonschema, ruamel.yaml, submitit, scipy, optuna"], tmp_path, _env(tmp_path)
    )
    assert proc.returncode == 0, proc.stderr


def test_light_commands_work_without_torch(light_venv: Path, tmp_path: Path) -> None:
    vb = str(light_venv / "bin" / "vlsm-batch")
    env = _env(tmp_path)
    quick, full = str(SPECS / "quickstart.yaml"), str(SPECS / "full_benchmark.yaml")

    t0 = time.perf_counter()
    proc = _run([vb, "--help"], tmp_path, env)
    help_s = time.perf_counter() - t0
    assert proc.returncode == 0 and "validate" in proc.stdout and "analyze" in proc.stdout, proc.stderr

    t0 = time.perf_counter()
    proc = _run([vb, "validate", quick, full], tmp_path, env)
    validate_s = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{quick}: ok" in proc.stdout and f"{full}: ok" in proc.stdout
    print(f"light venv: --help {help_s:.2f} s, validate (2 specs) {validate_s:.2f} s")

    for spec in (quick, full):
        proc = _run([vb, "plan", spec], tmp_path, env)
        assert proc.returncode == 0 and "trials" in proc.stdout, proc.stdout + proc.stderr
        proc = _run([vb, "plan", "--sbatch", spec], tmp_path, env)
        assert proc.returncode == 0 and "#SBATCH" in proc.stdout, proc.stdout + proc.stderr
    # full_benchmark's datasets are not prepared here: submit refuses after its checks, before anything is written
    proc = _run([vb, "submit", full], tmp_path, env)
    assert proc.returncode == 2 and "nothing was submitted" in proc.stderr, proc.stdout + proc.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_missing_extras_are_named(light_venv: Path, tmp_path: Path) -> None:
    vb = str(light_venv / "bin" / "vlsm-batch")
    env = _env(tmp_path)
    # quickstart runs locally: training needs torch, so submit refuses with the extra to install
    proc = _run([vb, "submit", str(SPECS / "quickstart.yaml"), "--no-progress"], tmp_path, env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "a local training run needs the [train] extra: pip install 'vlsm-batch[train]'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # nothing written
    proc = _run([vb, "analyze", "--by", "prompt_depth"], tmp_path, env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "analysis needs the [analysis] extra: pip install 'vlsm-batch[analysis]'" in proc.stderr
    assert "Traceback" not in proc.stderr
