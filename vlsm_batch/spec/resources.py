"""Cluster-facing checks: the Slurm profile a study names exists, and resources respect the limits it declares.

The schema caps every resource at a stated maximum (``timeout_min`` <= 43200 = 30 days, ...). A site profile may cap
lower (``limits:`` in its YAML). What only the cluster knows (the partition's MaxTime, its largest node's memory,
cores and GPUs) is checked at submit time: ``node_limit_problems`` words those refusals from facts Slurm reports.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from ..errors import SubmissionError
from .context import CheckContext
from .types import ResourcesSpec

_DEFAULTS = {f.name: f.default for f in fields(ResourcesSpec)}
_UNITS = {"timeout_min": "min", "mem_gb": "GB", "cpus_per_task": "cores", "gpus_per_task": "GPUs"}


def check_profile(ctx: CheckContext) -> None:
    """``resources.slurm.profile`` names a readable profile; resources fit its ``limits``."""
    where = ("resources", "slurm", "profile")
    name = ctx.section("resources", "slurm").get("profile")
    if not isinstance(name, str) or not ctx.ok(where):
        return
    from .site_profiles import find_profile, not_found_message, profile_limits

    if find_profile(name) is None:
        ctx.report.error(where, not_found_message(name))
        return
    try:
        limits, path = profile_limits(name)
    except SubmissionError as exc:
        ctx.report.error(where, f"Slurm profile {name!r} is unusable: {exc}")
        return
    resources = ctx.section("resources")
    if resources.get("executor") == "local":
        return  # the profile's limits are the cluster's; a local run does not ask Slurm
    _check_override_limits(ctx, limits, f"Slurm profile {name!r} ({path}")
    for key, limit in limits.items():
        if not ctx.ok(("resources", key)):
            continue
        value = resources.get(key, _DEFAULTS[key])
        if value <= limit:
            continue
        unit = _UNITS[key]
        source = f"Slurm profile {name!r} ({path}, limits.{key})"
        if key in resources:
            ctx.report.error(
                ("resources", key), f"{key} {value} {unit} exceeds the {limit} {unit} {source} allows; ask for less"
            )
        else:
            ctx.report.error(
                where,
                f"resources.{key} defaults to {value} {unit}, above the {limit} {unit} {source} allows; set "
                f"resources.{key}: {limit} or less",
            )


def _check_override_limits(ctx: CheckContext, limits: dict[str, int], source: str) -> None:
    """``per_strategy.<name>.resources`` must respect the profile's limits too."""
    for strategy, own in ctx.section("per_strategy").items():
        res = own.get("resources") if isinstance(own, dict) else None
        for key, value in (res or {}).items() if isinstance(res, dict) else ():
            where = ("per_strategy", strategy, "resources", key)
            limit = limits.get(key)
            if limit is not None and ctx.ok(where) and isinstance(value, int) and value > limit:
                unit = _UNITS[key]
                msg = f"{key} {value} {unit} exceeds the {limit} {unit} {source}, limits.{key}) allows; ask for less"
                ctx.report.error(where, msg)


@dataclass(frozen=True)
class NodeLimits:
    """What the largest node of the target partition offers (None: unknown), as ``sinfo``/``scontrol`` report it."""

    partition: str
    mem_mb: int | None = None  # RealMemory (or MaxMemPerNode when lower)
    cpus: int | None = None  # CPUs (or MaxCPUsPerNode when lower)
    gpus: int | None = None  # GPUs in its gres


def node_limit_problems(resources: ResourcesSpec, node: NodeLimits) -> list[str]:
    """Requests no node of the partition can meet (sbatch would refuse them after the study folder is written)."""
    problems = []
    if node.mem_mb is not None and resources.mem_gb * 1024 > node.mem_mb:
        problems.append(
            f"mem_gb {resources.mem_gb} exceeds the {node.mem_mb // 1024} GB of the largest node in partition "
            f"{node.partition}; set resources.mem_gb to at most {node.mem_mb // 1024}"
        )
    if node.cpus is not None and resources.cpus_per_task > node.cpus:
        problems.append(
            f"cpus_per_task {resources.cpus_per_task} exceeds the {node.cpus} CPUs of the largest node in partition "
            f"{node.partition}; set resources.cpus_per_task to at most {node.cpus}"
        )
    if node.gpus is not None and resources.gpus_per_task > node.gpus:
        fix = (
            "set resources.gpus_per_task: 0 or choose a GPU partition"
            if node.gpus == 0
            else (f"set resources.gpus_per_task to at most {node.gpus}")
        )
        problems.append(
            f"gpus_per_task {resources.gpus_per_task} exceeds the {node.gpus} GPUs of the largest node in partition "
            f"{node.partition}; {fix}"
        )
    return problems
