"""A two-step Lightning fit on a prompted model, shared by the CLIPSeg and CRIS tests (imports torch/Lightning)."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader

from vlsm_batch.training.module import SegmentationModule


class _Check(pl.Callback):
    """Records, before each training batch, whether any module of the frozen backbone is in training mode."""

    def __init__(self, backbone: nn.Module) -> None:
        self.backbone, self.seen = backbone, []

    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch: Any, idx: int) -> None:
        self.seen.append(any(m.training for m in self.backbone.modules()))
        assert module.model.learner.training


def assert_frozen_through_fit(model: nn.Module, backbone: nn.Module, inputs: dict[str, torch.Tensor]) -> None:
    """Two AdamW steps (weight decay on) through Lightning: ``backbone`` stays in eval mode and bit-for-bit
    unchanged, buffers (BatchNorm running statistics) included; the prompt learner trains."""
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    size = inputs["pixel_values"].shape[-1]
    samples = [
        {**{k: v[i] for k, v in inputs.items()}, "mask": (torch.rand(1, size, size) > 0.5).float(), "index": i}
        for i in range(2)
    ]
    loader = DataLoader(samples, batch_size=2)
    module = SegmentationModule(model, lambda b, training, generator=None: b, lr=1e-2, weight_decay=0.01)
    check = _Check(backbone)
    trainer = pl.Trainer(
        max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[check], num_sanity_val_steps=0, accelerator="cpu",
    )  # fmt: skip
    trainer.fit(module, loader, loader)
    assert check.seen == [False, False]
    for k, v in backbone.state_dict().items():
        assert torch.equal(v, before[k]), k  # weight decay never touched a frozen weight
