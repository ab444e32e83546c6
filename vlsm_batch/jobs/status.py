"""``status``: where every trial of a study stands, grouped by model and strategy, failures with log tails."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from ..layout import StudyLayout
from ..textable import render
from .logs import error_log, tail_lines, trial_log_files
from .store import FAILED, NEW, PENDING, REQUEUED, RUNNING, STATES
from .study import TrialView, spec_history, study_states

COLUMNS = tuple(str(s) for s in STATES)
ALWAYS_SHOWN = ("new", "pending", "running", "done", "failed")


@dataclass
class StudyStatus:
    layout: StudyLayout
    states: list[TrialView]
    objective: dict[str, str]

    def counts(self) -> dict[tuple[str, str], dict[str, int]]:
        table: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: dict.fromkeys(COLUMNS, 0))
        for s in self.states:
            table[(s.trial.model, s.trial.strategy)][s.state if s.state in COLUMNS else NEW] += 1
        return dict(table)

    def best(self, model: str | None = None, strategy: str | None = None) -> float | None:
        metric, mode = self.objective.get("metric", "val/dice"), self.objective.get("mode", "max")
        values = [
            float(s.metrics[metric])
            for s in self.states
            if s.metrics
            and s.metrics.get(metric) is not None
            and (model is None or s.trial.model == model)
            and (strategy is None or s.trial.strategy == strategy)
        ]
        if not values:
            return None
        return max(values) if mode == "max" else min(values)

    def failures(self, n_lines: int = 15) -> list[dict[str, Any]]:
        out = []
        for s in self.states:
            if s.state != FAILED:
                continue
            err = s.status.error or {}
            log = error_log(trial_log_files(self.layout, s.trial.trial_id, s.status))
            tail = tail_lines(log, n_lines) if log else list(err.get("traceback_tail") or [])[-n_lines:]
            out.append(
                {
                    "trial_id": s.trial.trial_id,
                    "cell": f"{s.trial.model}/{s.trial.dataset}/{s.trial.strategy}",
                    "error_class": err.get("class", "unknown"),
                    "message": err.get("message", ""),
                    "attempt": s.status.attempt,
                    "log": str(log) if log else None,
                    "log_tail": tail,
                }
            )
        return out

    def as_dict(self) -> dict[str, Any]:
        groups = []
        for (model, strategy), counts in sorted(self.counts().items()):
            groups.append({"model": model, "strategy": strategy, **counts, "best": self.best(model, strategy)})
        totals = dict.fromkeys(COLUMNS, 0)
        for s in self.states:
            totals[s.state if s.state in COLUMNS else NEW] += 1
        versions = spec_history(self.layout)
        return {
            "study": str(self.layout.root),
            "spec_versions": [
                {"version": v.get("version"), "time": v.get("time"), "added_trials": len(v.get("added_trials") or [])}
                for v in versions
            ],
            "n_trials": len(self.states),
            "objective": self.objective,
            "totals": totals,
            "groups": groups,
            "best": self.best(),
            "failures": self.failures(),
            "trials": [
                {
                    "trial_id": s.trial.trial_id,
                    "model": s.trial.model,
                    "dataset": s.trial.dataset,
                    "strategy": s.trial.strategy,
                    "state": s.state,
                    "attempt": s.status.attempt,
                    "starts": s.status.starts,
                    "epoch": s.status.epoch,
                    "executor": s.status.executor,
                    "job_id": s.status.job_id,
                    "host": s.status.host,
                    "slurm_state": s.status.slurm_state,
                    "spec_version": s.status.spec_version,
                    "error_class": (s.status.error or {}).get("class"),
                    "requeue_reason": s.status.requeue_reason,
                    "objective": (s.metrics or {}).get(self.objective.get("metric", "")),
                }
                for s in self.states
            ],
        }


def load_status(layout: StudyLayout) -> StudyStatus:
    states = study_states(layout)
    objective = states[0].trial.objective if states else {"metric": "val/dice", "mode": "max"}
    return StudyStatus(layout, states, objective)


def format_status(st: StudyStatus) -> str:
    d = st.as_dict()
    metric = st.objective.get("metric", "")
    lines = [f"study {st.layout.root}: {d['n_trials']} trials"]
    shown = [c for c in COLUMNS if c in ALWAYS_SHOWN or d["totals"][c]]  # rare states only when present
    rows = [[g["model"], g["strategy"], *(g[c] for c in shown), g["best"]] for g in d["groups"]]
    if len(rows) > 1:
        t = d["totals"]
        rows.append(["total", "", *(t[c] for c in shown), d["best"]])
    lines.append(render(["model", "strategy", *shown, f"best {metric}"], rows))
    queued = Counter(
        s.status.slurm_state for s in st.states if s.state in (PENDING, RUNNING, REQUEUED) and s.status.slurm_state
    )
    if queued:
        lines.append("Slurm: " + ", ".join(f"{n} {what}" for what, n in queued.most_common()))
    requeued = [s for s in st.states if s.state == REQUEUED]
    if requeued:
        lines.append(
            f"{len(requeued)} requeued (stopped by Slurm with their checkpoints; they resume when Slurm runs them "
            f"again), e.g. {requeued[0].trial.trial_id}: {requeued[0].status.requeue_reason or 'requeued'}"
        )
    versions = Counter(s.status.spec_version for s in st.states if s.status.spec_version)
    if len(versions) > 1:
        lines.append(
            "trials by spec version: "
            + ", ".join(f"{v} {n}" for v, n in sorted(versions.items()))
            + " (the spec changed between submissions; `status --json` lists each trial's version)"
        )
    failures = d["failures"]
    if failures:
        lines.append(f"\n{len(failures)} failed:")
        for f in failures:
            lines.append(f"  {f['trial_id']}  {f['cell']}  {f['error_class']}: {f['message'][:200]}")
            if f["log"]:
                lines.append(f"    log: {f['log']}")
            lines.extend(f"    | {ln}" for ln in f["log_tail"])
        lines.append("Relaunch them with: vlsm-batch submit SPEC --retry-failed")
    return "\n".join(lines)
