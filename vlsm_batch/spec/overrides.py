"""Checks that keep the configuration honest about what the code does: one GPU per trial at most, the Slurm array
throttle under ``resources.slurm``, and the top-level ``per_strategy`` overrides of train and resources.

``per_strategy.<name>.train`` takes the keys of ``train`` (not ``loggers``: one study writes one set of logs) and is
merged over the study's; ``per_strategy.<name>.resources`` takes the job-size keys. The schema has already checked
each value's type and range; here: the name is listed, the strategy takes the fixed parameters, they are not also
searched for it, and the merged loop settings are consistent.
"""

from __future__ import annotations

from typing import Any

from ..objectives import OBJECTIVES
from ..registry import did_you_mean
from ..strategies import STRATEGIES
from .build import merge_train
from .context import CheckContext
from .deprecations import note_at
from .paramcheck import (
    _check_depth,
    _check_heads,
    all_param_names,
    report_unlisted,
    strategy_space,
    value_problem,
)
from .report import KeyPath

MAX_GPUS = 1
SLURM_ONLY_KEYS = {"cpus_per_task", "mem_gb"}  # override keys a local run has no use for (it sizes no job)
GPU_REFUSAL = (
    "a trial trains on one device: multi-GPU (DDP) training is not supported, because prompt tuning's small "
    "parameter sets gain nothing from splitting one trial across GPUs. To use several GPUs, run one trial per GPU "
    "(resources.local.max_parallel on one machine, or a Slurm array with gpus_per_task: 1) or pack several trials "
    "into one process (resources.pack). Set gpus_per_task to 1 (or 0 for CPU)"
)


def _check_gpus(ctx: CheckContext, path: KeyPath, value: Any) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and value > MAX_GPUS and ctx.ok(path):
        ctx.report.error(path, f"gpus_per_task {value} is refused: {GPU_REFUSAL}")


def check_gpus(ctx: CheckContext) -> None:
    """``gpus_per_task`` is 0 or 1, study-wide and in every override (training would use one device anyway)."""
    _check_gpus(ctx, ("resources", "gpus_per_task"), ctx.section("resources").get("gpus_per_task"))
    for name, own in ctx.section("per_strategy").items():
        res = own.get("resources") if isinstance(own, dict) else None
        if isinstance(res, dict):
            _check_gpus(ctx, ("per_strategy", name, "resources", "gpus_per_task"), res.get("gpus_per_task"))


def check_throttle(ctx: CheckContext) -> None:
    """The throttle is a Slurm setting: ``resources.slurm.array_throttle``; the old top-level key still works."""
    old = ("resources", "array_parallelism")
    if "array_parallelism" not in ctx.section("resources") or not ctx.ok(old):
        return
    value = ctx.section("resources")["array_parallelism"]
    if "array_throttle" in ctx.section("resources", "slurm"):
        ctx.report.error(
            old,
            "resources.array_parallelism is the deprecated name of resources.slurm.array_throttle, which is also "
            "set; remove this one",
            key=True,
        )
        return
    note_at(
        ctx,
        old,
        f"deprecated key: write `resources: {{slurm: {{array_throttle: {value}}}}}` instead (same meaning: Slurm "
        "array tasks running at once per job array)",
        key=True,
    )


def check_per_strategy(ctx: CheckContext) -> None:
    """Each ``per_strategy`` entry names a listed strategy or baseline and overrides only what it can use."""
    listed = ctx.listed_names()
    for name, own in ctx.section("per_strategy").items():
        path = ("per_strategy", name)
        if report_unlisted(ctx, path, name, listed):
            continue
        if name in STRATEGIES and isinstance(own, dict) and isinstance(own.get("train"), dict):
            _check_train(ctx, name, own["train"])
        res = own.get("resources") if isinstance(own, dict) else None
        slurm_only = sorted(set(res) & SLURM_ONLY_KEYS) if isinstance(res, dict) else []
        if slurm_only and ctx.section("resources").get("executor") == "local":
            note_at(
                ctx,
                (*path, "resources"),
                f"{' and '.join(slurm_only)} size Slurm jobs only; the local executor uses a strategy's own "
                "timeout_min and gpus_per_task, not these",
                key=True,
            )


def _check_train(ctx: CheckContext, name: str, own: dict[str, Any]) -> None:
    info = STRATEGIES.get(name)
    base: KeyPath = ("per_strategy", name, "train")
    params = set(all_param_names())
    searched = strategy_space(ctx, info)
    for key, value in own.items():
        path = (*base, key)
        if not ctx.ok(path):
            continue
        if key == "loggers":
            ctx.report.error(path, "loggers are study-wide (one set of logs per study); set them under train", key=True)
        elif key in params:
            spec = info.param(key)
            if spec is None:
                takes = ", ".join(info.param_names) or "no parameters"
                ctx.report.error(path, f"{name} does not take {key!r} (it takes: {takes})", key=True)
                continue
            if key in searched:
                ctx.report.error(path, f"{key} is fixed here and searched for {name}; remove one", key=True)
            problem = value_problem(key, value, spec)
            if problem:
                ctx.report.error(path, problem)
            if key == "prompt_depth" and ctx.ok(("models",)):
                _check_depth(ctx, path, value, ctx.models())
            if key == "num_heads" and ctx.ok(("models",)):
                _check_heads(ctx, path, value, ctx.models())
    if not ctx.ok(("train",), base):
        return
    merged = merge_train(ctx.section("train"), own)
    high = merged.get("max_epochs", 100)
    if "min_epochs" in merged and merged["min_epochs"] > high:
        at = (*base, "min_epochs") if "min_epochs" in own else (*base, "max_epochs")
        ctx.report.error(
            at,
            f"{name}'s min_epochs {merged['min_epochs']} is above its max_epochs {high} (study values with this "
            "override on top); set both here",
        )
    monitor = own.get("early_stopping", {}).get("monitor") if isinstance(own.get("early_stopping"), dict) else None
    if monitor is not None and monitor not in OBJECTIVES:
        ctx.report.error(
            (*base, "early_stopping", "monitor"),
            f"unknown metric {monitor!r}; {did_you_mean(monitor, list(OBJECTIVES))}",
        )


def run_override_checks(ctx: CheckContext) -> None:
    check_gpus(ctx)
    check_throttle(ctx)
    check_per_strategy(ctx)
