"""Per-image Dice/IoU on known masks, thresholds, and evaluation at the original mask resolution."""

from __future__ import annotations

import math

import pytest
import torch

from vlsm_batch.metrics.segmentation import dice_iou, dice_iou_from_logits, dice_iou_original, mean_std


def _mask(h: int, w: int, cols: slice | None = None) -> torch.Tensor:
    m = torch.zeros(h, w, dtype=torch.bool)
    if cols is not None:
        m[:, cols] = True
    return m


def test_known_masks() -> None:
    empty, left, shifted, right = (
        _mask(4, 8),
        _mask(4, 8, slice(0, 4)),
        _mask(4, 8, slice(2, 6)),
        _mask(4, 8, slice(4, 8)),
    )
    pred = torch.stack([empty, left, left, empty, left, shifted])
    gt = torch.stack([empty, left, right, left, empty, left])
    dice, iou = dice_iou(pred, gt)
    # empty-empty, perfect, disjoint, missed, false positive on an empty mask, half overlap (8 of 16 + 16 px)
    assert dice.tolist() == pytest.approx([1, 1, 0, 0, 0, 0.5])
    assert iou.tolist() == pytest.approx([1, 1, 0, 0, 0, 1 / 3])
    assert dice.shape == (6,) and dice.dtype == torch.float32


def test_logits_threshold_at_half() -> None:
    logits = torch.tensor([0.0, 0.01, -0.01, 5.0]).view(1, 1, 1, 4)
    soft_gt = torch.tensor([0.0, 0.51, 0.49, 0.5]).view(1, 1, 1, 4)  # JPEG-like soft values
    # prediction: sigmoid > 0.5 -> [0, 1, 0, 1]; ground truth > 0.5 -> [0, 1, 0, 0]
    dice, iou = dice_iou_from_logits(logits, soft_gt)
    assert dice.item() == pytest.approx(2 * 1 / (2 + 1))
    assert iou.item() == pytest.approx(1 / 2)


def test_original_resolution_resizes_logits_to_each_mask() -> None:
    logits = torch.full((2, 1, 4, 4), -10.0)
    logits[0, :, :, :2] = 10.0  # left half
    masks = [_mask(6, 10, slice(0, 5)), _mask(7, 5)]  # different, non-square sizes; the second is empty
    dice, iou = dice_iou_original(logits, masks)
    assert dice.tolist() == pytest.approx([1.0, 1.0])
    assert iou.tolist() == pytest.approx([1.0, 1.0])
    # the same prediction against a mask covering the left 3 of 10 columns: 3 of (5 + 3)
    dice, _ = dice_iou_original(logits[:1], [_mask(6, 10, slice(0, 3))])
    assert dice.item() == pytest.approx(2 * 18 / (30 + 18))


def test_original_resolution_differs_from_model_resolution() -> None:
    """A thin structure lost at model resolution is scored against the full-size mask, as a reader sees it."""
    logits = torch.full((1, 1, 4, 4), -10.0)
    mask = _mask(40, 40, slice(0, 2))  # 2 of 40 columns: smaller than one model pixel
    dice, _ = dice_iou_original(logits, [mask])
    assert dice.item() == 0.0
    assert dice_iou_original(logits[:0], [])[0].numel() == 0


def test_mean_std() -> None:
    assert mean_std([1.0, 0.0]) == (0.5, 0.5)
    assert mean_std(torch.tensor([0.25, 0.25])) == (0.25, 0.0)
    m, s = mean_std([])
    assert math.isnan(m) and math.isnan(s)
