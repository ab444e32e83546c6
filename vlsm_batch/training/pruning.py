"""Per-epoch objective reports for a pruner: a Lightning callback around a ``report(epoch, value) -> stop`` hook.

The hook comes from the caller (``vlsm_batch.search.optuna_study.Reporter`` for trials with an Optuna trial), so
training knows nothing about the trial store or Slurm. A pruned trial stops at once, after the checkpoints and
the history row of its last epoch are written; it is then evaluated like any other trial.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

ReportHook = Callable[[int, float], bool]


class PruningCallback(pl.Callback):
    """Report ``metric`` at every epoch end (1-based epoch); stop the fit when the hook says so."""

    def __init__(self, report: ReportHook, metric: str) -> None:
        self.report, self.metric = report, metric
        self.pruned_epoch: int | None = None

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.pruned_epoch is not None:
            return
        value = trainer.callback_metrics.get(self.metric)
        if value is None:
            return
        epoch = trainer.current_epoch + 1
        if self.report(epoch, float(value)):
            self.pruned_epoch = epoch
            trainer.fit_loop.min_epochs = 0  # min_epochs must not keep a pruned trial training
            trainer.fit_loop.epoch_loop.min_steps = 0
            trainer.should_stop = True


def report_hook(trial_root: Path, config: dict[str, Any]) -> ReportHook | None:
    """The per-epoch report of a trial whose config names an Optuna trial with a pruner (None otherwise)."""
    opt = config.get("optuna") or {}
    if (opt.get("pruner") or {}).get("type", "none") == "none" or config.get("optuna_trial") is None:
        return None
    from ..search.optuna_study import Reporter  # Optuna only for trials that use it

    return Reporter(trial_root)


def pruning_callbacks(trial_root: Path, config: dict[str, Any]) -> list[pl.Callback]:
    """The callback for a trial whose config names an Optuna trial with a pruner (none otherwise)."""
    hook = report_hook(trial_root, config)
    metric = (config.get("optuna") or {}).get("metric", "val/dice")
    return [PruningCallback(hook, metric)] if hook is not None else []
