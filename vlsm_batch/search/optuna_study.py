"""A cell's Optuna study in its journal file: ask (or re-attach), report epochs, tell.

Why a journal file: it needs no server, and Optuna serialises appends with a lock file made by ``link``/``symlink``
(``JournalFileSymlinkLock``, safe on NFSv2 and later, which covers cluster home and scratch file systems; the
``O_EXCL`` lock needs NFSv3). A lock left by a killed process is broken after its grace period (30 s).

The journal has no heartbeat: a killed task leaves its Optuna trial RUNNING. :mod:`.reconcile` marks those FAIL
from the trial store's verdict. A requeued attempt re-attaches to the Optuna trial whose number its config.json
records (``optuna_trial``) instead of asking a new one.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock
from optuna.trial import TrialState

from ..layout import atomic_write_json, read_json
from ..trials.trial import round_value
from . import PRUNED_MARKER, TRIAL_ATTR

optuna.logging.set_verbosity(optuna.logging.WARNING)


def study_root_of(trial_root: Path) -> Path:
    """trials/<id> -> the study folder."""
    return Path(trial_root).absolute().parent.parent


def journal_file(study_root: Path, opt: dict[str, Any]) -> Path:
    path = (Path(study_root) / opt["journal"]).resolve()
    if Path(study_root).resolve() not in path.parents:  # the manifest names it; never write outside the study
        raise ValueError(f"journal path {opt['journal']!r} is outside the study folder")
    return path


def storage(path: Path) -> JournalStorage:
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileSymlinkLock(str(path))))


def make_pruner(pruner: dict[str, Any] | None) -> optuna.pruners.BasePruner:
    """ASHA is Optuna's SuccessiveHalvingPruner (asynchronous); median warms up ``warmup`` epochs."""
    pruner = pruner or {}
    kind = pruner.get("type", "none")
    if kind == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=int(pruner.get("min_resource", 1)), reduction_factor=int(pruner.get("reduction_factor", 3))
        )
    if kind == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=int(pruner.get("n_startup_trials", 5)), n_warmup_steps=int(pruner.get("warmup", 0))
        )
    if kind == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {kind!r}: use asha, median or none")


def to_distribution(dist: dict[str, Any]) -> BaseDistribution:
    kind = dist["kind"]
    if kind == "log_uniform":
        return FloatDistribution(float(dist["low"]), float(dist["high"]), log=True)
    if kind == "uniform":
        return FloatDistribution(float(dist["low"]), float(dist["high"]))
    if kind == "int":
        return IntDistribution(int(dist["low"]), int(dist["high"]))
    if kind == "choice":
        return CategoricalDistribution(list(dist["choices"]))
    raise ValueError(f"unknown distribution kind {kind!r}")


def derived_seed(*parts: Any) -> int:
    """A sampler seed per trial: concurrent tasks with one study seed must not draw the same startup point."""
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:4], "big")


def make_sampler(opt: dict[str, Any], trial_id: str, attempt: int, fixed: dict[str, Any] | None) -> Any:
    """TPE as the original benchmark configured it (multivariate, ``n_startup_trials``), or fixed values."""
    cfg = opt.get("sampler", {})
    seed = derived_seed(cfg.get("seed", 0), trial_id, attempt)
    if cfg.get("type") == "tpe":
        base: Any = optuna.samplers.TPESampler(
            multivariate=True, n_startup_trials=int(cfg.get("n_startup_trials", 10)), seed=seed, constant_liar=True
        )
    else:
        base = optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.PartialFixedSampler(fixed, base) if fixed else base


def open_study(study_root: Path, opt: dict[str, Any], sampler: Any = None) -> optuna.Study:
    """Create or load the study; without ``direction`` in ``opt`` only load an existing one (reconcile)."""
    if "direction" not in opt:
        return optuna.load_study(
            study_name=opt["study"], storage=storage(journal_file(study_root, opt)), sampler=sampler
        )
    return optuna.create_study(
        study_name=opt["study"],
        storage=storage(journal_file(study_root, opt)),
        direction=opt.get("direction", "maximize"),
        sampler=sampler or optuna.samplers.RandomSampler(),
        pruner=make_pruner(opt.get("pruner")),
        load_if_exists=True,
    )


def frozen(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial | None:
    """The Optuna trial with this number (None when the journal has none)."""
    try:
        tid = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, int(number))
        return study._storage.get_trial(tid)
    except KeyError:
        return None


def live_trial(study: optuna.Study, number: int) -> optuna.Trial:
    """A handle on a RUNNING Optuna trial asked by another process (Optuna has no public re-attach)."""
    tid = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, int(number))
    return optuna.Trial(study, tid)


@dataclass
class Attached:
    number: int
    params: dict[str, Any]
    reattached: bool  # a requeued/resumed attempt continuing its Optuna trial


def _has_checkpoint(trial_root: Path) -> bool:
    return any((trial_root / "checkpoints").glob("*.ckpt")) if (trial_root / "checkpoints").is_dir() else False


def _clear_outputs(trial_root: Path) -> None:
    """Outputs of other values than the ones just asked: a new Optuna trial starts from scratch."""
    shutil.rmtree(trial_root / "checkpoints", ignore_errors=True)
    for name in ("history.csv", "metrics.json", PRUNED_MARKER):
        (trial_root / name).unlink(missing_ok=True)


