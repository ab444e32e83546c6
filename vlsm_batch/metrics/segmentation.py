"""Per-image Dice and IoU at threshold 0.5, one convention everywhere (docs/science.md §8.4).

Empty prediction and empty ground truth score 1 (negative samples predicted empty are correct); an empty ground
truth with a non-empty prediction scores 0. Ground truth is binarised at 0.5 (JPEG masks carry soft values).
Results stay per image so that both the mean and the standard deviation can be reported.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def dice_iou(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Dice and IoU per image of boolean ``pred`` and ``target`` of shape (B, ...): two float tensors (B,)."""
    p, g = pred.flatten(1).bool(), target.flatten(1).bool()
    inter = (p & g).sum(1).double()
    p_sum, g_sum = p.sum(1).double(), g.sum(1).double()
    union = p_sum + g_sum - inter
    empty = union == 0
    dice = torch.where(empty, 1.0, 2 * inter / (p_sum + g_sum).clamp_min(1))
    iou = torch.where(empty, 1.0, inter / union.clamp_min(1))
    return dice.float(), iou.float()


def dice_iou_from_logits(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Per-image Dice/IoU of logits (B, 1, H, W) against a same-size mask: sigmoid > 0.5 vs target > 0.5."""
    return dice_iou(torch.sigmoid(logits.float()) > 0.5, target > 0.5)


def dice_iou_original(logits: Tensor, masks: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Per-image Dice/IoU at each mask's own resolution: logits (B, 1, S, S) resized bilinearly to (H_i, W_i).

    Scores at the original resolution are what a reader compares across models with different input sizes.
    """
    dices, ious = [], []
    for logit, mask in zip(logits, masks, strict=True):
        size = tuple(mask.shape[-2:])
        up = F.interpolate(logit[None].float(), size=size, mode="bilinear", align_corners=False)
        d, i = dice_iou_from_logits(up, mask.reshape(1, 1, *size).float())
        dices.append(d)
        ious.append(i)
    if not dices:
        return torch.zeros(0), torch.zeros(0)
    return torch.cat(dices), torch.cat(ious)


def mean_std(values: Sequence[float] | np.ndarray | Tensor) -> tuple[float, float]:
    """Mean and population standard deviation (ddof 0, as numpy's default); NaN for no values."""
    arr = np.asarray(values.cpu() if isinstance(values, Tensor) else values, dtype=np.float64)
    if arr.size == 0:
        return float("nan"), float("nan")
    return float(arr.mean()), float(arr.std())
