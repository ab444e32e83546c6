"""Resource groups: trials whose strategy asks for the same resources (``per_strategy.<name>.resources`` over the
study's) share a Slurm job array; a strategy with other resources gets arrays of its own.

Packs never mix strategies (``packing.pack_key`` holds the strategy), so a launch unit always has one resource set.
Light (no torch): ``plan`` and ``submit`` use it on the login node.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..spec.types import ResourcesSpec, StudySpec

_SHOWN = ("gpus_per_task", "cpus_per_task", "mem_gb", "timeout_min")


def resources_key(res: ResourcesSpec) -> tuple[Any, ...]:
    """What decides an array's sbatch options (two strategies with equal keys share arrays)."""
    slurm = json.dumps(asdict(res.slurm), sort_keys=True)
    return (res.gpus_per_task, res.cpus_per_task, res.mem_gb, res.timeout_min, slurm)


def group_by_resources(spec: StudySpec, strategies: Sequence[str]) -> list[tuple[ResourcesSpec, list[int]]]:
    """Positions of ``strategies`` (one per launch unit) grouped by their resources, groups in first-seen order."""
    groups: dict[tuple[Any, ...], tuple[ResourcesSpec, list[int]]] = {}
    for i, strategy in enumerate(strategies):
        res = spec.resources_for(strategy)
        groups.setdefault(resources_key(res), (res, []))[1].append(i)
    return list(groups.values())


def unit_strategy(unit: Sequence[Path]) -> str:
    """The strategy of a launch unit, from its first trial's ``config.json`` (members share the strategy)."""
    return str(json.loads((Path(unit[0]) / "config.json").read_text(encoding="utf-8"))["strategy"])


def describe_resources(res: ResourcesSpec) -> str:
    return (
        f"{res.gpus_per_task} GPU, {res.cpus_per_task} CPUs, {res.mem_gb} GB, {res.timeout_min} min"
        if res.gpus_per_task
        else f"CPU only, {res.cpus_per_task} CPUs, {res.mem_gb} GB, {res.timeout_min} min"
    )


def override_lines(spec: StudySpec, strategies: Iterable[str] | None = None) -> list[str]:
    """What ``plan`` says about ``per_strategy`` overrides: each strategy's effective train and resources."""
    lines = []
    for name, own in spec.per_strategy.items():
        if strategies is not None and name not in set(strategies):
            continue
        parts = []
        if own.train_keys:
            parts.append("train " + ", ".join(f"{k}={_train_value(own.train, k)}" for k in own.train_keys))
        if own.resource_keys:
            parts.append(f"resources {describe_resources(own.resources)} (its own job arrays)")
        if parts:
            lines.append(f"per_strategy {name}: " + "; ".join(parts))
    return lines


def _train_value(train: Any, key: str) -> Any:
    """An effective train value by its spec key (a loop setting, ``early_stopping`` or a fixed parameter)."""
    loop = train.loop_settings()
    if key in loop:
        return loop[key]
    if key in train.fixed_params:
        return train.fixed_params[key]
    return getattr(train, key, None)


def plan_tasks_by_strategy(plan: Any) -> dict[str, int]:
    """Array tasks per strategy of a ``jobs.plan.Plan`` (its pack table), for ``plan --sbatch``'s resource groups."""
    out: dict[str, int] = {}
    for row in plan.packs.rows if plan.packs is not None else ():
        out[row.strategy] = out.get(row.strategy, 0) + row.packs
    return out
