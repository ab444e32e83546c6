"""``plan``: what a spec expands to, against what the study folder already holds. Writes nothing."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..layout import StudyLayout
from ..spec.types import StudySpec
from ..textable import render
from ..trials import Expansion
from .store import DONE, FAILED, NEW, read


@dataclass
class PlanRow:
    model: str
    dataset: str
    strategy: str
    trials: int
    new: int
    done: int
    failed: int
    other: int
    note: str = ""


@dataclass
class Plan:
    rows: list[PlanRow] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    unsupported: int = 0

    @property
    def totals(self) -> dict[str, int]:
        keys = ("trials", "new", "done", "failed", "other")
        return {k: sum(getattr(r, k) for r in self.rows) for k in keys}

    def as_dict(self) -> dict[str, Any]:
        return {"cells": [r.__dict__ for r in self.rows], "totals": self.totals, "skipped": self.skipped}


def make_plan(spec: StudySpec, expansion: Expansion) -> Plan:
    layout = StudyLayout(spec.output_dir)
    plan = Plan()
    for cell in expansion.cells:
        if cell.skipped:
            plan.skipped.append(f"{cell.strategy} on {cell.model} / {cell.dataset}: {cell.skipped}")
            plan.rows.append(PlanRow(cell.model, cell.dataset, cell.strategy, 0, 0, 0, 0, 0, "skipped"))
            continue
        counts: Counter[str] = Counter()
        if layout.exists():
            for t in cell.trials:
                counts[str(read(layout.trial(t.trial_id)).state)] += 1
        else:
            counts[NEW] = len(cell.trials)
        other = len(cell.trials) - counts[NEW] - counts[DONE] - counts[FAILED]
        note = "not trainable in this build" if cell.unsupported else ""
        plan.unsupported += len(cell.trials) if cell.unsupported else 0
        plan.rows.append(
            PlanRow(
                cell.model,
                cell.dataset,
                cell.strategy,
                len(cell.trials),
                counts[NEW],
                counts[DONE],
                counts[FAILED],
                other,
                note,
            )
        )
    return plan


def format_plan(spec: StudySpec, plan: Plan, expansion: Expansion) -> str:
    t = plan.totals
    s = spec.search
    head = (
        f"study {spec.study} -> {spec.output_dir}\n"
        f"  {len(spec.models)} models x {len(spec.datasets)} datasets x "
        f"{len(spec.strategies) + len(spec.baselines)} strategies, {s.method}"
        + (f" {s.trials} per cell" if s.trials else "")
        + f", seeds {list(spec.seeds)}; objective {s.objective_metric} ({s.objective_mode})\n"
    )
    rows = [
        [r.model, r.dataset, r.strategy, r.trials, r.new, r.done, r.failed, r.other, r.note]
        for r in plan.rows
        if r.note != "skipped"
    ]
    rows.append(["total", "", "", t["trials"], t["new"], t["done"], t["failed"], t["other"], ""])
    body = render(["model", "dataset", "strategy", "trials", "new", "done", "failed", "other", "note"], rows)
    notes = []
    skipped = [c for c in expansion.cells if c.skipped]
    if skipped:
        notes.append(f"{len(skipped)} cells skipped (the model cannot run the strategy; nothing runs for them):")
        by_pair: dict[tuple[str, str, str], int] = {}
        for c in skipped:
            key = (c.model, c.strategy, c.skipped or "")
            by_pair[key] = by_pair.get(key, 0) + 1
        notes.extend(f"  {s} on {m} ({n} datasets): {why}" for (m, s, why), n in by_pair.items())
    if plan.unsupported:
        reasons = sorted({c.unsupported for c in expansion.cells if c.unsupported and not c.skipped})
        notes.append(f"{plan.unsupported} trials are not trainable in this build; submit will refuse them:")
        notes.extend(f"  {r}" for r in reasons)
    notes.extend(search_notes(spec, expansion))
    skip_notes = {f"{c.strategy} skipped for {c.model}: {c.skipped}" for c in skipped}
    notes.extend(f"note: {n}" for n in spec.notes if n not in skip_notes)
    return head + body + ("\n" + "\n".join(notes) if notes else "")


def search_notes(spec: StudySpec, expansion: Expansion) -> list[str]:
    """What plan says about adaptive search and pruning (nothing here imports Optuna)."""
    s, notes = spec.search, []
    adaptive = [t for t in expansion.runnable if t.adaptive]
    if adaptive:
        studies = len({t.optuna.get("study") for t in adaptive})
        notes.append(
            f"{len(adaptive)} trials will be asked from {studies} Optuna TPE studies (one per cell and seed, "
            f"{s.trials} asks each; the first {s.n_startup_trials} at random): their values are chosen adaptively "
            "when each task starts, from the results so far, so plan cannot list them; `status` and `analyze` show "
            "them once asked. With array parallelism P the first P asks see no result: keep n_startup_trials >= P"
        )
    if s.pruner.active:
        p = s.pruner
        how = (
            f"asha (min_resource {p.min_resource}, reduction_factor {p.reduction_factor})"
            if p.kind == "asha"
            else f"median (warmup {p.warmup}, n_startup_trials {p.n_startup_trials})"
        )
        notes.append(
            f"pruner {how}{f', grace {p.grace} epochs' if p.grace else ''}: unpromising trials stop early and end "
            "as pruned (finished, not failed, never retried)"
        )
    return notes
