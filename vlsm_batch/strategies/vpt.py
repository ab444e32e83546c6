"""VPT-deep: learnable visual tokens appended after the patch + position embeddings (docs/science.md §2.3, §3.1).

They enter before CLIP's pre-LayerNorm, are replaced by fresh rows at the input of vision layers 2..depth, pass
through the decoder with the other tokens and are dropped just before the 22x22 reshape (the model wrapper does
the placing). Random N(0, 0.02) init, one row per vision layer that runs (see ``LearnerContext.vision_rows``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from .coop import CONTEXT_STD, context_tensor
from .impl import LearnerContext, PromptLearner, check_depth, check_num_context, layer_span


class VPTLearner(PromptLearner):
    towers: ClassVar[frozenset[str]] = frozenset({"vision"})

    @classmethod
    def from_params(cls, params: Mapping[str, Any], ctx: LearnerContext) -> VPTLearner:
        return build_vpt(params, ctx)

    def __init__(self, depth: int, num_context: int, vision_width: int, vision_rows: int):
        super().__init__(depth, num_context, vision_rows)
        self.context = context_tensor(vision_rows, num_context, vision_width)

    def vision_context(self, k: int) -> torch.Tensor:
        return self.context[k].unsqueeze(0)

    def describe(self) -> list[str]:
        return [
            f"vision: {self.num_context} learned tokens appended after patch+position embeddings (before the "
            f"pre-LayerNorm), fresh at vision {layer_span(self.vision_rows, self.depth)}, kept through the decoder "
            f"and dropped before the reshape (VPT-deep, context {tuple(self.context.shape)}, N(0, {CONTEXT_STD}))"
        ]


def build_vpt(params: Mapping[str, Any], ctx: LearnerContext) -> VPTLearner:
    depth, num_context = int(params["prompt_depth"]), int(params["num_context"])
    check_depth(depth, VPTLearner.towers, ctx)
    check_num_context(num_context)
    assert ctx.vision_width is not None
    return VPTLearner(depth, num_context, ctx.vision_width, ctx.vision_rows(depth))
