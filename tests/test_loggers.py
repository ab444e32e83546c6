"""train.loggers: Lightning's csv (default), tensorboard, wandb (offline) and mlflow (file store) loggers write their
files with no network; history.csv stays."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest
from test_training import data_root, make_trial, tiny_factory  # noqa: F401 (data_root is a fixture)

from vlsm_batch.errors import VlsmBatchError
from vlsm_batch.spec.build import build_train
from vlsm_batch.training.entry import logger_names, train_trial


def _set(trial: Path, **keys: object) -> None:
    config = json.loads((trial / "config.json").read_text())
    config.update(keys)
    (trial / "config.json").write_text(json.dumps(config))


def test_csv_logger_by_default_and_history_kept(tmp_path: Path, data_root: Path) -> None:  # noqa: F811
    trial = make_trial(tmp_path, data_root, max_epochs=2)
    train_trial(trial, model_factory=tiny_factory)
    with open(trial / "lightning_csv" / "version_0" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    logged = [r for r in rows if r.get("val/dice")]
    assert [int(r["epoch"]) for r in logged] == [0, 1]  # Lightning counts from 0; history.csv from 1
    assert all(0.0 <= float(r["val/dice"]) <= 1.0 for r in logged)
    assert (trial / "history.csv").read_text().startswith("epoch,train/loss")


@pytest.mark.skipif(
    not any(importlib.util.find_spec(p) for p in ("tensorboard", "tensorboardX")), reason="tensorboard not installed"
)
def test_tensorboard_logger_writes_event_files_under_the_study(tmp_path: Path, data_root: Path) -> None:  # noqa: F811
    trial = make_trial(tmp_path, data_root, max_epochs=1)
    _set(trial, loggers=["csv", "tensorboard"])
    train_trial(trial, model_factory=tiny_factory)
    events = list((tmp_path / "tensorboard" / "a1b2c3d4e5f6").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    # the second run is a new version: the first run's file is kept, not emptied
    assert (trial / "lightning_csv" / "version_0" / "metrics.csv").is_file() and (trial / "history.csv").is_file()


def test_logger_names_and_errors(tmp_path: Path) -> None:
    assert logger_names({}) == ["csv"]
    assert logger_names({"loggers": "tensorboard"}) == ["tensorboard"]
    assert logger_names({"train": {"loggers": ["csv", "mlflow"]}}) == ["csv", "mlflow"]
    with pytest.raises(VlsmBatchError, match="unknown"):
        logger_names({"loggers": ["neptune"]})
    assert build_train({"loggers": ["csv", "tensorboard"]}).logger_names() == ["csv", "tensorboard"]
    assert build_train({}).logger_names() == ["csv"]


def test_missing_logger_package_says_what_to_do(
    tmp_path: Path,
    data_root: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    trial = make_trial(tmp_path, data_root, max_epochs=1)
    _set(trial, loggers=["mlflow"])
    with pytest.raises(VlsmBatchError, match="pip install mlflow"):
        train_trial(trial, model_factory=tiny_factory)


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb not installed (pip install wandb)")
def test_wandb_logger_runs_offline_into_the_trial_folder(
    tmp_path: Path,
    data_root: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import wandb

    monkeypatch.delenv("WANDB_MODE", raising=False)  # the default: offline, no account and no network needed
    for key in ("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_DIR"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    trial = make_trial(tmp_path, data_root, max_epochs=2)
    _set(trial, loggers=["csv", "wandb"])
    try:
        train_trial(trial, model_factory=tiny_factory)
    finally:
        # a trial is one process, and wandb finishes and flushes at its exit; this test process goes on, so finish the
        # run and stop wandb's service (which writes the offline file) as that exit does
        wandb.finish()
        wandb.teardown()
    (run,) = (trial / "wandb").glob("offline-run-*-a1b2c3d4e5f6")  # run id = trial id: a resume continues it
    data = (run / "run-a1b2c3d4e5f6.wandb").read_bytes()
    assert b"val/dice" in data and b"train/loss" in data  # the epoch metrics ...
    assert b"strategy" in data and b"coop" in data and b"train.max_epochs" in data  # ... and the hyperparameters
    assert (trial / "history.csv").is_file() and (trial / "lightning_csv" / "version_0" / "metrics.csv").is_file()


@pytest.mark.skipif(importlib.util.find_spec("mlflow") is None, reason="mlflow not installed (pip install mlflow)")
def test_mlflow_logger_writes_the_study_file_store(
    tmp_path: Path,
    data_root: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_ALLOW_FILE_STORE", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(key, raising=False)  # what a user has: no server, nothing set
    trial = make_trial(tmp_path, data_root, max_epochs=2)
    _set(trial, loggers=["mlflow"])
    train_trial(trial, model_factory=tiny_factory)
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # reading the file store back (recent MLflow 3 asks)
    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("test")  # the study's name
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "a1b2c3d4e5f6" and run.info.status == "FINISHED"
    assert run.data.params["strategy"] == "coop" and run.data.params["train.max_epochs"] == "2"
    dice = client.get_metric_history(run.info.run_id, "val/dice")
    assert len(dice) == 2 and all(0.0 <= m.value <= 1.0 for m in dice)  # one value per epoch
    assert (trial / "history.csv").is_file()


def test_spec_accepts_one_name_or_a_list_and_refuses_others(tmp_path: Path) -> None:
    from vlsm_batch.spec.load import load_spec

    base = (Path(__file__).resolve().parent.parent / "specs" / "quickstart.yaml").read_text()
    for value, ok in (("csv", True), ("[csv, tensorboard]", True), ("neptune", False), ("[csv, csv]", False)):
        spec = tmp_path / f"s{hash(value) & 0xFFFF}.yaml"
        text = base.replace("train:\n", f"train:\n  loggers: {value}\n", 1)
        assert "loggers" in text
        spec.write_text(text)
        if ok:
            load_spec(spec)
        else:
            with pytest.raises(Exception, match="loggers"):
                load_spec(spec)
