"""Bring each cell's Optuna journal in line with the trial store (the store is the truth).

It lives in jobs, beside the store it reads: :mod:`vlsm_batch.search` holds the Optuna side only and imports no
stage after trials.

A RUNNING Optuna trial whose trial record is no longer active (failed, cancelled: killed, node failure, scancel,
lost) is marked FAIL, so TPE stops counting it as running and a resubmission asks a replacement; one whose record
is done or pruned (the task died between its verdict and its tell) gets that outcome. An older Optuna trial of a
trial that asked a newer one is FAIL too. Active records (pending, running, requeued) keep theirs: a requeued
attempt re-attaches to it.
"""

from __future__ import annotations

import sys
from typing import Any

from ..layout import StudyLayout, read_json
from ..trials.expand import SEARCH_DIR


def has_journals(layout: StudyLayout) -> bool:
    folder = layout.root / SEARCH_DIR
    return folder.is_dir() and any(folder.glob("*.journal"))


def reconcile_journals(layout: StudyLayout, records: dict[str, Any]) -> int:
    """Fix RUNNING Optuna trials of the trials in ``records`` (id -> TrialRecord); returns how many were told.

    Imports Optuna only when the study has a journal. Every verdict re-reads the trial's record first.
    """
    if not has_journals(layout):
        return 0
    from ..search import optuna_study as os_
    from . import store

    told = 0
    for path in sorted((layout.root / SEARCH_DIR).glob("*.journal")):
        opt = {"study": path.stem, "journal": f"{SEARCH_DIR}/{path.name}"}
        try:
            study = os_.open_study(layout.root, opt)
            running = os_.running_trials(study)
        except Exception as exc:  # a damaged journal must not break status
            print(f"warning: could not read {path}: {exc}", file=sys.stderr)
            continue
        for ft in running:
            tid = ft.user_attrs.get(os_.TRIAL_ATTR)
            if tid is None:
                if os_.orphan(ft):
                    told += os_.tell(layout.root, opt, ft.number, "fail")
                continue
            if tid not in records:
                continue
            fresh = store.read(layout.trial(tid))
            mine = fresh.extra.get("optuna_trial")
            newer = isinstance(mine, int) and mine > ft.number
            if fresh.state in store.ACTIVE and not newer:
                continue
            if fresh.state == store.PRUNED and not newer:
                told += os_.tell(layout.root, opt, ft.number, "pruned")
            elif fresh.state == store.DONE and not newer:
                full = read_json(layout.trial(tid).config) or {}
                value = os_.objective_value(read_json(layout.trial(tid).metrics), full.get("optuna", {}))
                told += os_.tell(layout.root, opt, ft.number, "complete", value)
            else:
                told += os_.tell(layout.root, opt, ft.number, "fail")
    return told
