"""The study folder: writing it (idempotently) and reading back every trial's state."""

from __future__ import annotations

import dataclasses
import getpass
import hashlib
import json
import platform
import socket
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from ..layout import StudyLayout, append_jsonl, atomic_write_json, atomic_write_text, read_json
from ..spec.types import StudySpec
from ..trials import Trial
from ..trials.expand import trial_prompt_key
from .state import NEW, PENDING, now_iso, read_status, write_status

VERSIONED_PACKAGES = (
    "vlsm-batch",
    "torch",
    "torchvision",
    "transformers",
    "open_clip_torch",
    "pytorch-lightning",
    "submitit",
    "polars",
)


def read_manifest(layout: StudyLayout) -> list[Trial]:
    """Trials recorded in trials.jsonl (empty when the study does not exist yet)."""
    if not layout.trials_manifest.exists():
        return []
    with open(layout.trials_manifest, encoding="utf-8") as f:
        return [Trial.from_record(json.loads(line)) for line in f if line.strip()]


def trial_config(spec: StudySpec, trial: Trial) -> dict[str, Any]:
    """The ``config.json`` a task reads: the trial's identity plus where to find data and weights."""
    config = {
        **trial.manifest_record(),
        "study": spec.study,
        "data_root": str(spec.data_root),
        "weights": spec.weights.get(trial.model),
        "num_workers": spec.train.num_workers,
        "prompt_key": trial_prompt_key(spec, trial.dataset),
    }
    custom = spec.custom_datasets.get(trial.dataset)
    if custom is not None:  # the training side rebuilds the DatasetInfo from this (path included)
        config["dataset_def"] = {
            **dataclasses.asdict(custom),
            "path": str(custom.path),
            "prompt_key": trial_prompt_key(spec, trial.dataset),
        }
    return config


def write_study(spec: StudySpec, trials: list[Trial]) -> StudyLayout:
    """Create or extend the study folder. Safe to repeat: existing trials keep their files and states."""
    layout = StudyLayout(spec.output_dir)
    existing = read_manifest(layout)
    known = {t.trial_id for t in existing}
    added = [t for t in trials if t.trial_id not in known]
    for trial in added:
        paths = layout.trial(trial.trial_id)
        atomic_write_json(paths.config, trial_config(spec, trial), durable=False)
    manifest = existing + added
    if added or not layout.trials_manifest.exists():
        text = "".join(json.dumps(t.manifest_record(), sort_keys=True) + "\n" for t in manifest)
        atomic_write_text(layout.trials_manifest, text)
    atomic_write_text(layout.spec_copy, spec.text)
    return layout


def mark_pending(layout: StudyLayout, trial_ids: list[str], executor: str) -> None:
    for tid in trial_ids:
        write_status(
            layout.trial(tid),
            PENDING,
            durable=False,
            executor=executor,
            submitted_at=now_iso(),
            error=None,
            job_id=None,
        )


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def log_submission(
    layout: StudyLayout,
    spec: StudySpec,
    executor: str,
    trial_ids: list[str],
    job_ids: list[str],
    argv: list[str] | None = None,
) -> dict[str, Any]:
    record = {
        "time": now_iso(),
        "executor": executor,
        "trials": trial_ids,
        "n_trials": len(trial_ids),
        "job_ids": job_ids,
        "git_commit": _git_commit(),
        "versions": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "user": getpass.getuser(),
        "argv": argv if argv is not None else sys.argv,
        "spec_sha256": hashlib.sha256(spec.text.encode()).hexdigest(),
    }
    append_jsonl(layout.submissions, record)
    return record


@dataclass
class TrialState:
    trial: Trial
    status: dict[str, Any]
    metrics: dict[str, Any] | None

    @property
    def state(self) -> str:
        return str(self.status.get("state", NEW))


def study_states(layout: StudyLayout, trials: list[Trial] | None = None, with_metrics: bool = True) -> list[TrialState]:
    """Every trial of the study with its status (merged with Slurm's view) and metrics when present."""
    from .reconcile import reconcile

    trials = read_manifest(layout) if trials is None else trials
    statuses = reconcile(layout, {t.trial_id: read_status(layout.trial(t.trial_id)) for t in trials})
    out = []
    for t in trials:
        status = statuses[t.trial_id]
        paths = layout.trial(t.trial_id)
        metrics = read_json(paths.metrics) if with_metrics and status.get("state") == "done" else None
        out.append(TrialState(t, status, metrics))
    return out
