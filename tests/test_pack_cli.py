"""Packed studies as a user runs them: ``vlsm-batch submit`` with ``resources.pack`` (real training, tiny CLIPSeg),
locally and on the real local Slurm, with a requeue in the middle."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from helpers import one_trial_spec, run_cli
from test_slurm import slurm  # noqa: F401 - the module-scoped fixture: skip or fail without a controller

from vlsm_batch.layout import StudyLayout

REPO = Path(__file__).resolve().parent.parent
THREE = """\
  method: sobol
  trials: 3
  seed: 0
  objective: {metric: val/dice, mode: max}
  space:
    lr: {log_uniform: [3.0e-3, 3.0e-2]}
    prompt_depth: {int: [1, 3]}
"""


_cli = run_cli


def _quickstart(tmp_path: Path, pack: str, name: str) -> Path:
    text = (REPO / "specs" / "quickstart.yaml").read_text()
    text = text.replace("output_dir: ${VLSM_RUNS:-runs}/quickstart", f"output_dir: ${{VLSM_RUNS:-runs}}/{name}")
    text = text.replace("  executor: local\n", f"  executor: local\n  pack: {pack}\n")
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(text)
    return spec


def _epochs_done(layout: StudyLayout, tid: str) -> int:
    history = layout.trial(tid).history
    return len(history.read_text().splitlines()) - 1 if history.is_file() else 0


def _metrics(root: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted((root / "trials").glob("*/metrics.json"))}


def test_quickstart_packed_ends_as_unpacked(tmp_path: Path) -> None:
    """The quickstart with its default (a process per trial), with ``pack: 4`` (2 processes) and ``pack: auto``
    (1 process, sized from free RAM): every trial done, the same metrics to float precision (CoOp shares its image
    forward exactly), and status/analyze work on the packed study."""
    results = {}
    for pack, name in (("1", "solo"), ("4", "four"), ("auto", "auto")):
        proc = _cli(["submit", str(_quickstart(tmp_path, pack, name)), "--no-progress"], tmp_path)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert "8 done, 0 failed" in proc.stdout, proc.stdout[-2000:]
        results[pack] = _metrics(tmp_path / "runs" / name)
    assert len(results["1"]) == 8 and results["1"].keys() == results["4"].keys() == results["auto"].keys()
    for tid, alone in results["1"].items():
        for pack, size in (("4", 4), ("auto", 8)):
            packed = results[pack][tid]
            assert packed["pack_size"] == size
            assert packed["best_epoch"] == alone["best_epoch"] and packed["epochs"] == alone["epochs"]
            for key in ("val/dice", "val/loss", "test/dice", "test/iou"):
                assert packed[key] == pytest.approx(alone[key], abs=1e-6), (tid, pack, key)
    study = tmp_path / "runs" / "four"
    status = _cli(["status", "--study", str(study), "--json"], tmp_path)
    assert status.returncode == 0, status.stderr
    packs = {tuple(sorted(t["pack"])) for t in json.loads(status.stdout)["trials"] if t.get("pack")}
    assert len(packs) == 2 and all(len(p) == 4 for p in packs)
    analyze = _cli(["analyze", "--study", str(study), "--by", "prompt_depth"], tmp_path)
    assert analyze.returncode == 0, analyze.stdout[-2000:] + analyze.stderr[-2000:]


def test_scontrol_requeue_of_a_real_pack_resumes_every_member(slurm: dict, tmp_path: Path) -> None:  # noqa: F811
    """Three real trials in one array task on the real cluster: ``scontrol requeue`` mid-fit records every
    member requeued (never failed), the rerun resumes each from its own last epoch, and each ends with the
    metrics of the same trial trained alone."""
    runs, data = tmp_path / "runs", tmp_path / "data"
    extra = "  pack: 3\n"
    slurm_text = one_trial_spec(runs / "slurm", data, 8, executor="slurm", study="pk", search=THREE)
    slurm_text = slurm_text.replace("  executor: slurm\n", "  executor: slurm\n" + extra)
    (tmp_path / "slurm.yaml").write_text(slurm_text)
    (tmp_path / "local.yaml").write_text(one_trial_spec(runs / "local", data, 8, study="pk", search=THREE))
    proc = _cli(["submit", str(tmp_path / "slurm.yaml")], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    from vlsm_batch.jobs.store import read

    layout = StudyLayout(runs / "slurm")
    tids = [p.name for p in (layout.root / "trials").iterdir()]
    assert len(tids) == 3
    jobs = {read(layout.trial(t)).job_id for t in tids}
    assert len(jobs) == 1, jobs  # one array task for the pack
    deadline = time.time() + 600
    while min(_epochs_done(layout, t) for t in tids) < 2:  # every member two epochs in
        assert time.time() < deadline, [read(layout.trial(t)).state for t in tids]
        time.sleep(1)
    subprocess.run(["scontrol", "requeue", jobs.pop()], check=True, timeout=30)
    deadline = time.time() + 900
    while not all(str(read(layout.trial(t)).state) in ("done", "failed", "cancelled") for t in tids):
        assert time.time() < deadline, [read(layout.trial(t)).state for t in tids]
        time.sleep(1)
    local = _cli(["submit", str(tmp_path / "local.yaml"), "--no-progress"], tmp_path)
    assert local.returncode == 0, local.stdout[-2000:] + local.stderr[-2000:]
    alone = _metrics(runs / "local")
    for tid in tids:
        record = read(layout.trial(tid))
        events = [e["event"] for e in record.events]
        assert str(record.state) == "done" and "requeue" in events and "fail" not in events, record
        epochs = [int(line.split(",")[0]) for line in layout.trial(tid).history.read_text().splitlines()[1:]]
        assert epochs == list(range(1, 9)), epochs
        packed = json.loads(layout.trial(tid).metrics.read_text())
        for key in ("val/dice", "val/loss", "test/dice", "best_epoch", "epochs"):
            assert packed[key] == pytest.approx(alone[tid][key], abs=1e-6), (tid, key)
