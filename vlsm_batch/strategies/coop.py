"""CoOp: learnable text context tokens inserted right after BOS (reference §2.1, §2.2, §2.4)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from .impl import LearnerContext, PromptConfigError, PromptLearner, check_depth

CONTEXT_STD = 0.02  # CoOp's N(0, 0.02) for rows not initialised from words


class CoOpLearner(PromptLearner):
    """One parameter ``context`` (depth, num_context, text_width); row k feeds text layer k+1."""

    strategy: ClassVar[str] = "coop"
    towers: ClassVar[frozenset[str]] = frozenset({"text"})

    def __init__(
        self,
        depth: int,
        num_context: int,
        text_width: int,
        init_vectors: torch.Tensor | None = None,
        init_text: str | None = None,
    ):
        super().__init__(depth, num_context)
        context = torch.empty(depth, num_context, text_width).normal_(0.0, CONTEXT_STD)
        if init_vectors is not None:
            context[0] = init_vectors.to(context.dtype)
        self.context = nn.Parameter(context)
        self.init_text = init_text

    def text_context(self, k: int, batch_size: int, image_features: torch.Tensor | None = None) -> torch.Tensor:
        return self.context[k].unsqueeze(0).expand(batch_size, -1, -1)

    def describe(self) -> list[str]:
        init = f"row 0 from {self.init_text!r}" if self.init_text is not None else "random rows"
        layers = "layer 1" if self.depth == 1 else f"layers 1..{self.depth}"
        return [
            f"text: {self.num_context} learned tokens after BOS, fresh at text {layers} "
            f"(CoOp, context {tuple(self.context.shape)}, {init}, others N(0, {CONTEXT_STD}))"
        ]


def words_to_vectors(text: str, num_context: int, ctx: LearnerContext) -> torch.Tensor:
    """Embed ``text`` (no BOS/EOS) with the frozen token table; its token count must equal ``num_context``."""
    ids = ctx.tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != num_context:
        raise PromptConfigError(
            f"context_init {text!r} is {len(ids)} tokens but num_context is {num_context}: set num_context: "
            f"{len(ids)}, choose words that make {num_context} tokens, or set context_init: null for random init"
        )
    with torch.no_grad():
        weight = ctx.token_embedding.weight
        return weight[torch.tensor(ids, device=weight.device)].detach().clone().float().cpu()


def build_coop(params: Mapping[str, Any], ctx: LearnerContext) -> CoOpLearner:
    """Build from resolved strategy parameters (prompt_depth, num_context, context_init)."""
    depth, num_context = int(params["prompt_depth"]), int(params["num_context"])
    check_depth(depth, CoOpLearner.towers, ctx)
    if num_context < 1:
        raise PromptConfigError(f"num_context must be at least 1, not {num_context}")
    init_text = params.get("context_init")
    vectors = None if init_text is None else words_to_vectors(init_text, num_context, ctx)
    return CoOpLearner(depth, num_context, ctx.text_width, vectors, init_text)
