"""Typed, validated study spec. Built only by ``spec.load.load_spec``; everything downstream reads these."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Distribution:
    """A search dimension. ``kind``: log_uniform | uniform | int (inclusive bounds) | choice."""

    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()


@dataclass(frozen=True)
class PrunerSpec:
    """``search.pruner``: which trials stop early (epochs are Optuna's steps). ``kind`` none: off."""

    kind: str = "none"  # asha | median | none
    min_resource: int = 1  # asha
    reduction_factor: int = 3  # asha
    grace: int = 0  # asha and median: epochs before any pruning decision
    warmup: int = 0  # median: Optuna's n_warmup_steps
    n_startup_trials: int = 5  # median

    @property
    def active(self) -> bool:
        return self.kind != "none"

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "min_resource": self.min_resource,
            "reduction_factor": self.reduction_factor,
            "grace": self.grace,
            "warmup": self.warmup,
            "n_startup_trials": self.n_startup_trials,
        }


@dataclass(frozen=True)
class SearchSpec:
    method: str  # grid | random | sobol | tpe
    trials: int | None  # per (model, dataset, strategy) cell; None for grid
    seed: int  # sampling seed (study seed)
    objective_metric: str  # e.g. "val/dice"
    objective_mode: str  # "max" | "min"
    space: dict[str, Distribution] = field(default_factory=dict)
    per_strategy: dict[str, dict[str, Distribution]] = field(default_factory=dict)
    n_startup_trials: int = 10  # tpe: random trials before TPE models the results
    pruner: PrunerSpec = field(default_factory=PrunerSpec)

    @property
    def adaptive(self) -> bool:
        """Values chosen when the task starts (tpe), not at expand time."""
        return self.method == "tpe"


@dataclass(frozen=True)
class TrainSpec:
    """Loop settings shared by every trial, plus fixed strategy parameters (applied where a strategy takes them)."""

    max_epochs: int = 100
    min_epochs: int = 10
    batch_size: int = 32
    precision: str = "32"  # "32" | "bf16-mixed" | "16-mixed" (16-mixed falls back to 32 without CUDA)
    early_stopping_monitor: str = "val/loss"
    early_stopping_patience: int = 12
    early_stopping_min_delta: float = 1e-4
    num_workers: int = 0
    # Lightning loggers: one name or a tuple (csv, tensorboard, wandb, mlflow); not part of a trial's identity
    loggers: str | tuple[str, ...] = "csv"
    fixed_params: dict[str, Any] = field(default_factory=dict)  # e.g. num_context, context_init, lr

    def logger_names(self) -> list[str]:
        """``loggers`` as a list (the spec accepts one name or a list)."""
        return [self.loggers] if isinstance(self.loggers, str) else list(self.loggers)

    def loop_settings(self) -> dict[str, Any]:
        """The part of a trial's config that is not a strategy parameter (hashed into the trial id)."""
        return {
            "max_epochs": self.max_epochs,
            "min_epochs": self.min_epochs,
            "batch_size": self.batch_size,
            "precision": self.precision,
            "early_stopping": {
                "monitor": self.early_stopping_monitor,
                "patience": self.early_stopping_patience,
                "min_delta": self.early_stopping_min_delta,
            },
        }


@dataclass(frozen=True)
class SlurmSpec:
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    extra: dict[str, str] = field(default_factory=dict)  # allow-listed sbatch options only
    profile: str | None = None  # site profile name (vlsm_batch/profiles/<name>.yaml), resolved at submit time
    array_throttle: int = 64  # array tasks running at once per job array (sbatch --array=...%N)


@dataclass(frozen=True)
class ResourcesSpec:
    executor: str = "auto"  # auto | slurm | local
    gpus_per_task: int = 1  # 0 (CPU) or 1: validate refuses more (one trial never spans GPUs)
    cpus_per_task: int = 8
    mem_gb: int = 32
    timeout_min: int = 240
    # the effective Slurm array throttle: resources.slurm.array_throttle, or this deprecated key (equal to
    # slurm.array_throttle after build; kept so code and tests that set it directly keep working)
    array_parallelism: int = 64
    max_parallel: int = 1  # local executor: trials running at once
    pack: int | str = 1  # trials of one cell per process and device: N, or "auto" (from free memory at run time)
    slurm: SlurmSpec = field(default_factory=SlurmSpec)


@dataclass(frozen=True)
class StrategyOverride:
    """``per_strategy.<name>``: the EFFECTIVE train and resources of one strategy or baseline (study values with
    the override on top), and which keys the override wrote (for ``plan``)."""

    train: TrainSpec
    resources: ResourcesSpec
    train_keys: tuple[str, ...] = ()
    resource_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class CustomDataset:
    """A dataset declared in the spec (``custom_datasets``) instead of the catalog."""

    name: str
    path: Path  # absolute
    layout: str  # medvlsm | camus | chexlocalize | image_dir
    domain: str  # medical | natural
    modality: str = "unknown"
    prompt_key: str | None = None  # None: the study's prompt_key
    prompt: str | None = None  # a fixed prompt for every sample


@dataclass(frozen=True)
class StudySpec:
    study: str
    path: Path  # the spec file
    text: str  # its exact text (copied into the study folder)
    output_dir: Path  # absolute
    data_root: Path  # absolute
    seeds: tuple[int, ...]
    models: tuple[str, ...]
    datasets: tuple[str, ...]
    strategies: tuple[str, ...]
    baselines: tuple[str, ...]
    search: SearchSpec
    train: TrainSpec
    resources: ResourcesSpec
    weights: dict[str, str] = field(default_factory=dict)  # model name -> HF id or local path
    notes: tuple[str, ...] = ()  # non-fatal findings, e.g. "vpt skipped for cris: <why>"
    prompt_key: str = "p1"  # annotation prompt key of every dataset with annotation prompts
    custom_datasets: dict[str, CustomDataset] = field(default_factory=dict)
    per_strategy: dict[str, StrategyOverride] = field(default_factory=dict)  # top-level ``per_strategy:``

    def train_for(self, strategy: str) -> TrainSpec:
        """The train settings a strategy's trials use (its ``per_strategy`` override, else the study's)."""
        own = self.per_strategy.get(strategy)
        return self.train if own is None else own.train

    def resources_for(self, strategy: str) -> ResourcesSpec:
        """The resources a strategy's jobs ask for (its ``per_strategy`` override, else the study's)."""
        own = self.per_strategy.get(strategy)
        return self.resources if own is None else own.resources
