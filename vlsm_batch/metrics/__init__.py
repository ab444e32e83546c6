"""Metric names shared by training (which writes them) and analysis/validation (which read them)."""

from __future__ import annotations

from ..objectives import OBJECTIVES, VAL_DICE, VAL_IOU, VAL_LOSS

TEST_DICE, TEST_IOU = "test/dice", "test/iou"

# Keys of metrics.json (flat, so that analysis reads it into one row).
METRIC_KEYS = (
    VAL_DICE,
    "val/dice_std",
    VAL_IOU,
    "val/iou_std",
    VAL_LOSS,
    TEST_DICE,
    "test/dice_std",
    TEST_IOU,
    "test/iou_std",
    "epochs",
    "best_epoch",
    "wall_time_s",
    "trainable_params",
    "total_params",
    "train_images_per_s",
    "peak_memory_mb",
    "n_val",
    "n_test",
)

__all__ = ["METRIC_KEYS", "OBJECTIVES", "TEST_DICE", "TEST_IOU", "VAL_DICE", "VAL_IOU", "VAL_LOSS"]