def attach(trial_root: Path, attempt: int = 1) -> Attached:
    """Give this attempt its Optuna trial: the one config.json names while it is still RUNNING (a requeue, or a
    resume after a hard kill), else a new ask. A new ask for a trial that already has checkpoints of earlier
    values (cancelled or killed, its old Optuna trial marked FAIL) asks those same values again, so the
    checkpoints stay valid; tpe without checkpoints samples afresh. Values and number go into config.json
    (atomically) before training starts."""
    trial_root = Path(trial_root).absolute()
    config_path = trial_root / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    opt, trial_id = config["optuna"], config.get("trial_id", trial_root.name)
    root = study_root_of(trial_root)
    space = {name: to_distribution(d) for name, d in opt.get("space", {}).items()}
    tpe = opt.get("sampler", {}).get("type") == "tpe"
    prior = config.get("optuna_trial")
    if prior is not None:
        study = open_study(root, opt)
        old = frozen(study, prior)
        if old is not None and old.state == TrialState.RUNNING and old.user_attrs.get(TRIAL_ATTR) == trial_id:
            return Attached(int(prior), dict(config["params"]), True)
    asked = config.get("asked_params") or {}
    if not tpe:
        fixed = {k: config["params"][k] for k in space if k in config["params"]}
    elif asked and _has_checkpoint(trial_root):
        fixed = {k: v for k, v in asked.items() if k in space}
    else:
        fixed = {}
        _clear_outputs(trial_root)
    study = open_study(root, opt, make_sampler(opt, trial_id, attempt, fixed))
    with _quiet_warnings():
        trial = study.ask(space)
    trial.set_user_attr(TRIAL_ATTR, trial_id)
    values = {k: round_value(v) for k, v in trial.params.items()}
    params = {**config["params"], **values}
    history = [*config.get("optuna_trials", []), trial.number]
    new = {**config, "params": params, "optuna_trial": trial.number, "optuna_trials": history}
    if tpe:
        new["asked_params"] = values
    atomic_write_json(config_path, new)
    return Attached(trial.number, params, False)


class _quiet_warnings:
    """PartialFixedSampler warns for every fixed value; the values are ours on purpose."""

    def __enter__(self) -> None:
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *exc: Any) -> None:
        self._ctx.__exit__(*exc)


class Reporter:
    """What the training side calls once per epoch: report the objective, say whether to stop (pruned).

    When it says stop it writes ``pruned.json`` ({epoch, value}) in the trial folder: the task reads it to
    record the ``pruned`` state, whether the training stopped gracefully or raised ``optuna.TrialPruned``.
    """

    def __init__(self, trial_root: Path) -> None:
        self.trial_root = Path(trial_root).absolute()
        config = json.loads((self.trial_root / "config.json").read_text(encoding="utf-8"))
        self.opt = config["optuna"]
        self.metric = self.opt.get("metric", "val/dice")
        self.grace = int(self.opt.get("pruner", {}).get("grace", 0))
        self.active = self.opt.get("pruner", {}).get("type", "none") != "none"
        self.study = open_study(study_root_of(self.trial_root), self.opt)
        self.trial = live_trial(self.study, int(config["optuna_trial"]))

    def __call__(self, epoch: int, value: float) -> bool:
        """Report ``value`` at ``epoch`` (1-based); True when the pruner stops the trial here."""
        if value != value:  # NaN: nothing to compare
            return False
        with _quiet_warnings():  # a resumed attempt re-reports its epoch: Optuna keeps the first value
            self.trial.report(float(value), int(epoch))
        if not self.active or epoch <= self.grace:
            return False
        if self.trial.should_prune():
            atomic_write_json(self.trial_root / PRUNED_MARKER, {"epoch": int(epoch), "value": float(value)})
            print(f"pruned at epoch {epoch} ({self.metric} {value:.4f})", file=sys.stderr, flush=True)
            return True
        return False


def pruned_epoch(trial_root: Path) -> int | None:
    """The epoch the pruner stopped this trial at (None: not pruned)."""
    marker = read_json(Path(trial_root) / PRUNED_MARKER)
    return int(marker["epoch"]) if isinstance(marker, dict) and "epoch" in marker else None


def tell(study_root: Path, opt: dict[str, Any], number: int, state: str, value: float | None = None) -> bool:
    """Record an outcome (complete | pruned | fail); False when the Optuna trial was already finished."""
    study = open_study(study_root, opt)
    current = frozen(study, number)
    if current is None or current.state.is_finished():
        return False
    if state == "complete" and (value is None or value != value):
        state = "fail"
    kind = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED, "fail": TrialState.FAIL}[state]
    try:
        study.tell(int(number), float(value) if kind == TrialState.COMPLETE and value is not None else None, state=kind)
    except (RuntimeError, ValueError) as exc:  # finished meanwhile by another process
        print(f"optuna trial {number}: {exc}", file=sys.stderr, flush=True)
        return False
    return True


def objective_value(metrics: dict[str, Any] | None, opt: dict[str, Any]) -> float | None:
    value = (metrics or {}).get(opt.get("metric", "val/dice"))
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def running_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


def orphan(trial: optuna.trial.FrozenTrial, age_s: float = 600.0) -> bool:
    """A RUNNING Optuna trial that no trial id claims (its process died between ask and naming it)."""
    if TRIAL_ATTR in trial.user_attrs or trial.datetime_start is None:
        return False
    return time.time() - trial.datetime_start.timestamp() > age_s
