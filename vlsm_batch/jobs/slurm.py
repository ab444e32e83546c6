"""Launch trials as one submitit job array on Slurm (resources come only from the validated spec)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..layout import StudyLayout
from ..spec.types import StudySpec
from .state import PENDING, now_iso, write_status
from .task import run_trial_task


def slurm_parameters(spec: StudySpec) -> dict[str, Any]:
    """submitit parameters; ``--time`` is always set (submitit would default to 5 minutes)."""
    res, slurm = spec.resources, spec.resources.slurm
    params: dict[str, Any] = {
        "timeout_min": res.timeout_min,
        "gpus_per_node": res.gpus_per_task,
        "tasks_per_node": 1,
        "nodes": 1,
        "cpus_per_task": res.cpus_per_task,
        "mem_gb": res.mem_gb,
        "name": f"vlsm-{spec.study}",
        "slurm_array_parallelism": res.array_parallelism,
        "slurm_comment": f"vlsm-batch:{spec.study}",
    }
    for key in ("partition", "account", "qos", "constraint"):
        value = getattr(slurm, key)
        if value:
            params[f"slurm_{key}"] = value
    if slurm.extra:
        params["slurm_additional_parameters"] = dict(slurm.extra)
    return params


def submit_slurm(spec: StudySpec, layout: StudyLayout, trial_dirs: list[Path]) -> list[str]:
    """Submit one array for all trials; returns the job ids (``<array>_<index>``)."""
    import submitit

    executor = submitit.AutoExecutor(folder=layout.submitit / "%j", cluster="slurm")
    executor.update_parameters(**slurm_parameters(spec))
    with executor.batch():
        jobs = [executor.submit(run_trial_task, str(d), "slurm") for d in trial_dirs]
    for d, job in zip(trial_dirs, jobs):
        write_status(layout.trial(d.name), PENDING, executor="slurm", job_id=job.job_id, submitted_at=now_iso())
    return [job.job_id for job in jobs]
