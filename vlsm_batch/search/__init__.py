"""Adaptive search and pruning without a server: one Optuna study per cell and training seed, stored with Optuna's
journal file backend in ``<study>/search/<name>.journal``.

* :mod:`.optuna_study` (imports Optuna; used by the task and the training callback): open a cell's study, ask or
  re-attach a trial's Optuna trial, report epochs, tell the outcome.
* :mod:`vlsm_batch.jobs.journals` (beside the trial store it reads, so search never imports jobs): a trial the
  store or Slurm says is gone gets its Optuna trial marked FAIL, so the sampler stops counting it as running.

Nothing here is imported by validate/plan/submit/status unless the study has a journal (tpe, or a pruner).
"""

from __future__ import annotations

PRUNED_MARKER = "pruned.json"  # trials/<id>/pruned.json: {epoch, value}, written when the pruner stops a trial
TRIAL_ATTR = "vlsm_trial"  # the Optuna trial's user attribute naming its trial id

__all__ = ["PRUNED_MARKER", "TRIAL_ATTR"]
