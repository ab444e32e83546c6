"""``status``: where every trial of a study stands, grouped by model and strategy, failures with log tails."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..layout import StudyLayout
from ..textable import render
from .state import CANCELLED, DONE, FAILED, NEW, PENDING, RUNNING, tail_lines
from .study import TrialState, study_states

COLUMNS = (NEW, PENDING, RUNNING, DONE, FAILED, CANCELLED)


def trial_logs(layout: StudyLayout, state: TrialState) -> list[Path]:
    """Log files of a trial: its own folder (local runs) or the submitit folder of its Slurm job."""
    paths = layout.trial(state.trial.trial_id).log_files()
    job_id = state.status.get("job_id")
    if state.status.get("executor") == "slurm" and job_id:
        folder = layout.submitit / str(job_id)
        if folder.is_dir():
            paths += sorted(folder.glob("*_log.*"), key=lambda p: p.stat().st_mtime)
    return paths


@dataclass
class StudyStatus:
    layout: StudyLayout
    states: list[TrialState]
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
            err = s.status.get("error") or {}
            logs = trial_logs(self.layout, s)
            err_logs = [p for p in logs if p.name.endswith(".err")] or logs
            log = err_logs[-1] if err_logs else None
            tail = tail_lines(log, n_lines) if log else list(err.get("traceback_tail") or [])[-n_lines:]
            out.append(
                {
                    "trial_id": s.trial.trial_id,
                    "cell": f"{s.trial.model}/{s.trial.dataset}/{s.trial.strategy}",
                    "error_class": err.get("class", "unknown"),
                    "message": err.get("message", ""),
                    "attempt": s.status.get("attempt"),
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
        return {
            "study": str(self.layout.root),
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
                    "job_id": s.status.get("job_id"),
                    "slurm_state": s.status.get("slurm_state"),
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
    rows = [[g["model"], g["strategy"], *(g[c] for c in COLUMNS), g["best"]] for g in d["groups"]]
    if len(rows) > 1:
        t = d["totals"]
        rows.append(["total", "", *(t[c] for c in COLUMNS), d["best"]])
    lines.append(render(["model", "strategy", *COLUMNS, f"best {metric}"], rows))
    queued = Counter(
        s.status["slurm_state"] for s in st.states if s.state in (PENDING, RUNNING) and s.status.get("slurm_state")
    )
    if queued:
        lines.append("Slurm: " + ", ".join(f"{n} {what}" for what, n in queued.most_common()))
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
