"""``submit``: preflight, write the study folder, launch what is not done yet."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SubmissionError
from ..layout import StudyLayout
from ..spec.types import StudySpec
from ..trials import Expansion, Trial
from ..trials.expand import dataset_info, trial_prompt_key
from .executor import choose_executor, visible_gpu_ids
from .local import LocalOutcome, run_local
from .state import CANCELLED, FAILED, NEW, PENDING, read_status
from .study import log_submission, mark_pending, write_study


@dataclass
class SubmitResult:
    layout: StudyLayout
    executor: str
    launched: list[str] = field(default_factory=list)
    skipped_done: int = 0
    skipped_failed: int = 0
    skipped_active: int = 0
    job_ids: list[str] = field(default_factory=list)
    local: LocalOutcome | None = None


def refuse_unsupported(expansion: Expansion) -> None:
    """Refuse the whole submission, before anything is written, if any cell cannot be trained by this build."""
    bad = [c for c in expansion.cells if c.unsupported and not c.skipped]
    if not bad:
        return
    by_reason: dict[str, list[str]] = {}
    for c in bad:
        by_reason.setdefault(c.unsupported or "", []).append(f"{c.model}/{c.dataset}/{c.strategy}")
    lines = [f"  {reason}: {len(cells)} cell(s), e.g. {cells[0]}" for reason, cells in sorted(by_reason.items())]
    raise SubmissionError(
        f"this build cannot train {len(bad)} of the study's cells, so nothing was submitted:\n"
        + "\n".join(lines)
        + "\nRemove them from the spec (`vlsm-batch plan SPEC` marks every such cell)."
    )


def preflight_data(spec: StudySpec) -> None:
    """The cheap part of ``vlsm-batch data verify`` for every dataset of the spec: folder, annotations, per-split
    counts, prompts, every named file present (no decoding). The synthetic dataset is generated here if missing."""
    from ..datasets.verify import ERROR, verify_dataset

    problems = []
    for name in spec.datasets:
        info = dataset_info(spec, name)
        if info.generated:
            from ..datasets.synthetic import ensure_synthetic

            ensure_synthetic(spec.data_root)
            continue
        prompt_key = trial_prompt_key(spec, name)
        report = verify_dataset(info, spec.data_root / info.folder, quick=True, prompt_key=prompt_key)
        problems += [f"  {name}: {f.message}" for f in report.findings if f.severity == ERROR]
    if problems:
        raise SubmissionError(
            "datasets not ready, nothing was submitted:\n"
            + "\n".join(problems)
            + f"\nData root: {spec.data_root} (data_root in the spec, or the VLSM_DATA environment variable). "
            "`vlsm-batch data verify --spec SPEC` checks the spec's datasets in full."
        )


def select_to_launch(layout: StudyLayout, trials: list[Trial], retry_failed: bool, result: SubmitResult) -> list[Trial]:
    """New, never-started and cancelled trials; failed ones only with --retry-failed."""
    from .reconcile import reconcile

    chosen = []
    statuses = reconcile(layout, {t.trial_id: read_status(layout.trial(t.trial_id)) for t in trials})
    for t in trials:
        status = statuses[t.trial_id]
        state = status.get("state")
        queued_on_slurm = state == PENDING and status.get("executor") == "slurm" and status.get("job_id")
        if state in (NEW, CANCELLED) or (state == PENDING and not queued_on_slurm):
            chosen.append(t)
        elif state == FAILED:
            if retry_failed:
                chosen.append(t)
            else:
                result.skipped_failed += 1
        elif state == "done":
            result.skipped_done += 1
        else:
            result.skipped_active += 1
    return chosen


def submit(
    spec: StudySpec,
    expansion: Expansion,
    retry_failed: bool = False,
    progress: bool = True,
    executor: str | None = None,
    task: Callable[..., Any] | None = None,
) -> SubmitResult:
    """Validate-expand-write-launch. Local execution blocks until the trials end; Slurm returns at once."""
    refuse_unsupported(expansion)
    chosen_executor = choose_executor(executor or spec.resources.executor)
    preflight_data(spec)
    trials = expansion.runnable
    facts: dict[str, Any] = {}
    if chosen_executor == "slurm":  # before anything is written: what Slurm would refuse, refuse now
        from .slurm import preflight_slurm

        probe = SubmitResult(StudyLayout(spec.output_dir), chosen_executor)
        facts = preflight_slurm(spec, len(select_to_launch(probe.layout, trials, retry_failed, probe)))
    layout = write_study(spec, trials)
    result = SubmitResult(layout, chosen_executor)
    to_launch = select_to_launch(layout, trials, retry_failed, result)
    if not to_launch:
        return result
    ids = [t.trial_id for t in to_launch]
    dirs = [layout.trial(tid).root for tid in ids]
    result.launched = ids
    if chosen_executor != "slurm":  # Slurm trials get their pending marker with the job id, chunk by chunk
        mark_pending(layout, ids, chosen_executor)
    if chosen_executor == "slurm":
        from .slurm import submit_slurm

        try:
            result.job_ids = submit_slurm(spec, layout, dirs, task=task, max_array_size=facts["max_array_size"])
        finally:  # also after a partial failure: what did reach Slurm is on record
            jobs = {tid: read_status(layout.trial(tid)).get("job_id") for tid in ids}
            done = [tid for tid in ids if jobs[tid]]
            if done:
                log_submission(layout, spec, chosen_executor, done, [str(jobs[tid]) for tid in done])
        return result
    log_submission(layout, spec, chosen_executor, ids, [])
    result.local = run_local(
        [Path(d) for d in dirs],
        max_parallel=spec.resources.max_parallel,
        timeout_min=spec.resources.timeout_min,
        gpus=visible_gpu_ids()[: spec.resources.max_parallel * max(spec.resources.gpus_per_task, 0)],
        progress=progress,
        **({"task": task} if task is not None else {}),
    )
    return result
