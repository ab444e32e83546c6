"""Checked spec data -> the typed ``StudySpec``. Runs only on data with no errors, so it does no validation.

Defaults come from the dataclasses in ``types.py`` (a test keeps them equal to the schema's ``default``s).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..objectives import OBJECTIVES
from .distributions import fixed_value, to_distribution
from .paramcheck import all_param_names, param_kind
from .types import (
    CustomDataset,
    PrunerSpec,
    ResourcesSpec,
    SearchSpec,
    SlurmSpec,
    StrategyOverride,
    StudySpec,
    TrainSpec,
)

_LOOP_KEYS = ("max_epochs", "min_epochs", "batch_size", "precision", "num_workers")
_STOPPING_KEYS = {
    "monitor": "early_stopping_monitor",
    "patience": "early_stopping_patience",
    "min_delta": "early_stopping_min_delta",
}
_RESOURCE_KEYS = (
    "executor",
    "gpus_per_task",
    "cpus_per_task",
    "mem_gb",
    "timeout_min",
    "pack",
)
_SLURM_KEYS = ("partition", "account", "qos", "constraint", "profile")
OVERRIDE_RESOURCE_KEYS = ("gpus_per_task", "cpus_per_task", "mem_gb", "timeout_min")  # per_strategy.<s>.resources


def _space(space: dict[str, Any]) -> dict[str, Any]:
    return {name: to_distribution(dist, param_kind(name)) for name, dist in space.items()}


def build_search(search: dict[str, Any]) -> SearchSpec:
    objective = search.get("objective", {})
    metric = objective.get("metric", "val/dice")
    return SearchSpec(
        method=search.get("method", "grid"),
        trials=search.get("trials"),
        seed=search.get("seed", 0),
        objective_metric=metric,
        objective_mode=objective.get("mode", OBJECTIVES[metric]),
        space=_space(search.get("space", {})),
        per_strategy={s: _space(space) for s, space in search.get("per_strategy", {}).items()},
        n_startup_trials=search.get("n_startup_trials", SearchSpec.n_startup_trials),
        pruner=build_pruner(search.get("pruner", {})),
    )


def build_pruner(pruner: dict[str, Any]) -> PrunerSpec:
    keys = ("min_resource", "reduction_factor", "grace", "warmup", "n_startup_trials")
    return PrunerSpec(kind=pruner.get("type", "none"), **{k: pruner[k] for k in keys if k in pruner})


def build_train(train: dict[str, Any]) -> TrainSpec:
    """``min_epochs`` defaults to min(10, max_epochs), so ``max_epochs: 5`` alone is valid."""
    kw: dict[str, Any] = {k: train[k] for k in _LOOP_KEYS if k in train}
    if "min_epochs" not in kw and "max_epochs" in kw:
        kw["min_epochs"] = min(TrainSpec.min_epochs, kw["max_epochs"])
    stopping = train.get("early_stopping", {})
    kw.update({field: stopping[k] for k, field in _STOPPING_KEYS.items() if k in stopping})
    if "early_stopping_min_delta" in kw:
        kw["early_stopping_min_delta"] = float(kw["early_stopping_min_delta"])
    if "loggers" in train:
        kw["loggers"] = train["loggers"] if isinstance(train["loggers"], str) else tuple(train["loggers"])
    params = set(all_param_names())
    kw["fixed_params"] = {n: fixed_value(v, param_kind(n)) for n, v in train.items() if n in params}
    return TrainSpec(**kw)


def build_resources(resources: dict[str, Any]) -> ResourcesSpec:
    slurm = resources.get("slurm", {})
    kw: dict[str, Any] = {k: resources[k] for k in _RESOURCE_KEYS if k in resources}
    if "max_parallel" in resources.get("local", {}):
        kw["max_parallel"] = resources["local"]["max_parallel"]
    # the throttle's place is resources.slurm.array_throttle; resources.array_parallelism is its deprecated name
    throttle = slurm.get("array_throttle", resources.get("array_parallelism", SlurmSpec.array_throttle))
    kw["array_parallelism"] = throttle
    kw["slurm"] = SlurmSpec(
        **{k: slurm[k] for k in _SLURM_KEYS if k in slurm}, array_throttle=throttle, extra=dict(slurm.get("extra", {}))
    )
    return ResourcesSpec(**kw)


def merge_train(train: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """The study's ``train`` with a strategy's override on top (``early_stopping`` merged key by key)."""
    merged = {**train, **own}
    if "early_stopping" in own:
        merged["early_stopping"] = {**train.get("early_stopping", {}), **own["early_stopping"]}
    return merged


def build_overrides(data: dict[str, Any]) -> dict[str, StrategyOverride]:
    """Top-level ``per_strategy``: each strategy's effective train and resources."""
    train, resources = data.get("train", {}), data.get("resources", {})
    out = {}
    for name, own in data.get("per_strategy", {}).items():
        own_train, own_res = own.get("train", {}), own.get("resources", {})
        out[name] = StrategyOverride(
            train=build_train(merge_train(train, own_train)),
            resources=build_resources({**resources, **own_res}),
            train_keys=tuple(own_train),
            resource_keys=tuple(own_res),
        )
    return out


def build_spec(
    data: dict[str, Any],
    *,
    path: Path,
    text: str,
    output_dir: Path,
    data_root: Path,
    weights: dict[str, str],
    notes: list[str],
    custom_paths: dict[str, Path] | None = None,
) -> StudySpec:
    custom = {
        name: CustomDataset(
            name=name,
            path=(custom_paths or {})[name],
            layout=d["layout"],
            domain=d["domain"],
            modality=d.get("modality", "unknown"),
            prompt_key=d.get("prompt_key"),
            prompt=d.get("prompt"),
        )
        for name, d in data.get("custom_datasets", {}).items()
    }
    return StudySpec(
        study=data["study"],
        path=path,
        text=text,
        output_dir=output_dir,
        data_root=data_root,
        seeds=tuple(data.get("seeds", [0])),
        models=tuple(data["models"]),
        datasets=tuple(data["datasets"]),
        strategies=tuple(data.get("strategies", [])),
        baselines=tuple(data.get("baselines", [])),
        search=build_search(data.get("search", {})),
        train=build_train(data.get("train", {})),
        resources=build_resources(data.get("resources", {})),
        weights=weights,
        notes=tuple(notes),
        prompt_key=data.get("prompt_key", "p1"),
        custom_datasets=custom,
        per_strategy=build_overrides(data),
    )
