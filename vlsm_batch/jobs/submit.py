"""``submit``: preflight, write the study folder, launch what is not done yet."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import SubmissionError
from ..layout import StudyLayout
from ..spec.types import StudySpec
from ..trials import Expansion, Trial
from ..trials.expand import dataset_info, trial_prompt_key
from . import store
from .executor import choose_executor, visible_gpu_ids
from .local import LocalOutcome, run_local
from .packing import group_packs
from .store import CANCELLED, DONE, FAILED, NEW, PENDING, PRUNED, TrialRecord
from .study import SpecChange, describe_change, log_submission, spec_version, study_lock, study_records, write_study


@dataclass
class SubmitResult:
    layout: StudyLayout
    executor: str
    launched: list[str] = field(default_factory=list)
    skipped_done: int = 0
    skipped_failed: int = 0
    skipped_active: int = 0
    job_ids: list[str] = field(default_factory=list)  # per launched trial: its array task (a pack's is shared)
    packs: list[list[str]] = field(default_factory=list)  # the launch units: one process / array task each
    local: LocalOutcome | None = None
    change: SpecChange | None = None


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
    counts, prompts, every named file present (no decoding). Writes nothing (the synthetic dataset is generated
    later, once every check has passed: :func:`prepare_generated_data`)."""
    from ..datasets.verify import ERROR, verify_dataset

    problems = []
    for name in spec.datasets:
        info = dataset_info(spec, name)
        if info.generated:
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


def prepare_generated_data(spec: StudySpec) -> None:
    """Generate the synthetic dataset where the spec uses it and it is missing."""
    for name in spec.datasets:
        if dataset_info(spec, name).generated:
            from ..datasets.synthetic import ensure_synthetic

            ensure_synthetic(spec.data_root)
            return


def launchable(record: TrialRecord, retry_failed: bool) -> bool:
    """New, cancelled, and pending-but-not-queued trials; failed ones only with ``retry_failed``.

    Never a trial that is running, requeued or queued on Slurm, and never a done or pruned one.
    """
    if record.state in (NEW, CANCELLED):
        return True
    if record.state == PENDING:
        return not (record.executor == "slurm" and record.job_id)
    return record.state == FAILED and retry_failed


def select_to_launch(
    layout: StudyLayout, trials: list[Trial], retry_failed: bool, result: SubmitResult, persist: bool = True
) -> list[Trial]:
    """The trials this submission launches (see :func:`launchable`), counting the others in ``result``."""
    records = study_records(layout, trials, persist=persist)
    chosen = []
    for t in trials:
        record = records[t.trial_id]
        if launchable(record, retry_failed):
            chosen.append(t)
        elif record.state == FAILED:
            result.skipped_failed += 1
        elif record.state in (DONE, PRUNED):
            result.skipped_done += 1
        else:
            result.skipped_active += 1
    return chosen


def launch_units(trials: list[Trial], pack: int | str) -> list[list[Trial]]:
    """The trials to launch grouped into packs (one process / array task each); ``pack: 1`` keeps their order."""
    if pack == 1:
        return [[t] for t in trials]
    return group_packs(trials, pack)


def submit(
    spec: StudySpec,
    expansion: Expansion,
    retry_failed: bool = False,
    progress: bool = True,
    executor: str | None = None,
    task: Callable[..., Any] | None = None,
    train: str | None = None,
    on_change: Callable[[SpecChange], None] | None = None,
    pack_train: str | None = None,
) -> SubmitResult:
    """Check everything, then (under the study lock) write the study and launch what is not done yet.

    The trials to launch are grouped into packs (``resources.pack``; only unfinished trials, so a resubmission
    re-packs what is left): one local worker process or one Slurm array task per pack. Local execution blocks
    until the trials end; Slurm returns once the arrays are queued. ``task`` (Slurm: a TrialTask, or a PackTask
    for packs), ``train`` (local, ``module:function``, one trial) and ``pack_train`` (local, a pack training
    ``(roots, events)``) replace the real training in tests. ``on_change`` sees what the submission changes (new
    spec version, added trials) before anything is written.
    """
    refuse_unsupported(expansion)
    chosen_executor = choose_executor(executor or spec.resources.executor)
    if chosen_executor == "local" and train is None and pack_train is None:  # light install: refuse, write nothing
        from ..extras import require_extra

        require_extra("train", "a local training run")
    preflight_data(spec)
    trials = expansion.runnable
    layout = StudyLayout(spec.output_dir)
    facts: dict[str, Any] = {}
    if chosen_executor == "slurm":  # before anything is written: what Slurm would refuse, refuse now
        from .slurm import preflight_slurm

        probe = SubmitResult(layout, chosen_executor)
        chosen = select_to_launch(layout, trials, retry_failed, probe, persist=False) if layout.exists() else trials
        facts = preflight_slurm(spec, len(chosen), len(launch_units(chosen, spec.resources.pack)))
    change = describe_change(layout, spec, trials)  # to show; write_study compares again under the lock
    if on_change is not None:
        on_change(change)
    lock = study_lock(layout, what=f"vlsm-batch submit ({chosen_executor})")
    assert lock is not None
    try:
        from ..spec.places import output_dir_problem

        problem = output_dir_problem(spec.output_dir, spec.study)  # again, now that no other submit can change it
        if problem:
            raise SubmissionError(problem)
        prepare_generated_data(spec)
        write_study(spec, trials)
        result = SubmitResult(layout, chosen_executor, change=change)
        to_launch = select_to_launch(layout, trials, retry_failed, result)
        if not to_launch:
            return result
        packs = launch_units(to_launch, spec.resources.pack)
        ids = [t.trial_id for unit in packs for t in unit]
        result.launched = ids
        result.packs = [[t.trial_id for t in unit] for unit in packs]
        version = spec_version(spec)
        cap = None
        if chosen_executor == "slurm":
            from .slurm import max_attempts

            cap = max_attempts()
        for tid in ids:
            store.submit(layout.trial(tid), chosen_executor, version, retry_failed=retry_failed, max_attempts=cap)
        units = [[layout.trial(tid).root for tid in unit] for unit in result.packs]
        if chosen_executor == "slurm":
            from .slurm import submit_slurm

            try:
                result.job_ids = submit_slurm(spec, layout, units, task=task, max_array_size=facts["max_array_size"])
            finally:  # also after a partial failure: what did reach Slurm is on record
                jobs = {tid: store.read(layout.trial(tid)).job_id for tid in ids}
                done = [tid for tid in ids if jobs[tid]]
                if done:
                    log_submission(layout, spec, chosen_executor, done, [str(jobs[tid]) for tid in done])
            return result
        log_submission(layout, spec, chosen_executor, ids, [])
        lock.write_info(mode="local-run", trials=len(ids))  # a second submit now refuses at once
        own = [spec.resources_for(unit[0].strategy) for unit in packs]  # a pack holds one strategy's trials
        wants_gpu = [res.gpus_per_task > 0 for res in own]
        result.local = run_local(
            units,
            max_parallel=spec.resources.max_parallel,
            timeout_min=spec.resources.timeout_min,
            gpus=visible_gpu_ids()[: spec.resources.max_parallel] if any(wants_gpu) else [],
            progress=progress,
            train=train,
            pack_train=pack_train,
            timeouts=[res.timeout_min for res in own],
            wants_gpu=wants_gpu,
        )
        return result
    finally:
        lock.release()
