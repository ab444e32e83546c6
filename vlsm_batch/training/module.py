"""The LightningModule of a trial: loss, per-image validation metrics, multi-tensor AdamW + ReduceLROnPlateau.

Checkpoints hold only the trainable parameters (plus buffers): the frozen encoders are rebuilt from their weights
(or from the seed), so a prompt-tuning checkpoint is kilobytes instead of the whole VLSM.

Resuming is exact: every epoch's random streams (data order and prompt draws in the sampler, augmentation here,
dropout through the global generator) are seeded from (trial seed, epoch), and the plateau scheduler is stepped
before the epoch's checkpoint is written (Lightning steps it after), so a requeued trial ends with the same
parameters as an uninterrupted one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from ..metrics import VAL_DICE, VAL_IOU, VAL_LOSS
from ..metrics.segmentation import dice_iou_from_logits, dice_iou_original
from .data import Batch, BatchTransform, stream_seed
from .loss import dice_ce_loss
from .optim import make_adamw

if TYPE_CHECKING:
    from ..models.prompted import PromptedSegmenter


class SegmentationModule(pl.LightningModule):
    """Wraps a PromptedSegmenter (``forward(pixel_values, input_ids, attention_mask) -> (B, 1, S, S)``)."""

    def __init__(
        self, model: PromptedSegmenter, transform: BatchTransform, lr: float, weight_decay: float, seed: int = 0
    ):
        super().__init__()
        self.model: PromptedSegmenter = model
        self.transform = transform
        self.lr, self.weight_decay, self.seed = float(lr), float(weight_decay), int(seed)
        self.strict_loading = False  # checkpoints carry only trainable parameters; checked in on_load_checkpoint
        self._val_dice: list[Tensor] = []
        self._val_iou: list[Tensor] = []
        self._augment: torch.Generator | None = None
        self._plateau: torch.optim.lr_scheduler.ReduceLROnPlateau | None = None
        self._plateau_state: dict[str, Any] | None = None  # from a checkpoint, applied once the scheduler exists

    def on_train_epoch_start(self) -> None:
        epoch = self.current_epoch
        torch.manual_seed(stream_seed(self.seed, epoch, "model"))  # dropout and any other draw of the model
        self._augment = torch.Generator(self.device).manual_seed(stream_seed(self.seed, epoch, "augment"))

    def forward(self, batch: Batch) -> Tensor:
        return self.model(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])

    def on_after_batch_transfer(self, batch: Batch, dataloader_idx: int) -> Batch:
        """Augment (training only) and normalise on the device the batch has just reached."""
        training = self.trainer.training
        return self.transform(batch, training=training, generator=self._augment if training else None)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        loss = dice_ce_loss(self(batch), batch["mask"])
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(batch["index"]))
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_dice.clear()
        self._val_iou.clear()

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        logits = self(batch)
        loss = dice_ce_loss(logits, batch["mask"])
        self.log(VAL_LOSS, loss, on_step=False, on_epoch=True, batch_size=len(batch["index"]))
        dice, iou = dice_iou_from_logits(logits, batch["mask"])  # model resolution, per image
        self._val_dice.append(dice.detach())
        self._val_iou.append(iou.detach())

    def on_validation_epoch_end(self) -> None:
        # Per-image mean over the whole epoch (the original's global IoU mixed conventions, docs/science.md §8.4).
        if self._val_dice:
            self.log(VAL_DICE, torch.cat(self._val_dice).mean())
            self.log(VAL_IOU, torch.cat(self._val_iou).mean())

    def predict_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        """Per-image loss (model resolution) and Dice/IoU at each mask's original resolution."""
        logits = self(batch)
        loss = dice_ce_loss(logits, batch["mask"], reduction="none")
        dice, iou = dice_iou_original(logits, batch["original_masks"])
        return {"loss": loss.cpu(), "dice": dice.cpu(), "iou": iou.cpu()}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # weight_decay 0 means no decay: the original passed AdamW's default 0.01 then (docs/science.md §8.6).
        groups = self.model.param_groups(self.weight_decay)
        # multi-tensor AdamW (fused on CUDA and CPU, else foreach), not torch's per-tensor loop on CPU (training.optim)
        optimizer = make_adamw(groups, self.lr, self.weight_decay, self.device.type)
        # Stepped here, on val/loss, at the end of each training epoch (see on_train_epoch_end), not by Lightning.
        self._plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.2, patience=5)
        if self._plateau_state is not None:
            self._plateau.load_state_dict(self._plateau_state)
        return optimizer

    def on_train_epoch_end(self) -> None:
        """Step the plateau scheduler after validation and before the checkpoint callbacks (which Lightning runs
        after this hook) so that the epoch's checkpoint holds the stepped state."""
        val_loss = self.trainer.callback_metrics.get(VAL_LOSS)
        if self._plateau is not None and val_loss is not None:
            self._plateau.step(float(val_loss))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        keep = {f"model.{n}" for n, p in self.model.named_parameters() if p.requires_grad}
        keep |= {f"model.{n}" for n, _ in self.model.named_buffers()}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        if self._plateau is not None:
            checkpoint["plateau"] = self._plateau.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Non-strict loading must still find every trainable parameter, or the checkpoint is not this model's."""
        self._plateau_state = checkpoint.get("plateau")
        want = {f"model.{n}" for n, p in self.model.named_parameters() if p.requires_grad}
        missing = sorted(want - checkpoint["state_dict"].keys())
        if missing:
            raise RuntimeError(
                f"checkpoint lacks {len(missing)} trainable parameter(s) of this model, e.g. {missing[:3]}: "
                "it was written by a different model or strategy"
            )
