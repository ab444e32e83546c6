"""The only code that knows on-disk names of a study folder, plus atomic writes.

runs/<study>/
  study.yaml (latest spec)  specs/<version>.yaml  spec_versions.jsonl  trials.jsonl  submissions.jsonl
  study.lock  submitit/
  trials/<id>/config.json status.json (the trial store's record) record.lock claim.lock metrics.json
              history.csv checkpoints/ logs/
  analysis/

Files inside a study refer to other files of the study by paths relative to the study folder, so a moved or
copied study keeps working.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# re-exported: callers import the atomic writers and the umask from here
from .atomic import atomic_path as atomic_path
from .atomic import atomic_write_text as atomic_write_text
from .atomic import umask as umask

STUDY_MARKER = "trials.jsonl"


def atomic_write_json(path: Path, data: Any, durable: bool = True) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", durable)


def read_json(path: Path) -> Any | None:
    """The parsed file, or None when it does not exist (or is unreadable: never crash a status scan)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one line in a single write (O_APPEND keeps concurrent lines whole)."""
    line = json.dumps(record, sort_keys=True, default=str) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)


@dataclass(frozen=True)
class TrialPaths:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def status(self) -> Path:
        return self.root / "status.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def history(self) -> Path:
        return self.root / "history.csv"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def logs(self) -> Path:
        """submitit's folder for this trial's local jobs (``<job>_log.out``/``.err``)."""
        return self.root / "logs"

    def log_files(self) -> list[Path]:
        """Log files of every attempt, oldest first."""
        if not self.logs.is_dir():
            return []
        return sorted(
            (p for p in self.logs.iterdir() if p.name.endswith(("_log.out", "_log.err"))),
            key=lambda p: p.stat().st_mtime,
        )


@dataclass(frozen=True)
class StudyLayout:
    root: Path

    @property
    def spec_copy(self) -> Path:
        return self.root / "study.yaml"

    @property
    def trials_manifest(self) -> Path:
        return self.root / STUDY_MARKER

    @property
    def submissions(self) -> Path:
        return self.root / "submissions.jsonl"

    @property
    def submitit(self) -> Path:
        return self.root / "submitit"

    @property
    def lock(self) -> Path:
        """The study lock: held by submit and cancel while they change what is queued."""
        return self.root / "study.lock"

    @property
    def spec_versions(self) -> Path:
        """One line per distinct spec text ever submitted (version, time, trials it added)."""
        return self.root / "spec_versions.jsonl"

    def spec_version_copy(self, version: str) -> Path:
        return self.root / "specs" / f"{version}.yaml"

    def relative(self, path: Path | str) -> str:
        """``path`` relative to the study folder when inside it (what records store), else as given."""
        try:
            return str(Path(path).resolve().relative_to(self.root.resolve()))
        except ValueError:
            return str(path)

    def resolve(self, stored: str | None) -> Path | None:
        """A path as a record stores it (relative to the study, or absolute from older versions)."""
        if not stored:
            return None
        p = Path(stored)
        return p if p.is_absolute() else self.root / p

    @property
    def trials_dir(self) -> Path:
        return self.root / "trials"

    @property
    def analysis(self) -> Path:
        return self.root / "analysis"

    def trial(self, trial_id: str) -> TrialPaths:
        return TrialPaths(self.trials_dir / trial_id)

    def exists(self) -> bool:
        return self.trials_manifest.is_file()


def find_latest_study(base: Path) -> Path | None:
    """The most recently submitted study under ``base`` (searched two levels deep, e.g. runs/<study>)."""
    candidates: list[Path] = []
    for pattern in (STUDY_MARKER, f"*/{STUDY_MARKER}", f"*/*/{STUDY_MARKER}"):
        candidates.extend(base.glob(pattern))
    if not candidates:
        return None

    def stamp(marker: Path) -> float:
        sub = marker.parent / "submissions.jsonl"
        return (sub if sub.exists() else marker).stat().st_mtime

    return max(candidates, key=stamp).parent
