"""DiceCE on logits, as TuneVLSeg configured MONAI's DiceCELoss (sigmoid, lambda_dice 1, lambda_ce 0.2).

Written here so that training does not depend on MONAI: BCE-with-logits (the single-channel CE term) plus soft
Dice per sample with smooth 1e-5 on numerator and denominator, averaged over the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def dice_ce_loss(
    logits: Tensor,
    target: Tensor,
    lambda_dice: float = 1.0,
    lambda_ce: float = 0.2,
    smooth: float = 1e-5,
    reduction: str = "mean",
) -> Tensor:
    """Loss of logits (B, 1, H, W) against a float mask of the same shape; ``reduction="none"`` gives (B,).

    Computed in float32 so that mixed precision does not degrade the sums.
    """
    logits, target = logits.float(), target.float()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1).mean(1)
    prob = torch.sigmoid(logits).flatten(1)
    tgt = target.flatten(1)
    inter = (prob * tgt).sum(1)
    denom = prob.sum(1) + tgt.sum(1)
    dice = 1.0 - (2.0 * inter + smooth) / (denom + smooth)
    per_sample = lambda_dice * dice + lambda_ce * bce
    if reduction == "none":
        return per_sample
    if reduction == "mean":
        return per_sample.mean()
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


class DiceCELoss(nn.Module):
    """Module wrapper of ``dice_ce_loss`` with the TuneVLSeg weights as defaults."""

    def __init__(self, lambda_dice: float = 1.0, lambda_ce: float = 0.2, smooth: float = 1e-5):
        super().__init__()
        self.lambda_dice, self.lambda_ce, self.smooth = lambda_dice, lambda_ce, smooth

    def forward(self, logits: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
        return dice_ce_loss(logits, target, self.lambda_dice, self.lambda_ce, self.smooth, reduction)
