"""The objective metrics a study may optimise, and the direction each is optimised in.

A leaf catalog: the spec layer checks ``objective:`` against it and training and analysis read it, so it lives
below every stage (``vlsm_batch.metrics`` re-exports it for the code that reads metric names from there).
"""

from __future__ import annotations

VAL_DICE, VAL_IOU, VAL_LOSS = "val/dice", "val/iou", "val/loss"

# Objective metric -> the only direction that makes sense for it.
OBJECTIVES: dict[str, str] = {VAL_DICE: "max", VAL_IOU: "max", VAL_LOSS: "min"}
