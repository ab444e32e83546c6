"""Loss, LightningModule wiring and whole trials (stand-in model, then clipseg-tiny + coop) with resume."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vlsm_batch.datasets.synthetic import ensure_synthetic
from vlsm_batch.metrics import METRIC_KEYS
from vlsm_batch.training.data import BatchTransform
from vlsm_batch.training.entry import resolve_precision, slurm_plugins, train_trial
from vlsm_batch.training.loss import DiceCELoss, dice_ce_loss
from vlsm_batch.training.module import SegmentationModule

# -- a stand-in PromptedSegmenter -----------------------------------------------------------------------------


class TinySegmenter(nn.Module):
    """A real tiny conv net with the PromptedSegmenter interface: frozen image/text parts, trainable prompt + head."""

    image_size = 32
    image_mean = (0.45, 0.45, 0.45)
    image_std = (0.25, 0.25, 0.25)

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)  # draws from the global RNG in training, as prompt learners' dropout does
        self.backbone = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.BatchNorm2d(8)  # frozen, with buffers: must stay in eval mode
        self.embed = nn.Embedding(64, 8)
        for module in (self.backbone, self.norm, self.embed):
            module.requires_grad_(False)
        self.context = nn.Parameter(torch.zeros(8))  # the "prompt"
        self.head = nn.Conv2d(8, 1, 3, padding=1)

    def tokenize(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        rows = [[1] + [3 + ord(c) % 60 for c in (p if p.endswith(".") else p + ".")] + [2] for p in prompts]
        ids = torch.zeros(len(rows), 32, dtype=torch.long)  # right-padded to a fixed width
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r[:32])
        return {"input_ids": ids, "attention_mask": (ids != 0).long()}

    def forward(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        features = F.relu(self.norm(self.backbone(pixel_values)))
        m = attention_mask[..., None].float()
        text = (self.embed(input_ids) * m).sum(1) / m.sum(1) + self.context
        return self.head(self.dropout(features * torch.sigmoid(text)[:, :, None, None]))

    def train(self, mode: bool = True) -> TinySegmenter:
        super().train(mode)
        for module in (self.backbone, self.norm, self.embed):
            module.eval()
        return self

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        return [
            {"params": [self.head.weight], "weight_decay": weight_decay},
            {"params": [self.context, self.head.bias], "weight_decay": 0.0},
        ]

    def trainable_parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def total_parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


def tiny_factory(model: str, strategy: str, params: dict[str, Any], weights: Any) -> TinySegmenter:
    return TinySegmenter()


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    ensure_synthetic(root)
    return root


def make_trial(base: Path, data_root: Path, model: str = "stand-in", **train: Any) -> Path:
    trial = base / "trials" / "a1b2c3d4e5f6"
    trial.mkdir(parents=True)
    config = {
        "trial_id": "a1b2c3d4e5f6",
        "study": "test",
        "model": model,
        "dataset": "synthetic",
        "strategy": "coop",
        "seed": 0,
        "params": {"lr": 0.01, "weight_decay": 0.0001, "prompt_depth": 2, "num_context": 4,
                   "context_init": "a photo of a", "learnable_upsampler": False},
        "train": {"max_epochs": 2, "min_epochs": 1, "batch_size": 8, "precision": "32",
                  "early_stopping": {"monitor": "val/loss", "patience": 12, "min_delta": 0.0001}, **train},
        "objective": {"metric": "val/dice", "mode": "max"},
        "data_root": str(data_root),
        "weights": None,
        "num_workers": 0,
    }  # fmt: skip
    (trial / "config.json").write_text(json.dumps(config))
    return trial


def set_train(trial: Path, **train: Any) -> None:
    config = json.loads((trial / "config.json").read_text())
    config["train"].update(train)
    (trial / "config.json").write_text(json.dumps(config))


def history(trial: Path) -> list[dict[str, str]]:
    with open(trial / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def check_outputs(trial: Path, metrics: dict[str, Any], epochs: int) -> None:
    assert set(METRIC_KEYS) <= metrics.keys()
    assert json.loads((trial / "metrics.json").read_text()) == metrics
    assert metrics["trial_id"] == "a1b2c3d4e5f6" and metrics["objective"]["metric"] == "val/dice"
    assert metrics["epochs"] == epochs and 1 <= metrics["best_epoch"] <= epochs
    assert (metrics["n_val"], metrics["n_test"]) == (16, 16)
    for key in ("val/dice", "val/iou", "test/dice", "test/iou"):
        assert 0.0 <= metrics[key] <= 1.0 and metrics[f"{key}_std"] >= 0.0
    assert metrics["val/loss"] > 0 and metrics["wall_time_s"] > 0 and metrics["train_images_per_s"] > 0
    assert 0 < metrics["trainable_params"] < metrics["total_params"] and metrics["peak_memory_mb"] > 0
    rows = history(trial)
    assert [int(r["epoch"]) for r in rows] == list(range(1, epochs + 1))
    assert all(int(r["train_images"]) == 48 for r in rows)
    assert (trial / "checkpoints" / "last.ckpt").is_file() and (trial / "checkpoints" / "best.ckpt").is_file()
    assert not (trial / "status.json").exists()  # the jobs layer owns it
    # the best checkpoint is the best val/dice epoch (selection on validation only)
    best = max(rows, key=lambda r: float(r["val/dice"]))
    assert float(rows[metrics["best_epoch"] - 1]["val/dice"]) == pytest.approx(float(best["val/dice"]))


# -- loss -----------------------------------------------------------------------------------------------------


def test_dice_ce_loss_values() -> None:
    target = torch.zeros(2, 1, 4, 4)
    target[:, :, :2] = 1
    good = (target * 2 - 1) * 20
    assert dice_ce_loss(good, target).item() == pytest.approx(0.0, abs=1e-6)
    assert dice_ce_loss(-good, target).item() > 4.0
    zero = torch.zeros(2, 1, 4, 4)  # sigmoid 0.5 everywhere
    expected_dice = 1 - (2 * 0.5 * 8 + 1e-5) / (0.5 * 16 + 8 + 1e-5)
    expected = expected_dice + 0.2 * torch.log(torch.tensor(2.0)).item()
    assert dice_ce_loss(zero, target).item() == pytest.approx(expected, rel=1e-6)
    per_sample = dice_ce_loss(torch.stack([good[0], -good[1]]), target, reduction="none")
    assert per_sample.shape == (2,) and per_sample[0] < 1e-5 < per_sample[1]
    # an empty mask predicted empty costs nothing (smooth term), as Dice scores it 1
    assert dice_ce_loss(torch.full((1, 1, 4, 4), -40.0), torch.zeros(1, 1, 4, 4)).item() < 1e-6
    logits = torch.zeros(1, 1, 4, 4, requires_grad=True)
    DiceCELoss()(logits, target[:1]).backward()
    assert logits.grad is not None and (logits.grad[:, :, :2] < 0).all() and (logits.grad[:, :, 2:] > 0).all()


# -- module and trainer settings ------------------------------------------------------------------------------


def test_optimizer_keeps_zero_weight_decay_zero() -> None:
    model = TinySegmenter()
    module = SegmentationModule(model, BatchTransform(model.image_mean, model.image_std), lr=0.1, weight_decay=0.0)
    optimizer = module.configure_optimizers()
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.0, 0.0]  # not AdamW's 0.01
    plateau = module._plateau  # stepped by the module on val/loss at each epoch end (see the resume test)
    assert plateau is not None and plateau.optimizer is optimizer
    assert (plateau.mode, plateau.factor, plateau.patience) == ("min", 0.2, 5)
    model.train()
    assert model.head.training and not model.norm.training


def test_precision_fallback(capsys: pytest.CaptureFixture[str]) -> None:
    assert resolve_precision("16-mixed", cuda=False) == "32"
    assert "needs CUDA" in capsys.readouterr().out
    assert resolve_precision("16-mixed", cuda=True) == "16-mixed"
    assert resolve_precision("32", cuda=False) == "32"


def test_lightning_slurm_requeue_off(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("SLURM_NTASKS", "SLURM_JOB_NAME", "SLURM_JOB_ID"):
        monkeypatch.delenv(var, raising=False)
    assert slurm_plugins() == []
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_JOB_NAME", "vlsm-trial")
    (env,) = slurm_plugins()
    assert env.auto_requeue is False


# -- whole trials ---------------------------------------------------------------------------------------------


def test_trial_end_to_end_with_resume(tmp_path: Path, data_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trial = make_trial(tmp_path, data_root, max_epochs=1)
    metrics = train_trial(trial, model_factory=tiny_factory)
    check_outputs(trial, metrics, epochs=1)
    assert "epoch 1/1 train/loss" in capsys.readouterr().out
    first_row = history(trial)[0]
    trainable_ckpt = torch.load(trial / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert "model.context" in trainable_ckpt["state_dict"]
    assert "model.backbone.weight" not in trainable_ckpt["state_dict"]  # frozen weights are not stored

    set_train(trial, max_epochs=3)  # an interrupted longer run: the resumed attempt continues at epoch 2
    metrics = train_trial(trial, model_factory=tiny_factory)
    out = capsys.readouterr().out
    assert "resuming from" in out and "epoch 1/3" not in out and "epoch 2/3" in out and "epoch 3/3" in out
    check_outputs(trial, metrics, epochs=3)
    assert history(trial)[0] == first_row

    before = (trial / "history.csv").read_text()
    metrics = train_trial(trial, model_factory=tiny_factory)  # finished: nothing to repeat
    assert "epoch " not in capsys.readouterr().out.replace("epochs", "")
    assert (trial / "history.csv").read_text() == before
    check_outputs(trial, metrics, epochs=3)


def test_resumed_trial_is_bit_identical_to_an_uninterrupted_one(tmp_path: Path, data_root: Path) -> None:
    """A trial stopped after epoch 2 and resumed (a preempted Slurm job) ends exactly where an uninterrupted one
    does: same data order, augmentations, dropout masks, plateau-scheduler state and parameters."""

    def factory(*_: Any) -> TinySegmenter:
        return TinySegmenter(dropout=0.25)

    straight = make_trial(tmp_path / "straight", data_root, max_epochs=4)
    train_trial(straight, model_factory=factory)
    resumed = make_trial(tmp_path / "resumed", data_root, max_epochs=2)
    train_trial(resumed, model_factory=factory)
    set_train(resumed, max_epochs=4)
    train_trial(resumed, model_factory=factory)

    a = torch.load(straight / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    b = torch.load(resumed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    assert a["plateau"] == b["plateau"] and a["plateau"]["last_epoch"] == 4
    rows_a, rows_b = history(straight), history(resumed)
    for ra, rb in zip(rows_a, rows_b, strict=True):
        assert (ra["train/loss"], ra["val/loss"]) == (rb["train/loss"], rb["val/loss"])


def test_stand_in_learns_the_blob(tmp_path: Path, data_root: Path) -> None:
    """The synthetic task is learnable: a tiny conv head gets well above chance in a few epochs."""
    trial = make_trial(tmp_path, data_root, max_epochs=6)
    metrics = train_trial(trial, model_factory=tiny_factory)
    rows = history(trial)
    assert float(rows[-1]["train/loss"]) < float(rows[0]["train/loss"])
    assert metrics["val/dice"] > 0.5 and metrics["test/dice"] > 0.5


def test_early_stopped_trial_is_not_extended_on_resume(tmp_path: Path, data_root: Path) -> None:
    stopping = {"monitor": "val/loss", "patience": 1, "min_delta": 10.0}  # never improves after epoch 1
    trial = make_trial(tmp_path, data_root, max_epochs=6, early_stopping=stopping)
    metrics = train_trial(trial, model_factory=tiny_factory)
    assert metrics["epochs"] == 2 and len(history(trial)) == 2
    metrics = train_trial(trial, model_factory=tiny_factory)
    assert metrics["epochs"] == 2 and len(history(trial)) == 2


def test_clipseg_tiny_coop_trial(tmp_path: Path, data_root: Path) -> None:
    pytest.importorskip("vlsm_batch.models.factory")
    trial = make_trial(tmp_path, data_root, model="clipseg-tiny", max_epochs=2)
    metrics = train_trial(trial)
    check_outputs(trial, metrics, epochs=2)
    assert metrics["trainable_params"] < metrics["total_params"] / 100
    before = (trial / "history.csv").read_text()
    again = train_trial(trial)  # resumes from last.ckpt: no epoch repeated
    assert (trial / "history.csv").read_text() == before
    check_outputs(trial, again, epochs=2)
    for key in ("val/dice", "test/dice", "best_epoch"):
        assert again[key] == metrics[key]
