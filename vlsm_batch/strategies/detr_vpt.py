"""VPT-deep in SAM 3's DETR fusion encoder (docs/science.md §9): learnable tokens appended to the image tokens.

SAM 3's ViT attends within 24 x 24-patch windows in 28 of its 32 layers, with 2-D rotary positions: an appended
token would belong to no window and have no position, so VPT in the ViT is not defined there. The DETR encoder
that fuses the image tokens (72 x 72 at 1008 px) with the text runs global self-attention (plus cross-attention
to the text) on a flat sequence with additive sine positions, which is where VPT-deep applies as written: row k
is appended at the input of encoder layer k+1 (position encoding zero for the prompt slots), replacing what layer
k produced there; the tokens are dropped after the encoder, before the mask decoder reads the image grid. The ViT
and FPN neck run frozen, without gradient, and are computed once per batch for a whole pack.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from .coop import CONTEXT_STD, context_tensor
from .impl import LearnerContext, PromptConfigError, PromptLearner, check_depth, check_num_context, layer_span


class DetrVPTLearner(PromptLearner):
    towers: ClassVar[frozenset[str]] = frozenset({"fusion"})

    @classmethod
    def from_params(cls, params: Mapping[str, Any], ctx: LearnerContext) -> DetrVPTLearner:
        depth, num_context = int(params["prompt_depth"]), int(params["num_context"])
        check_depth(depth, cls.towers, ctx)
        check_num_context(num_context)
        if ctx.fusion_width is None:
            raise PromptConfigError(f"{ctx.model_name} has no fusion encoder to prompt")
        return cls(depth, num_context, ctx.fusion_width)

    def __init__(self, depth: int, num_context: int, fusion_width: int):
        super().__init__(depth, num_context)
        self.context = context_tensor(depth, num_context, fusion_width)

    def fusion_context(self, k: int) -> torch.Tensor:
        return self.context[k].unsqueeze(0)

    def describe(self) -> list[str]:
        return [
            f"fusion: {self.num_context} learned tokens appended to the image tokens of the DETR encoder (position "
            f"encoding 0), fresh at encoder {layer_span(self.depth)}, dropped before the mask decoder (VPT-deep in "
            f"the fusion encoder, context {tuple(self.context.shape)}, N(0, {CONTEXT_STD}))"
        ]
