"""SAM 3 as a user runs it: the quickstart with ``models: [clipseg-tiny, sam3-tiny]`` through ``validate``,
``plan``, ``submit`` (real training, packed), ``status`` and ``analyze`` in real subprocesses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import run_cli

pytest.importorskip("torch")

REPO = Path(__file__).resolve().parent.parent


_cli = run_cli


def _spec(tmp_path: Path) -> Path:
    text = (REPO / "specs" / "quickstart.yaml").read_text()
    text = text.replace("output_dir: ${VLSM_RUNS:-runs}/quickstart", "output_dir: ${VLSM_RUNS:-runs}/sam3")
    text = text.replace("models: [clipseg-tiny]", "models: [clipseg-tiny, sam3-tiny]")
    text = text.replace("strategies: [coop]", "strategies: [coop, vpt, detr_vpt]\nbaselines: [zero_shot]")
    text = text.replace("  trials: 8\n", "  trials: 2\n")
    text = text.replace("  max_epochs: 6\n", "  max_epochs: 2\n")
    text = text.replace("  executor: local\n", "  executor: local\n  pack: 2\n")
    spec = tmp_path / "sam3.yaml"
    spec.write_text(text)
    return spec


def _own_depth(spec: Path) -> None:
    """detr_vpt's own depth range: sam3-tiny's DETR encoder has 3 layers, the shared space goes to 4."""
    text = spec.read_text()
    line = "    prompt_depth: {int: [1, 4]}\n"
    assert line in text
    spec.write_text(text.replace(line, line + "  per_strategy:\n    detr_vpt: {prompt_depth: {int: [1, 3]}}\n"))


@pytest.mark.slow
def test_quickstart_with_sam3_end_to_end(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    refused = _cli(["validate", str(spec)], tmp_path)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert (
        "DETR encoder layers 3" in refused.stdout + refused.stderr
        and "per_strategy.detr_vpt" in refused.stdout + refused.stderr
    )
    _own_depth(spec)
    validate = _cli(["validate", str(spec)], tmp_path)
    assert validate.returncode == 0, validate.stdout + validate.stderr
    assert "vpt skipped for sam3-tiny" in validate.stdout + validate.stderr
    assert "detr_vpt skipped for clipseg-tiny" in validate.stdout + validate.stderr
    plan = _cli(["plan", str(spec)], tmp_path)
    assert plan.returncode == 0, plan.stdout[-3000:] + plan.stderr[-3000:]
    assert "sam3-tiny" in plan.stdout and "windows" in plan.stdout  # the skip and its reason are listed
    proc = _cli(["submit", str(spec), "--no-progress"], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # clipseg-tiny: coop 2 + vpt 2 + zero-shot 1; sam3-tiny: coop 2 + detr_vpt 2 + zero-shot 1
    assert "10 done, 0 failed" in proc.stdout, proc.stdout[-2000:]
    study = tmp_path / "runs" / "sam3"
    trial_dirs = sorted((study / "trials").iterdir())
    configs = {d.name: json.loads((d / "config.json").read_text()) for d in trial_dirs}
    metrics = {d.name: json.loads((d / "metrics.json").read_text()) for d in trial_dirs}
    sam3 = [t for t, c in configs.items() if c["model"] == "sam3-tiny"]
    assert len(metrics) == 10 and len(sam3) == 5
    for t in sam3:
        assert 0.0 <= metrics[t]["test/dice"] <= 1.0 and 0.0 <= metrics[t]["val/dice"] <= 1.0
    packed = {metrics[t].get("pack_size") for t in sam3 if configs[t]["strategy"] != "zero_shot"}
    assert packed == {2}, packed
    status = _cli(["status", "--study", str(study), "--json"], tmp_path)
    assert status.returncode == 0, status.stderr
    trials = json.loads(status.stdout)["trials"]
    assert len(trials) == 10 and {t["state"] for t in trials} == {"done"}
    analyze = _cli(["analyze", "--study", str(study), "--by", "prompt_depth"], tmp_path)
    assert analyze.returncode == 0, analyze.stdout[-3000:] + analyze.stderr[-3000:]
    assert "sam3-tiny" in analyze.stdout
    report = next(study.rglob("report.html")).read_text()
    assert "sam3-tiny" in report and "clipseg-tiny" in report
