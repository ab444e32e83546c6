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
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STUDY_MARKER = "trials.jsonl"


def umask() -> int:
    """The process umask, read without changing it where Linux reports it (``os.umask`` sets it, briefly, for every
    thread), so files another user of a shared folder must read get the group/other bits the user chose."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass  # not Linux: fall back to setting and restoring it
    current = os.umask(0o022)
    os.umask(current)
    return current


def atomic_write_text(path: Path, text: str, durable: bool = True) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see half a file.

    ``durable`` also fsyncs before the rename (survives a node crash); bulk writes of thousands of
    small files at submit time skip it, since a re-run rewrites whatever a crash lost.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~umask())  # mkstemp makes 0600; collaborators on a shared cluster must read results
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
