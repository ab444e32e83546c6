"""Multimodal strategies that prompt both CLIPSeg towers (docs/science.md §3.1): MaPLe, Shared-Separate and
Shared-Attention. Text rows exist for layers 1..depth; visual rows for the vision layers that run (CLIPSeg stops at
layer 10, so depth 11 has 10 visual rows; see ``LearnerContext.vision_rows``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from .coop import CONTEXT_STD, context_tensor, init_words, text_init
from .impl import (
    LearnerContext,
    PromptConfigError,
    PromptLearner,
    Prompts,
    check_depth,
    check_num_context,
    layer_span,
)
from .projections import ProjectionStack, make_projection

_BOTH = frozenset({"text", "vision"})


def _placement(learner: PromptLearner) -> list[str]:
    return [
        f"text: {learner.num_context} tokens after BOS, fresh at text {layer_span(learner.text_rows)}",
        f"vision: {learner.num_context} tokens appended before the pre-LayerNorm, fresh at vision "
        f"{layer_span(learner.vision_rows, learner.depth)}, dropped before the decoder reshape",
    ]


def _hidden(params: Mapping[str, Any]) -> int | None:
    value = params.get("intermediate_dim")
    return None if value is None else int(value)


def _depth(params: Mapping[str, Any], ctx: LearnerContext) -> tuple[int, int]:
    depth, num_context = int(params["prompt_depth"]), int(params["num_context"])
    check_depth(depth, _BOTH, ctx)
    check_num_context(num_context)
    return depth, num_context


# -- MaPLe ------------------------------------------------------------------------------------------------------------
class MaPLeLearner(PromptLearner):
    """Text context (depth, n, Dt); the vision tokens of depth k are ``proj_k(context[k])`` (Dt -> Dv)."""

    towers: ClassVar[frozenset[str]] = _BOTH

    @classmethod
    def from_params(cls, params: Mapping[str, Any], ctx: LearnerContext) -> MaPLeLearner:
        return build_maple(params, ctx)

    def __init__(
        self,
        depth: int,
        num_context: int,
        text_width: int,
        vision_width: int,
        vision_rows: int,
        hidden: int | None,
        use_lora: bool,
        shared_projection: bool,
        init_vectors: torch.Tensor | None = None,
        init_text: str | None = None,
    ):
        super().__init__(depth, num_context, vision_rows)
        self.context = context_tensor(depth, num_context, text_width, init_vectors)
        self.init_text = init_text
        self.to_vision = ProjectionStack(
            vision_rows, shared_projection, lambda: make_projection(text_width, vision_width, hidden, use_lora=use_lora)
        )

    def text_context(self, k: int, image_features: torch.Tensor | None = None) -> torch.Tensor:
        return self.context[k].unsqueeze(0)

    def vision_context(self, k: int) -> torch.Tensor:
        return self.to_vision(k, self.context[k]).unsqueeze(0)

    def describe(self) -> list[str]:
        text, vision = _placement(self)
        return [
            f"{text} (MaPLe, context {tuple(self.context.shape)}, {init_words(self.init_text)})",
            f"{vision}: text->vision projection of the same row ({self.to_vision.describe()})",
        ]


def build_maple(params: Mapping[str, Any], ctx: LearnerContext) -> MaPLeLearner:
    depth, num_context, vectors, init_text = text_init(params, ctx)
    check_depth(depth, _BOTH, ctx)
    assert ctx.vision_width is not None
    return MaPLeLearner(
        depth,
        num_context,
        ctx.text_width,
        ctx.vision_width,
        ctx.vision_rows(depth),
        _hidden(params),
        bool(params.get("use_lora", False)),
        bool(params.get("shared_projection", False)),
        vectors,
        init_text,
    )


# -- Shared-Separate -------------------------------------------------------------------------------------------------
class SharedSeparateLearner(PromptLearner):
    """Context (depth, n, s) in a shared space, projected per depth to text (s -> Dt) and vision (s -> Dv)."""

    towers: ClassVar[frozenset[str]] = _BOTH

    @classmethod
    def from_params(cls, params: Mapping[str, Any], ctx: LearnerContext) -> SharedSeparateLearner:
        return build_shared_separate(params, ctx)

    def __init__(
        self,
        depth: int,
        num_context: int,
        shared_dim: int,
        text_width: int,
        vision_width: int,
        vision_rows: int,
        hidden: int | None,
        use_lora: bool,
        shared_projection: bool,
    ):
        super().__init__(depth, num_context, vision_rows)
        self.context = context_tensor(depth, num_context, shared_dim)

        def proj(out: int) -> nn.Module:
            return make_projection(shared_dim, out, hidden, use_lora=use_lora)

        self.to_text = ProjectionStack(depth, shared_projection, lambda: proj(text_width))
        self.to_vision = ProjectionStack(vision_rows, shared_projection, lambda: proj(vision_width))

    def text_context(self, k: int, image_features: torch.Tensor | None = None) -> torch.Tensor:
        return self.to_text(k, self.context[k]).unsqueeze(0)

    def vision_context(self, k: int) -> torch.Tensor:
        return self.to_vision(k, self.context[k]).unsqueeze(0)

    def describe(self) -> list[str]:
        text, vision = _placement(self)
        shape = tuple(self.context.shape)
        return [
            f"{text}: projection of the shared row ({self.to_text.describe()}; "
            f"Shared-Separate, shared context {shape}, N(0, {CONTEXT_STD}))",
            f"{vision}: projection of the same shared row ({self.to_vision.describe()})",
        ]


def build_shared_separate(params: Mapping[str, Any], ctx: LearnerContext) -> SharedSeparateLearner:
    depth, num_context = _depth(params, ctx)
    assert ctx.vision_width is not None
    shared_dim = int(params["shared_dim"])
    if shared_dim < 1:
        raise PromptConfigError(f"shared_dim must be at least 1, not {shared_dim}")
    return SharedSeparateLearner(
        depth,
        num_context,
        shared_dim,
        ctx.text_width,
        ctx.vision_width,
        ctx.vision_rows(depth),
        _hidden(params),
        bool(params.get("use_lora", False)),
        bool(params.get("shared_projection", False)),
    )


# -- Shared-Attention -------------------------------------------------------------------------------------------------
class SharedAttnLearner(PromptLearner):
    """Joint context (depth, n, Dt + Dv) through a transformer encoder layer per depth, split to both towers.

    With ``attend_across_tokens`` (default) the n prompt tokens of a depth form one sequence and attend to each
    other. The original called a ``batch_first=False`` layer on (1, n, E), i.e. n sequences of length 1: softmax over
    a single key is 1 and the query/key projections do nothing (docs/science.md §3.1, §8.10); ``attend_across_tokens:
    false`` reproduces that. The joint transform runs once per depth and forward pass, on the device, and both
    towers read its halves (the original round-tripped the text half through host memory).
    """

    towers: ClassVar[frozenset[str]] = _BOTH

    @classmethod
    def from_params(cls, params: Mapping[str, Any], ctx: LearnerContext) -> SharedAttnLearner:
        return build_shared_attn(params, ctx)

    def __init__(
        self,
        depth: int,
        num_context: int,
        text_width: int,
        vision_width: int,
        vision_rows: int,
        num_heads: int,
        ffn_dim: int,
        dropout: float,
        norm_first: bool,
        attend_across_tokens: bool,
        shared_projection: bool,
    ):
        super().__init__(depth, num_context, vision_rows)
        joint = text_width + vision_width
        if joint % num_heads:
            raise PromptConfigError(f"num_heads {num_heads} does not divide the joint width {joint}")
        self.text_width, self.attend_across_tokens = text_width, attend_across_tokens
        self.context = context_tensor(depth, num_context, joint)
        self.joint = ProjectionStack(
            depth,
            shared_projection,
            lambda: nn.TransformerEncoderLayer(
                joint, num_heads, ffn_dim, dropout, norm_first=norm_first, batch_first=True
            ),
        )

    def _joint(self, k: int) -> torch.Tensor:
        row = self.context[k]  # (n, E)
        if self.attend_across_tokens:
            return self.joint(k, row.unsqueeze(0))  # one sequence of n tokens
        return self.joint(k, row.unsqueeze(1)).transpose(0, 1)  # n sequences of one token (the original)

    def forward(self, image_features: torch.Tensor | None = None) -> Prompts:
        joint = [self._joint(k) for k in range(self.depth)]
        return Prompts(
            text=[j[..., : self.text_width] for j in joint],
            vision=[j[..., self.text_width :] for j in joint[: self.vision_rows]],
        )

    def describe(self) -> list[str]:
        text, vision = _placement(self)
        layer = self.joint.blocks[0]
        assert isinstance(layer, nn.TransformerEncoderLayer)  # what __init__ builds
        heads = layer.self_attn.num_heads
        attend = "across the n tokens" if self.attend_across_tokens else "per token (original behaviour)"
        return [
            f"{text}: first {self.text_width} dims of the joint tokens (Shared-Attention, joint context "
            f"{tuple(self.context.shape)}, N(0, {CONTEXT_STD}); {self.joint.describe()} with {heads} heads, "
            f"FFN {layer.linear1.out_features}, attention {attend})",
            f"{vision}: last {self.context.shape[-1] - self.text_width} dims of the same joint tokens",
        ]


def build_shared_attn(params: Mapping[str, Any], ctx: LearnerContext) -> SharedAttnLearner:
    depth, num_context = _depth(params, ctx)
    assert ctx.vision_width is not None
    return SharedAttnLearner(
        depth,
        num_context,
        ctx.text_width,
        ctx.vision_width,
        ctx.vision_rows(depth),
        int(params["num_heads"]),
        int(params["ffn_dim"]),
        float(params["dropout"]),
        bool(params["norm_first"]),
        bool(params.get("attend_across_tokens", True)),
        bool(params.get("shared_projection", False)),
    )
