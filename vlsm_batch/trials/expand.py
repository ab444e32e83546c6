"""Spec → cells (model × dataset × strategy) → trials, deduplicated by content id, in a stable order."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Any

from ..datasets import DatasetInfo, custom_dataset_info, get_dataset
from ..models import get_model_info
from ..spec.distributions import strategy_dims
from ..spec.types import Distribution, StudySpec
from ..strategies import get_strategy, refusal
from .sampling import sample
from .trial import Trial, canonical_json, round_value

SEARCH_DIR = "search"  # inside the study folder: one Optuna journal per cell and training seed


@dataclass
class Cell:
    """One (model, dataset, strategy) combination and its trials."""

    model: str
    dataset: str
    strategy: str
    trials: list[Trial] = field(default_factory=list)
    skipped: str | None = None  # the model cannot run this strategy at all (plan counts it, nothing runs)
    unsupported: str | None = None  # valid, but this build cannot train it yet (submit refuses)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.model, self.dataset, self.strategy)


@dataclass
class Expansion:
    cells: list[Cell]

    @property
    def trials(self) -> list[Trial]:
        return [t for c in self.cells for t in c.trials]

    @property
    def runnable(self) -> list[Trial]:
        return [t for c in self.cells if not c.unsupported for t in c.trials]


def dataset_info(spec: StudySpec, name: str) -> DatasetInfo:
    """The catalog entry, or the definition of a dataset declared in the spec."""
    custom = spec.custom_datasets.get(name)
    if custom is None:
        return get_dataset(name)
    return custom_dataset_info({**dataclasses.asdict(custom), "prompt_key": custom.prompt_key or spec.prompt_key})


def trial_prompt_key(spec: StudySpec, name: str) -> str | None:
    """The annotation prompt key a trial on this dataset reads (None when prompts are not from annotations)."""
    info = dataset_info(spec, name)
    if info.prompt_source != "annotation":
        return None
    return info.prompt_key if name in spec.custom_datasets else spec.prompt_key


def data_identity(spec: StudySpec, name: str) -> dict[str, Any]:
    """What a trial's result depends on beyond the dataset's name (see ``Trial.data``)."""
    info = dataset_info(spec, name)
    prompt_key = info.prompt_key if name in spec.custom_datasets else spec.prompt_key
    annotated = info.prompt_source == "annotation"
    if name in spec.custom_datasets:
        custom = {"layout": info.layout, "domain": info.domain, "prompt_source": info.prompt_source}
        custom.update({"prompt_key": prompt_key} if annotated else {})
        custom.update({"prompt": info.fixed_prompt} if info.fixed_prompt else {})
        return {"custom": custom}
    return {"prompt_key": prompt_key} if annotated and prompt_key != info.prompt_key else {}


def unsupported_reason(model: str, dataset: str | DatasetInfo, strategy: str) -> str | None:
    """Why this build cannot train the cell yet, or None."""
    d = get_dataset(dataset) if isinstance(dataset, str) else dataset
    m, s = get_model_info(model), get_strategy(strategy)
    if not m.implemented:
        return f"model {model} is not implemented in this build"
    if not d.implemented:
        return f"dataset {dataset} ({d.layout} layout) has no loader in this build"
    if m.family not in s.implemented_for:
        return f"strategy {strategy} is not implemented for {m.family} in this build"
    return None


def cell_space(spec: StudySpec, strategy: str) -> tuple[dict[str, Distribution], dict[str, Any]]:
    """The search space and the fixed values a strategy gets: parameters it does not take are dropped.

    Baselines ignore the shared space (the benchmark runs them once with their defaults); a
    ``per_strategy`` entry can still give them one. Fixed values come from the strategy's effective train
    (``spec.train_for``: the top-level ``per_strategy`` override over the study's ``train``).
    """
    info = get_strategy(strategy)
    takes = set(info.param_names)
    fixed = {p.name: p.default for p in info.params}
    fixed.update({k: v for k, v in spec.train_for(strategy).fixed_params.items() if k in takes})
    space = strategy_dims(info, spec.search.space, spec.search.per_strategy.get(strategy, {}))
    for k in space:
        fixed.pop(k, None)
    return space, fixed


def expand(spec: StudySpec) -> Expansion:
    """All cells and trials of a study. Deterministic; first occurrence wins on duplicate ids."""
    seen: set[str] = set()
    cells: list[Cell] = []
    objective = {"metric": spec.search.objective_metric, "mode": spec.search.objective_mode}
    for model in spec.models:
        for dataset in spec.datasets:
            for strategy in (*spec.strategies, *spec.baselines):
                info = get_strategy(strategy)
                cell = Cell(model, dataset, strategy)
                cells.append(cell)
                reason = refusal(info, get_model_info(model))
                if reason:
                    cell.skipped = reason
                    continue
                cell.unsupported = unsupported_reason(model, dataset_info(spec, dataset), strategy)
                data = data_identity(spec, dataset)
                space, fixed = cell_space(spec, strategy)
                # a baseline that reproduces a run keeps that run's epoch budget (decoder_finetune: at most 40)
                # effective loop settings (per_strategy override included): part of the trial id
                train = info.loop_settings(spec.train_for(strategy).loop_settings()) if info.trains else {}
                seeds = spec.seeds if info.trains else spec.seeds[:1]  # zero-shot has nothing to replicate
                n = spec.search.trials if space else 1
                base = Trial(model, dataset, strategy, 0, {}, train, objective, 0, data)
                if spec.search.adaptive and space:
                    fixed_params = {k: round_value(v) for k, v in fixed.items()}
                    for seed in seeds:
                        settings = optuna_settings(spec, dataclasses.replace(base, seed=seed), space, fixed_params)
                        for index in range(n or 0):
                            search = {"method": "tpe", "sequence": index, "settings": settings["key"]}
                            trial = Trial(
                                model,
                                dataset,
                                strategy,
                                seed,
                                fixed_params,
                                train,
                                objective,
                                index,
                                data,
                                search,
                                settings["optuna"],
                            ).with_id()
                            if trial.trial_id not in seen:
                                seen.add(trial.trial_id)
                                cell.trials.append(trial)
                    continue
                pruned = spec.search.pruner.active and info.trains
                for index, sampled in enumerate(sample(spec.search.method, space, n, spec.search.seed)):
                    params = {k: round_value(v) for k, v in {**fixed, **sampled}.items()}
                    for seed in seeds:
                        trial = Trial(model, dataset, strategy, seed, params, train, objective, index, data).with_id()
                        if trial.trial_id in seen:
                            continue
                        if pruned:  # the pruner compares trials within one Optuna study: register them there
                            opt = optuna_settings(spec, dataclasses.replace(base, seed=seed), space, {})["optuna"]
                            trial = dataclasses.replace(trial, optuna=opt)
                        seen.add(trial.trial_id)
                        cell.trials.append(trial)
    return Expansion(cells)


def distribution_json(dist: Distribution) -> dict[str, Any]:
    return {"kind": dist.kind, "low": dist.low, "high": dist.high, "choices": list(dist.choices)}


def optuna_settings(
    spec: StudySpec, base: Trial, space: dict[str, Distribution], fixed: dict[str, Any]
) -> dict[str, Any]:
    """The Optuna study of one cell and training seed: its name (a hash of everything that defines the search,
    never of ``trials``, so raising trials continues it), journal, sampler and pruner."""
    s = spec.search
    sampler: dict[str, Any] = (
        {"type": "tpe", "n_startup_trials": s.n_startup_trials, "seed": s.seed, "multivariate": True}
        if s.adaptive
        else {"type": "fixed", "method": s.method}
    )
    identity = {**base.identity(), "fixed": fixed, "sampler": sampler, "space": sorted(space)}
    identity["space_def"] = {k: distribution_json(v) for k, v in sorted(space.items())}
    key = hashlib.sha256(canonical_json(identity).encode()).hexdigest()[:10]
    name = f"{base.model}.{base.dataset}.{base.strategy}.seed{base.seed}.{key}"
    optuna = {
        "study": name,
        "journal": f"{SEARCH_DIR}/{name}.journal",
        "direction": "maximize" if s.objective_mode == "max" else "minimize",
        "metric": s.objective_metric,
        "space": {k: distribution_json(v) for k, v in sorted(space.items())},
        "sampler": sampler,
        "pruner": s.pruner.to_json(),
    }
    return {"key": key, "optuna": optuna}
