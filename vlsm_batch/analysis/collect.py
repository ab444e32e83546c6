"""Every trial of a study (parameters, state, metrics) in one Polars frame."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..jobs.study import study_states
from ..layout import StudyLayout

if TYPE_CHECKING:
    import polars as pl

AXES = ("model", "dataset", "strategy", "seed")


def trial_rows(layout: StudyLayout) -> list[dict[str, Any]]:
    rows = []
    for s in study_states(layout):
        t = s.trial
        row: dict[str, Any] = {
            "trial_id": t.trial_id,
            "model": t.model,
            "dataset": t.dataset,
            "strategy": t.strategy,
            "seed": t.seed,
            "sample_index": t.sample_index,
            "state": s.state,
        }
        for k, v in t.params.items():
            row[k] = v
        for k, v in (s.metrics or {}).items():
            if isinstance(v, (int, float, str, bool)) or v is None:
                row.setdefault(k, v)
        rows.append(row)
    return rows


def collect(layout: StudyLayout) -> pl.DataFrame:
    """One row per trial; parameters a strategy does not take are null for it."""
    import polars as pl

    rows = trial_rows(layout)
    columns: dict[str, None] = {}
    for r in rows:
        columns.update(dict.fromkeys(r))
    data = {c: [r.get(c) for r in rows] for c in columns}
    return pl.DataFrame(data, strict=False)
