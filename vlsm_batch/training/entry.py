"""Train and evaluate one trial: ``train_trial(trials/<id>)`` reads config.json, writes history.csv,
checkpoints/ and metrics.json, and returns the metrics.

The jobs layer wraps this call and owns status.json and requeueing; here failures simply raise (a failed write
as an ``OSError`` naming the file, errno kept: ENOSPC is a full disk). A resumed attempt continues from
``checkpoints/last.ckpt`` without repeating finished epochs; a damaged one falls back to ``last.prev.ckpt`` or
restarts the trial (see ``checkpoint_io``). Checkpoints are written durably, store study-relative paths (a moved
study resumes) and are only ever loaded with ``weights_only=True``. Model selection uses the validation split
only; test metrics come from the best checkpoint, per image at each mask's original resolution.

Debugging: ``python -m vlsm_batch.training.entry TRIAL_DIR``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import resource
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping
from pytorch_lightning.plugins.environments import SLURMEnvironment
from torch.utils.data import DataLoader

from ..datasets import DatasetInfo, custom_dataset_info, get_dataset
from ..errors import VlsmBatchError
from ..layout import TrialPaths, atomic_write_json, atomic_write_text
from ..metrics import METRIC_KEYS, OBJECTIVES
from ..metrics.segmentation import mean_std
from ..strategies import get_strategy
from .checkpoint_io import (
    LAST,
    DurableCheckpointIO,
    ResumePoint,
    TrialCheckpoint,
    checkpoint_epochs,
    checkpoint_problem,
    named_os_error,
    select_resume,
)
from .data import SegmentationData
from .module import SegmentationModule
from .pruning import pruning_callbacks

if TYPE_CHECKING:
    from ..models.prompted import PromptedSegmenter

ModelFactory = Callable[[str, str, dict[str, Any], Any], "PromptedSegmenter"]
# what a spec's train.precision may name (spec.types, plus Lightning's short aliases); Lightning checks it again
Precision = Literal["32", "16", "bf16", "16-mixed", "bf16-mixed"]

HISTORY_COLUMNS = (
    "epoch", "train/loss", "val/loss", "val/dice", "val/iou", "lr", "train_images", "train_time_s", "epoch_time_s",
)  # fmt: skip


def train_trial(trial_dir: Path, *, model_factory: ModelFactory | None = None) -> dict[str, Any]:
    """Fit, evaluate the best checkpoint on val and test, write metrics.json atomically and return its dict.

    ``model_factory`` replaces ``vlsm_batch.models.factory.create_model`` (tests use a stand-in model).
    """
    started = time.perf_counter()
    # one process per array task on purpose: Lightning's "use srun" hint is wrong here and repeats in every log
    warnings.filterwarnings("ignore", message=".*`srun` command is available.*")
    paths = TrialPaths(Path(trial_dir).absolute())
    config = json.loads(paths.config.read_text(encoding="utf-8"))
    train, params = config["train"], config["params"]
    trains = get_strategy(config["strategy"]).trains
    if not trains:  # zero-shot: evaluated like the benchmark (batch 32, fp32; docs/science.md §4.4), nothing is fit
        train = {"batch_size": 32, "precision": "32", "max_epochs": 1, **train}

    if trains and _packed_before(paths):  # its last attempt trained in a pack: resume it the same way
        return _train_as_pack(paths, model_factory)

    pl.seed_everything(config["seed"], workers=True)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    root, prompt_key = dataset_root(config)  # before the model: a missing dataset fails fast
    factory = model_factory or _default_factory()
    model = factory(config["model"], config["strategy"], params, config.get("weights"))
    data = trial_data(config, model, root, prompt_key, int(train["batch_size"]), cuda)
    seed = int(config["seed"])
    module = SegmentationModule(
        model, data.transform, params.get("lr", 0.0), params.get("weight_decay", 0.0), seed=seed
    )

    if trains:
        best_checkpoint, report, callbacks = _callbacks(paths, config)
        callbacks += pruning_callbacks(paths.root, config)  # per-epoch objective for a pruner (none: [])
    else:
        best_checkpoint, report, callbacks = None, EpochReport(paths.history, 0), []
    trainer = pl.Trainer(
        accelerator="auto",
        devices=1,
        precision=resolve_precision(str(train.get("precision", "32")), cuda),
        min_epochs=int(train.get("min_epochs", 1)),
        max_epochs=int(train["max_epochs"]),
        callbacks=callbacks,
        logger=trial_loggers(paths, config) if trains else False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=paths.root,
        plugins=[*slurm_plugins(), DurableCheckpointIO()],
        benchmark=cuda,  # one input size: cuDNN autotuning pays off (the original set it too)
    )
    last = paths.checkpoints / LAST
    resume = _resume_point(paths) if trains else ResumePoint(None)
    if resume.path:
        print(f"resuming from {resume.path}", flush=True)
    if trains:
        with _quiet():
            batches = data.train_loader(seed, epoch=lambda: trainer.current_epoch)
            trainer.fit(module, batches, data.eval_loader("val"), ckpt_path=resume.path, weights_only=True)

    best = Path(best_checkpoint.best_model_path) if best_checkpoint and best_checkpoint.best_model_path else None
    if trains:
        best = _usable_best(best, last if last.is_file() else resume.path or last, paths, config)
    val = _predict(trainer, module, data.eval_loader("val", with_original=True), best)
    test = _predict(trainer, module, data.eval_loader("test", with_original=True), best)

    history = read_history(paths.history)
    earlier_s = sum(float(r["epoch_time_s"]) for r in history if int(r["epoch"]) not in report.ran)
    train_s = sum(float(r["train_time_s"]) for r in history)
    metrics: dict[str, Any] = {
        "trial_id": config.get("trial_id", paths.root.name),
        "objective": config["objective"],
        "val/loss": float(val["loss"].mean()) if len(val["loss"]) else None,
        "epochs": int(trainer.current_epoch),
        "best_epoch": checkpoint_epochs(best) if best else None,
        # this attempt, plus the epochs that earlier (interrupted) attempts ran
        "wall_time_s": round(time.perf_counter() - started + earlier_s, 3),
        "trainable_params": int(model.trainable_parameter_count()),
        "total_params": int(model.total_parameter_count()),
        "train_images_per_s": sum(int(r["train_images"]) for r in history) / train_s if train_s else None,
        "peak_memory_mb": peak_memory_mb(trainer.strategy.root_device),
        "n_val": len(val["dice"]),
        "n_test": len(test["dice"]),
    }
    for split, out in (("val", val), ("test", test)):
        for name in ("dice", "iou"):
            metrics[f"{split}/{name}"], metrics[f"{split}/{name}_std"] = mean_std(out[name])
    metrics = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}
    missing = [k for k in METRIC_KEYS if k not in metrics]
    if missing:
        raise RuntimeError(f"metrics.json would lack {missing}")
    try:
        atomic_write_json(paths.metrics, metrics)
    except OSError as exc:
        raise named_os_error(exc, paths.metrics) from exc
    return metrics


def _packed_before(paths: TrialPaths) -> bool:
    """True when the trial's last checkpoint was written by a pack (``training.pack``), which Lightning cannot
    resume (its progress is in ``pack_state``, not in Lightning's loop state)."""
    last = paths.checkpoints / LAST
    return last.is_file() and checkpoint_problem(last, required=("pack_state",)) is None


def _train_as_pack(paths: TrialPaths, model_factory: ModelFactory | None) -> dict[str, Any]:
    """Resume a trial alone in the pack loop (the same arithmetic as Lightning's, see ``training.pack``)."""
    from .pack import train_pack

    print("resuming a trial that trained in a pack: continuing in the pack loop, alone", flush=True)
    end = train_pack([paths.root], model_factory=model_factory)[paths.root.name]
    if end.kind in ("done", "pruned") and end.metrics is not None:
        return end.metrics
    if end.error is not None:
        raise end.error
    raise RuntimeError(end.message or f"the trial ended {end.kind}")


def _resume_point(paths: TrialPaths) -> ResumePoint:
    """Where this attempt starts (``checkpoint_io.select_resume``), with history.csv made to agree: reset when the
    trial starts over, cut after the epochs of the previous checkpoint when it falls back to it."""
    resume = select_resume(paths.checkpoints, log=lambda line: print(line, flush=True))
    if resume.restarted:
        paths.history.unlink(missing_ok=True)
    elif resume.fell_back and resume.path is not None:
        epochs = checkpoint_epochs(resume.path)
        rows = [r for r in read_history(paths.history) if int(r["epoch"]) <= epochs]
        write_history(paths.history, rows)
    return resume


def _usable_best(best: Path | None, fallback: Path, paths: TrialPaths, config: dict[str, Any]) -> Path:
    """The best checkpoint to evaluate, or ``fallback`` (the last one) with a printed warning saying why."""
    if best is None or not best.is_file():
        print(f"warning: no best checkpoint by {config['objective']['metric']}; evaluating {fallback}", flush=True)
        return fallback
    if paths.checkpoints.resolve() not in best.resolve().parents:
        print(f"warning: best checkpoint {best} is outside this trial; evaluating {fallback}", flush=True)
        return fallback
    problem = checkpoint_problem(best, required=("state_dict", "epoch"))
    if problem:
        print(f"warning: best checkpoint {best} is unusable, {problem}; evaluating {fallback}", flush=True)
        return fallback
    return best


def _callbacks(paths: TrialPaths, config: dict[str, Any]) -> tuple[TrialCheckpoint, EpochReport, list[pl.Callback]]:
    """Early stopping, the best and the last checkpoint, and the per-epoch report (in the order Lightning needs).

    Both checkpoints are written once the epoch is over (not at validation end, mid-epoch), so a resumed attempt
    starts the next epoch. last.ckpt has its own unmonitored callback: Lightning 2.6's ``save_last=True`` rewrites
    it only on epochs that improve the monitored metric, and a resumed attempt would repeat the epochs since then.
    """
    stopping, objective = config["train"]["early_stopping"], config["objective"]
    best = TrialCheckpoint(
        dirpath=paths.checkpoints,
        filename="best",
        monitor=objective["metric"],
        mode=objective["mode"],
        save_top_k=1,
        save_on_train_epoch_end=True,
        enable_version_counter=False,  # one best.ckpt, replaced atomically (never a best-v1.ckpt beside it)
    )
    last = TrialCheckpoint(
        dirpath=paths.checkpoints,
        filename="last",
        save_top_k=1,
        save_on_train_epoch_end=True,
        enable_version_counter=False,
    )
    report = EpochReport(paths.history, int(config["train"]["max_epochs"]))
    early = EarlyStopping(
        monitor=stopping["monitor"],
        mode=OBJECTIVES.get(stopping["monitor"], "min"),
        patience=int(stopping["patience"]),
        min_delta=float(stopping["min_delta"]),
    )
    return best, report, [early, best, last, report]  # last after best: last.ckpt carries best's updated state


def _default_factory() -> ModelFactory:
    from ..models.factory import create_model  # heavy (transformers): imported only when a trial runs

    return create_model


def trial_dataset(config: dict[str, Any]) -> DatasetInfo:
    """The catalog entry of the trial's dataset, or the definition the spec declared (``dataset_def``)."""
    if config.get("dataset_def"):
        return custom_dataset_info(config["dataset_def"])
    return get_dataset(config["dataset"])


def trial_data(
    config: dict[str, Any], model: Any, root: Path, prompt_key: str, batch_size: int, cuda: bool
) -> SegmentationData:
    """The trial's three splits at ``model``'s resolution and normalisation (shared by a pack's members)."""
    return SegmentationData(
        root,
        model.tokenize,
        model.image_size,
        model.image_mean,
        model.image_std,
        batch_size=batch_size,
        num_workers=int(config.get("num_workers", 0)),
        prompt_key=prompt_key,
        pin_memory=cuda,
        dataset=trial_dataset(config),
        device="cuda" if cuda else None,  # decoded once, then kept on the GPU (augmented there)
    )


def dataset_root(config: dict[str, Any]) -> tuple[Path, str]:
    """The dataset folder and prompt key of a trial; the synthetic dataset is generated first when missing.

    ``config["prompt_key"]``, when present, overrides the dataset's prompt key.
    """
    info = trial_dataset(config)
    if not info.implemented:
        raise VlsmBatchError(f"dataset {info.name!r} ({info.layout} layout) has no loader in this build")
    data_root = Path(config["data_root"])
    prompt_key = config.get("prompt_key") or info.prompt_key
    if info.generated:
        from ..datasets.synthetic import ensure_synthetic

        return ensure_synthetic(data_root), prompt_key
    return data_root / info.folder, prompt_key


def resolve_precision(requested: str, cuda: bool) -> Precision:
    """fp16 mixed precision needs CUDA: fall back to 32 with a printed warning elsewhere."""
    if requested in ("16-mixed", "16") and not cuda:
        print(f"warning: precision {requested} needs CUDA, none available: training in 32", flush=True)
        return "32"
    return cast(Precision, requested)  # validated with the spec; passed through unchanged


def slurm_plugins() -> list[SLURMEnvironment]:
    """Under Slurm, Lightning's own auto-requeue off: submitit owns requeueing (exactly one layer does).

    Lightning's "srun is available but not used" hint is silenced: each array task is one process on purpose,
    and the hint would repeat in every task's log.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*`srun` command is available.*")
        return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []


LOGGERS = ("csv", "tensorboard", "wandb", "mlflow")
_LOGGER_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",), "mlflow": ("mlflow",)}


def logger_names(config: dict[str, Any]) -> list[str]:
    """``loggers`` of config.json (one name or a list; default csv), or ``train.loggers`` when written there."""
    names = config.get("loggers", (config.get("train") or {}).get("loggers", "csv"))
    names = [names] if isinstance(names, str) else list(names or [])
    unknown = [n for n in names if n not in LOGGERS]
    if unknown:
        raise VlsmBatchError(f"train.loggers: unknown {unknown}; valid: {', '.join(LOGGERS)}")
    return names


def trial_loggers(paths: TrialPaths, config: dict[str, Any]) -> list[Any]:
    """The Lightning loggers the spec asked for (``train.loggers``); history.csv is written either way.

    csv: ``trials/<id>/lightning_csv/version_<N>/metrics.csv`` (one per attempt); tensorboard:
    ``<study>/tensorboard/<trial id>/`` (one ``tensorboard --logdir`` for the whole study); wandb: offline unless
    ``WANDB_MODE`` says otherwise (``wandb sync`` uploads later), run id = trial id so a resumed attempt continues
    the same run; mlflow: the file store ``<study>/mlruns`` unless ``MLFLOW_TRACKING_URI`` is set. None of them
    needs a network.
    """
    import importlib.util
    import os

    from pytorch_lightning import loggers as pl_loggers

    study = paths.root.parent.parent
    trial_id = str(config.get("trial_id", paths.root.name))
    name = str(config.get("study") or study.name)
    train = {f"train.{k}": v for k, v in (config.get("train") or {}).items() if not isinstance(v, dict)}
    hparams = (
        {k: config.get(k) for k in ("model", "dataset", "strategy", "seed")} | (config.get("params") or {}) | train
    )
    out: list[Any] = []
    for logger in logger_names(config):
        packages = _LOGGER_PACKAGES.get(logger, ())
        if packages and not any(importlib.util.find_spec(p) for p in packages):
            raise VlsmBatchError(
                f"train.loggers names {logger} but the {packages[0]} package is not installed in this environment: "
                f"install it (pip install {packages[0]}) or remove {logger} from train.loggers"
            )
        if logger == "csv":
            # one version_N folder per attempt: a fixed folder would be emptied by a resumed attempt
            out.append(pl_loggers.CSVLogger(save_dir=paths.root, name="lightning_csv"))
        elif logger == "tensorboard":
            out.append(
                pl_loggers.TensorBoardLogger(
                    save_dir=study / "tensorboard", name=trial_id, version="", default_hp_metric=False
                )
            )
        elif logger == "wandb":
            os.environ.setdefault("WANDB_MODE", "offline")
            out.append(
                pl_loggers.WandbLogger(
                    project=name,
                    name=trial_id,
                    id=trial_id,
                    resume="allow",
                    save_dir=str(paths.root),
                    offline=os.environ["WANDB_MODE"] == "offline",
                )
            )
        elif logger == "mlflow":
            uri = os.environ.get("MLFLOW_TRACKING_URI")
            if not uri:  # the study's own file store: newer MLflow needs an explicit opt-in for it
                uri = (study / "mlruns").absolute().as_uri()
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            out.append(pl_loggers.MLFlowLogger(experiment_name=name, run_name=trial_id, tracking_uri=uri))
    for lg in out:
        lg.log_hyperparams(hparams)
    return out


def peak_memory_mb(device: torch.device) -> float:
    """CUDA max allocated on a GPU, else the process's max resident set size (Linux reports KiB)."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _predict(trainer: pl.Trainer, module: SegmentationModule, loader: DataLoader, ckpt: Path | None) -> dict[str, Any]:
    with _quiet():
        predicted = trainer.predict(module, dataloaders=loader, ckpt_path=ckpt, weights_only=True) or []
    # one loader: one list of predict_step's dicts (Lightning's annotation also allows a list per loader)
    outs = cast("list[dict[str, torch.Tensor]]", predicted)
    if not outs:
        return {k: np.zeros(0) for k in ("loss", "dice", "iou")}
    return {k: torch.cat([o[k] for o in outs]).numpy() for k in ("loss", "dice", "iou")}


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence Lightning's advice that does not apply (in-memory data needs no loader workers)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")  # frozen parts, on purpose
        warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")  # Lightning vs newer torch
        warnings.filterwarnings("ignore", message=".*exists and is not empty.*")  # resuming into checkpoints/
        warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")  # epoch-level logs only
        yield


def read_history(path: Path) -> list[dict[str, str]]:
    """Rows of history.csv (empty when absent)."""
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def write_history(path: Path, rows: list[dict[str, Any]]) -> None:
    """history.csv rewritten whole and atomically; a failed write names the file (errno kept)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    try:
        atomic_write_text(path, buf.getvalue())
    except OSError as exc:
        raise named_os_error(exc, path) from exc


class EpochReport(pl.Callback):
    """One printed line and one history.csv row per epoch; the file is rewritten whole and atomically.

    The row is written when validation ends, before the checkpoint of that epoch: if a crash falls between,
    the resumed attempt re-runs the epoch and its row replaces the earlier one (rows are keyed by epoch).
    """

    def __init__(self, path: Path, max_epochs: int):
        self.path, self.max_epochs = path, max_epochs
        self.ran: set[int] = set()  # epochs (1-based) run by this attempt
        self._t0: float | None = None
        self._train_end: float | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # A restored run that had already stopped early must not train one more epoch to notice again.
        if any(cb.stopped_epoch > 0 for cb in trainer.early_stopping_callbacks):
            trainer.should_stop = True

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0, self._train_end = time.perf_counter(), None
        self._images, self._loss_sum = 0, 0.0
        self._written = False

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        n = len(batch["index"])
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self._images += n
        self._loss_sum += float(loss.detach()) * n

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._mark_train_end(pl_module)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking and self._t0 is not None:
            self._write(trainer, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._t0 is not None and not self._written:  # no validation this epoch
            self._write(trainer, pl_module)

    def _mark_train_end(self, pl_module: pl.LightningModule) -> None:
        if self._t0 is not None and self._train_end is None:
            if pl_module.device.type == "cuda":
                torch.cuda.synchronize(pl_module.device)
            self._train_end = time.perf_counter()

    def _write(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert self._t0 is not None
        self._mark_train_end(pl_module)
        now = time.perf_counter()
        epoch = trainer.current_epoch + 1
        m = trainer.callback_metrics
        row: dict[str, Any] = {
            "epoch": epoch,
            "train/loss": self._loss_sum / self._images if self._images else float("nan"),
            "val/loss": _metric(m, "val/loss"),
            "val/dice": _metric(m, "val/dice"),
            "val/iou": _metric(m, "val/iou"),
            "lr": trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan"),
            "train_images": self._images,
            "train_time_s": round((self._train_end or now) - self._t0, 4),
            "epoch_time_s": round(now - self._t0, 4),
        }
        write_history(self.path, [r for r in read_history(self.path) if int(r["epoch"]) < epoch] + [row])
        self._written = True
        self.ran.add(epoch)
        print(
            f"epoch {epoch}/{self.max_epochs} train/loss {row['train/loss']:.4f} val/loss {row['val/loss']:.4f} "
            f"val/dice {row['val/dice']:.4f} val/iou {row['val/iou']:.4f} lr {row['lr']:.2g} "
            f"({row['epoch_time_s']:.1f} s)",
            flush=True,
        )


def _metric(metrics: dict[str, Any], key: str) -> float:
    value = metrics.get(key)
    return float(value) if value is not None else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vlsm_batch.training.entry", description=__doc__)
    parser.add_argument("trial_dir", type=Path, help="trials/<id> folder holding config.json")
    args = parser.parse_args(argv)
    metrics = train_trial(args.trial_dir)
    json.dump(metrics, sys.stdout, indent=2, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
