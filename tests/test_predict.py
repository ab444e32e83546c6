"""vlsm-batch predict: a trial's masks as PNGs at each image's original resolution, and the report's overlay grid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_training import data_root, make_trial, tiny_factory  # noqa: F401 (data_root is a fixture)

from vlsm_batch.analysis.curves import overlay_figure
from vlsm_batch.analysis.plots import save
from vlsm_batch.cli import main
from vlsm_batch.layout import StudyLayout
from vlsm_batch.training.entry import train_trial
from vlsm_batch.training.predict import predict_trial


def test_predicted_masks_match_the_images_and_the_metrics(tmp_path: Path, data_root: Path) -> None:  # noqa: F811
    trial = make_trial(tmp_path, data_root, max_epochs=2)
    metrics = train_trial(trial, model_factory=tiny_factory)
    out = predict_trial(trial, model_factory=tiny_factory)
    assert out == trial / "predictions" / "test"
    index = json.loads((out / "index.json").read_text())["images"]
    assert len(index) == metrics["n_test"] == 16
    for item in index:
        pred = Image.open(out / item["prediction"])
        gt = Image.open(item["mask"])
        assert pred.mode == "L" and pred.size == gt.size  # the original resolution, not the model's
        assert set(np.unique(np.asarray(pred))) <= {0, 255}
    # the per-image Dice of the written masks is the metric the trial reported
    assert np.mean([i["dice"] for i in index]) == pytest.approx(metrics["test/dice"], abs=0.02)
    fig = overlay_figure(StudyLayout(tmp_path), [("stand-in/synthetic/coop", trial.name)], n_images=3)
    written = save(fig, tmp_path / "masks")
    with Image.open(written[0]) as im:
        assert im.info["dpi"][0] == pytest.approx(300, abs=1)
    assert overlay_figure(StudyLayout(tmp_path), [("x", "nonexistent")]) is None


def test_predict_command_limits_and_refuses_unfinished(tmp_path: Path, data_root: Path, capsys) -> None:  # noqa: F811
    trial = make_trial(tmp_path, data_root, model="clipseg-tiny", max_epochs=1)
    assert main(["predict", str(trial)]) != 0  # not trained yet: no best checkpoint
    assert "no checkpoints/best.ckpt" in capsys.readouterr().err
    train_trial(trial)
    out = tmp_path / "masks"
    assert main(["predict", str(trial), "--limit", "3", "--out", str(out)]) == 0
    assert sorted(p.suffix for p in out.iterdir()) == [".json", ".png", ".png", ".png"]
    assert main(["predict"]) != 0 and "--best" in capsys.readouterr().err
