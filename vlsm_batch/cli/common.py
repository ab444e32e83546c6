"""What every command shares: exit codes, printing, and finding the study folder a command works on."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..errors import StudyNotFoundError
from ..layout import StudyLayout, find_latest_study

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

STUDY_HELP = "study folder (default: the most recent one under the current folder)"


def out(text: str = "") -> None:
    print(text, flush=True)


def err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _submitted_at(root: Path) -> float:
    sub = StudyLayout(root).submissions
    return sub.stat().st_mtime if sub.exists() else 0.0


def study_dir(arg: str | None) -> Path:
    """``--study DIR``, else the most recently submitted study under the current folder or ``$VLSM_RUNS``."""
    if arg:
        root = Path(arg)
        if not StudyLayout(root).exists():
            raise StudyNotFoundError(
                f"{root} is not a study folder (no trials.jsonl); pass the output_dir of a submitted spec."
            )
        return root
    bases = [Path.cwd()] + ([Path(os.environ["VLSM_RUNS"])] if os.environ.get("VLSM_RUNS") else [])
    found = [f for f in (find_latest_study(b) for b in bases) if f is not None]
    if not found:
        raise StudyNotFoundError(
            "no study found under the current folder or $VLSM_RUNS (looked for */trials.jsonl two levels "
            "deep); run `vlsm-batch submit SPEC` first or pass --study DIR."
        )
    return max(found, key=_submitted_at)
