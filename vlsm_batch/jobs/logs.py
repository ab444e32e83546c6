"""Where a trial's log files are (local attempts and Slurm tasks), one function for ``status`` and ``logs``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from ..layout import StudyLayout
from .store import TrialRecord


def trial_log_files(layout: StudyLayout, trial_id: str, record: TrialRecord) -> list[Path]:
    """Every log of a trial, oldest first: its local attempts, then its Slurm task's (recorded and derived)."""
    files = layout.trial(trial_id).log_files()
    candidates: list[Path] = [p for p in (layout.resolve(record.log_out), layout.resolve(record.log_err)) if p]
    if record.job_id and record.executor == "slurm":
        folder = layout.submitit / str(record.job_id)
        if folder.is_dir():
            candidates += sorted(folder.glob("*_log.*"), key=lambda p: p.stat().st_mtime)
    seen = {p.resolve() for p in files}
    for c in candidates:
        if c.is_file() and c.resolve() not in seen:
            seen.add(c.resolve())
            files.append(c)
    return files


def error_log(files: list[Path]) -> Path | None:
    """The newest stderr log (else the newest log): where a failure's traceback is."""
    errs = [p for p in files if p.name.endswith(".err")] or files
    return max(errs, key=lambda p: p.stat().st_mtime) if errs else None


class TrialLogs(NamedTuple):
    """A trial's logs and the one that speaks for it: ``status`` tails ``main``, ``logs`` prints it last, marked."""

    files: list[Path]  # oldest first, main moved to the end
    main: Path | None


def trial_logs(layout: StudyLayout, trial_id: str, record: TrialRecord) -> TrialLogs:
    """The single choice of a trial's log for both ``status`` and ``logs``, so they never name different files."""
    files = trial_log_files(layout, trial_id, record)
    main = error_log(files)
    return TrialLogs([f for f in files if f != main] + ([main] if main else []), main)


def tail_lines(path: Path, n: int = 20, max_bytes: int = 64_000) -> list[str]:
    """Last ``n`` lines of a text file without reading all of it."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return []
    return data.decode("utf-8", "replace").splitlines()[-n:]
