"""The study folder: writing it (idempotently), its spec versions and lock, and reading back every trial's state."""

from __future__ import annotations

import dataclasses
import difflib
import getpass
import hashlib
import json
import platform
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from ..errors import SubmissionError
from ..layout import StudyLayout, append_jsonl, atomic_write_json, atomic_write_text, read_json
from ..spec.types import StudySpec
from ..trials import Trial
from ..trials.expand import trial_prompt_key
from . import store
from .locks import FileLock, LockBusy, describe_holder
from .store import TrialRecord, now_iso

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


def spec_version(spec: StudySpec) -> str:
    """A spec version: the first 12 hex digits of the sha256 of the spec's text."""
    return hashlib.sha256(spec.text.encode()).hexdigest()[:12]


def trial_config(spec: StudySpec, trial: Trial) -> dict[str, Any]:
    """The ``config.json`` a task reads: the trial's identity plus where to find data and weights."""
    config = {
        **trial.manifest_record(),
        "study": spec.study,
        "spec_version": spec_version(spec),
        "data_root": str(spec.data_root),
        "weights": spec.weights.get(trial.model),
        "num_workers": spec.train_for(trial.strategy).num_workers,
        "loggers": spec.train.logger_names(),  # not part of the trial id: where metrics go, not what is trained
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


def spec_history(layout: StudyLayout) -> list[dict[str, Any]]:
    """Every spec version submitted to the study, oldest first (``spec_versions.jsonl``)."""
    if not layout.spec_versions.is_file():
        return []
    out = []
    for line in layout.spec_versions.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


@dataclass
class SpecChange:
    """What a submission changes in the study: its spec version, the diff against the last one, new trials."""

    version: str
    previous: str | None
    diff: list[str]
    added: list[Trial]
    train_changes: list[str]

    @property
    def changed(self) -> bool:
        return self.previous is not None and self.previous != self.version

    def summary(self, limit: int = 40) -> str:
        """The lines ``submit`` prints when the spec changed (empty when it did not)."""
        if not self.changed:
            return ""
        lines = [f"the spec changed since the last submission (version {self.previous} -> {self.version}):"]
        lines += [f"  {ln}" for ln in self.diff[:limit]]
        if len(self.diff) > limit:
            lines.append(f"  ... ({len(self.diff) - limit} more diff lines)")
        lines.append(f"it adds {len(self.added)} trial(s) to the study" + (":" if self.added else "."))
        lines += [f"  {t.trial_id}  {t.model}/{t.dataset}/{t.strategy} seed {t.seed}" for t in self.added[:10]]
        if len(self.added) > 10:
            lines.append(f"  ... and {len(self.added) - 10} more")
        if self.train_changes and self.added:
            lines.append(
                "note: the new trials train differently from the study's earlier ones ("
                + "; ".join(self.train_changes)
                + "): they are a different experiment; status and analysis tell them apart by spec_version"
            )
        return "\n".join(lines)


def describe_change(layout: StudyLayout, spec: StudySpec, trials: list[Trial]) -> SpecChange:
    """Compare ``spec`` with the study's last submitted version (reads only)."""
    version = spec_version(spec)
    history = spec_history(layout)
    previous = history[-1]["version"] if history else None
    if previous is None and layout.spec_copy.is_file():  # a study from before spec versions
        previous = hashlib.sha256(layout.spec_copy.read_bytes()).hexdigest()[:12]
    old_text = ""
    if previous is not None:
        copy = layout.spec_version_copy(previous)
        old_text = (copy if copy.is_file() else layout.spec_copy).read_text(encoding="utf-8", errors="replace")
    diff = (
        list(difflib.unified_diff(old_text.splitlines(), spec.text.splitlines(), "before", "now", lineterm="", n=1))[2:]
        if previous not in (None, version)
        else []
    )
    existing = read_manifest(layout)
    known = {t.trial_id for t in existing}
    added = [t for t in trials if t.trial_id not in known]
    train_changes: list[str] = []
    if existing and added:
        before, now = existing[-1].train, added[0].train
        for key in sorted(set(before) | set(now)):
            if before.get(key) != now.get(key):
                train_changes.append(f"{key} {before.get(key)!r} -> {now.get(key)!r}")
    return SpecChange(version, previous, diff, added, train_changes)


def write_study(spec: StudySpec, trials: list[Trial]) -> StudyLayout:
    """Create or extend the study folder. Safe to repeat: existing trials keep their files and states.

    Each distinct spec text is kept as ``specs/<version>.yaml`` with a line in ``spec_versions.jsonl``;
    ``study.yaml`` is the latest.
    """
    layout = StudyLayout(spec.output_dir)
    change = describe_change(layout, spec, trials)
    for trial in change.added:
        paths = layout.trial(trial.trial_id)
        atomic_write_json(paths.config, trial_config(spec, trial), durable=False)
    manifest = read_manifest(layout) + change.added
    if change.added or not layout.trials_manifest.exists():
        text = "".join(json.dumps(t.manifest_record(), sort_keys=True) + "\n" for t in manifest)
        atomic_write_text(layout.trials_manifest, text)
    copy = layout.spec_version_copy(change.version)
    if not copy.is_file():
        atomic_write_text(copy, spec.text)
    if not any(v.get("version") == change.version for v in spec_history(layout)):
        append_jsonl(
            layout.spec_versions,
            {
                "version": change.version,
                "sha256": hashlib.sha256(spec.text.encode()).hexdigest(),
                "time": now_iso(),
                "previous": change.previous,
                "copy": layout.relative(copy),
                "added_trials": [t.trial_id for t in change.added],
            },
        )
    atomic_write_text(layout.spec_copy, spec.text)
    return layout


def study_lock(layout: StudyLayout, what: str, wait_s: float = 30.0, allow_local_run: bool = False) -> FileLock | None:
    """Take the study lock (waiting up to ``wait_s``); refuse at once while a local run holds it.

    ``allow_local_run``: return None instead of refusing when the holder is a local run (cancel works beside it:
    that run re-reads each record before it launches a trial). Raises SubmissionError with a one-line message.
    """
    lock = FileLock(layout.lock, what=what)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return lock.acquire(timeout_s=0)
        except LockBusy as busy:
            if busy.holder.get("mode") == "local-run" and allow_local_run:
                return None
            if busy.holder.get("mode") == "local-run" or time.monotonic() >= deadline:
                raise SubmissionError(
                    f"study {layout.root} is in use by {describe_holder(busy.holder)}: wait for it to end "
                    "(or stop it: Ctrl-C in its terminal, or `vlsm-batch cancel`), then run this again"
                ) from None
        time.sleep(0.25)


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
        "spec_version": spec_version(spec),
    }
    append_jsonl(layout.submissions, record)
    return record


@dataclass
class TrialView:
    """One trial as status, cancel and analysis see it: its manifest entry, judged record and metrics."""

    trial: Trial
    status: TrialRecord
    metrics: dict[str, Any] | None

    @property
    def state(self) -> str:
        return str(self.status.state)


def study_records(layout: StudyLayout, trials: list[Trial], persist: bool = True) -> dict[str, TrialRecord]:
    """Every trial's record with the active ones judged by :mod:`.reconcile` (the one place for "lost")."""
    from .reconcile import reconcile

    return reconcile(layout, {t.trial_id: store.read(layout.trial(t.trial_id)) for t in trials}, persist=persist)


def study_states(
    layout: StudyLayout, trials: list[Trial] | None = None, with_metrics: bool = True, persist: bool = True
) -> list[TrialView]:
    """Every trial of the study with its record (merged with Slurm's view) and metrics when done."""
    trials = read_manifest(layout) if trials is None else trials
    records = study_records(layout, trials, persist=persist)
    out = []
    for t in trials:
        record = records[t.trial_id]
        metrics = read_json(layout.trial(t.trial_id).metrics) if with_metrics and record.state == "done" else None
        out.append(TrialView(t, record, metrics))
    return out
