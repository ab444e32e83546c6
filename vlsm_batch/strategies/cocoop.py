"""CoCoOp: CoOp's context plus an image-conditioned shift from a meta-net per depth (docs/science.md §3.1).

Prompt of depth index k for image i: ``context[k] + metanet_k(f_i)``, the same shift for all n tokens. ``f_i`` is
CLIPSeg's projected CLS embedding of the *stock, prompt-free* 12-layer vision pass,
``visual_projection(post_layernorm(CLS))``, not L2-normalised (as in the shipped configs; docs/science.md §3.1). The
meta-net is a projection block (§2.5) with LayerNorm and no final bias, one per depth unless shared.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from .coop import CoOpLearner, text_init
from .impl import LearnerContext, PromptConfigError, layer_span
from .projections import ProjectionStack, make_projection


class CoCoOpLearner(CoOpLearner):
    needs_image_features: ClassVar[bool] = True

    @classmethod
    def from_params(cls, params: Mapping[str, Any], ctx: LearnerContext) -> CoCoOpLearner:
        return build_cocoop(params, ctx)

    def __init__(
        self,
        depth: int,
        num_context: int,
        text_width: int,
        image_dim: int,
        hidden: int | None,
        use_lora: bool,
        shared_projection: bool,
        init_vectors: torch.Tensor | None = None,
        init_text: str | None = None,
    ):
        super().__init__(depth, num_context, text_width, init_vectors, init_text)
        self.meta_net = ProjectionStack(
            depth,
            shared_projection,
            lambda: make_projection(image_dim, text_width, hidden, use_lora=use_lora, final_bias=False, norm=True),
        )

    def text_context(self, k: int, image_features: torch.Tensor | None = None) -> torch.Tensor:
        if image_features is None:
            raise ValueError("CoCoOp needs the image features of the batch")
        shift = self.meta_net(k, image_features.to(self.context.dtype))  # (B, text_width)
        return self.context[k].unsqueeze(0) + shift.unsqueeze(1)

    def describe(self) -> list[str]:
        return [
            f"text: {self.num_context} tokens after BOS per image, fresh at text {layer_span(self.depth)}: "
            f"context[k] + meta_net_k(image embedding) (CoCoOp, context {tuple(self.context.shape)}, "
            f"meta-net {self.meta_net.describe()})"
        ]


def build_cocoop(params: Mapping[str, Any], ctx: LearnerContext) -> CoCoOpLearner:
    depth, num_context, vectors, init_text = text_init(params, ctx)
    if ctx.image_feature_dim is None:
        raise PromptConfigError(f"{ctx.model_name} exposes no image embedding for CoCoOp's meta-net")
    hidden = params.get("intermediate_dim")
    return CoCoOpLearner(
        depth,
        num_context,
        ctx.text_width,
        ctx.image_feature_dim,
        None if hidden is None else int(hidden),
        bool(params.get("use_lora", False)),
        bool(params.get("shared_projection", False)),
        vectors,
        init_text,
    )
