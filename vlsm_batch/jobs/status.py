"""``status``: where every trial of a study stands, grouped by model and strategy, running trials with their
epoch and ETA (read from their ``history.csv``: training writes it every epoch and knows nothing of this
module), failures with log tails."""

from __future__ import annotations

import csv
import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..layout import StudyLayout
from ..textable import render
from .logs import tail_lines, trial_logs
from .store import FAILED, NEW, PENDING, PRUNED, REQUEUED, RUNNING, STATES
from .study import TrialView, spec_history, study_states

COLUMNS = tuple(str(s) for s in STATES)
MAX_RUNNING_SHOWN = 40  # the rest summarised in one line (a 60-job array fits a terminal)


@dataclass
class Progress:
    """How far a running trial is: from the last row of its history.csv and its max_epochs."""

    epoch: int | None
    max_epochs: int | None
    objective: float | None  # the last epoch's validation objective
    s_per_epoch: float | None  # mean over the epochs of history.csv
    eta_s: float | None  # (max_epochs - epoch) x s/epoch: an upper bound (early stopping may end sooner)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _float(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def read_progress(history: Path, max_epochs: int | None, metric: str) -> Progress:
    """Progress from a history.csv that may be absent, half-written or from an earlier attempt (never raises)."""
    try:
        with open(history, newline="", encoding="utf-8") as f:
            rows = [
                r
                for r in csv.DictReader(f)
                if (r.get("epoch") or "").strip().isdigit() and r.get("epoch_time_s") is not None  # whole rows only
            ]
    except (OSError, csv.Error, UnicodeDecodeError):
        rows = []
    if not rows:
        return Progress(None, max_epochs, None, None, None)
    last = rows[-1]
    epoch = int(last["epoch"])
    times = [t for t in (_float(r.get("epoch_time_s")) for r in rows) if t is not None]
    per = sum(times) / len(times) if times else None
    eta = max(0, (max_epochs or epoch) - epoch) * per if per is not None else None
    return Progress(epoch, max_epochs, _float(last.get(metric)), per, eta)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    s = round(seconds)
    if s < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


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

    def progress(self) -> dict[str, Progress]:
        """Every running trial's progress (trial id -> Progress), read when asked (one small file per trial)."""
        metric = self.objective.get("metric", "val/dice")
        out = {}
        for s in self.states:
            if s.state == RUNNING:
                max_epochs = (s.trial.train or {}).get("max_epochs")
                out[s.trial.trial_id] = read_progress(
                    self.layout.trial(s.trial.trial_id).history, int(max_epochs) if max_epochs else None, metric
                )
        return out

    def finished(self) -> bool:
        """Nothing left to run: no trial new, pending, running or requeued (what ``status --watch`` waits for)."""
        return not any(s.state in (NEW, PENDING, RUNNING, REQUEUED) for s in self.states)

    def failures(self, n_lines: int = 15) -> list[dict[str, Any]]:
        out = []
        for s in self.states:
            if s.state != FAILED:
                continue
            err = s.status.error or {}
            log = trial_logs(self.layout, s.trial.trial_id, s.status).main
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
        progress = self.progress()
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
                    "pruned_epoch": s.status.pruned_epoch,
                    "pack": s.status.pack,
                    "objective": (s.metrics or {}).get(self.objective.get("metric", "")),
                    "progress": progress[s.trial.trial_id].as_dict() if s.trial.trial_id in progress else None,
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
    pruned = sorted(int(s.status.pruned_epoch or 0) for s in st.states if s.state == PRUNED)
    if pruned:
        at = ", ".join(f"{n} at epoch {e}" for e, n in sorted(Counter(pruned).items()))
        lines.append(f"{len(pruned)} pruned (stopped early by the pruner, finished and not retried): {at}")
    versions = Counter(s.status.spec_version for s in st.states if s.status.spec_version)
    if len(versions) > 1:
        lines.append(
            "trials by spec version: "
            + ", ".join(f"{v} {n}" for v, n in sorted(versions.items()))
            + " (the spec changed between submissions; `status --json` lists each trial's version)"
        )
    lines += format_running(st)
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


def format_running(st: StudyStatus) -> list[str]:
    """One row per running trial: epoch / max epochs, last validation objective, time per epoch and ETA."""
    progress = st.progress()
    if not progress:
        return []
    metric = st.objective.get("metric", "val/dice")
    views = {s.trial.trial_id: s for s in st.states}
    order = sorted(progress, key=lambda t: (-(progress[t].epoch or 0), t))
    rows = []
    packs: dict[str, int] = {}  # job id -> running members, for trials that share a process
    for tid in progress:
        record = views[tid].status
        if len(record.pack or []) > 1 and record.job_id:
            packs[record.job_id] = packs.get(record.job_id, 0) + 1
    for tid in order[:MAX_RUNNING_SHOWN]:
        p, s = progress[tid], views[tid]
        epoch = "starting" if p.epoch is None else f"{p.epoch}/{p.max_epochs or '?'}"
        where = s.status.host or s.status.job_id or ""
        if s.status.job_id in packs:  # the job names the process; the host alone would not tell packs apart
            where = f"{s.status.job_id} (pack of {packs[s.status.job_id]})"
        rows.append(
            [
                tid,
                f"{s.trial.model}/{s.trial.dataset}/{s.trial.strategy}",
                s.trial.seed,
                epoch,
                "–" if p.objective is None else f"{p.objective:.4f}",
                duration(p.s_per_epoch),
                duration(p.eta_s),
                where,
            ]
        )
    out = [f"\n{len(progress)} running:"]
    out.append(render(["trial", "cell", "seed", "epoch", f"last {metric}", "per epoch", "ETA (max)", "where"], rows))
    if len(order) > MAX_RUNNING_SHOWN:
        out.append(f"... and {len(order) - MAX_RUNNING_SHOWN} more (`status --json` lists every trial's progress)")
    if packs:
        out.append(
            f"{sum(packs.values())} of them train in {len(packs)} pack(s), one process each: "
            "`vlsm-batch cancel --trial ID` stops one member alone, the rest of its pack goes on"
        )
    return out
