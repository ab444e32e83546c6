"""CoOp: learnable text context tokens inserted right after BOS (docs/science.md §2.1, §2.2, §2.4)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from .impl import LearnerContext, PromptConfigError, PromptLearner, check_depth, check_num_context, layer_span

CONTEXT_STD = 0.02  # CoOp's N(0, 0.02) for rows not initialised from words


def context_tensor(depth: int, num_context: int, width: int, init_vectors: torch.Tensor | None = None) -> nn.Parameter:
    """(depth, num_context, width) drawn from N(0, 0.02); row 0 replaced by ``init_vectors`` when given."""
    context = torch.empty(depth, num_context, width).normal_(0.0, CONTEXT_STD)
    if init_vectors is not None:
        context[0] = init_vectors.to(context.dtype)
    return nn.Parameter(context)


def init_words(init_text: str | None) -> str:
    return f"row 0 from {init_text!r}, others N(0, {CONTEXT_STD})" if init_text else f"N(0, {CONTEXT_STD})"


class CoOpLearner(PromptLearner):
    """One parameter ``context`` (depth, num_context, text_width); row k feeds text layer k+1."""

    towers: ClassVar[frozenset[str]] = frozenset({"text"})

    @classmethod
    def from_params(cls, params: Mapping[str, Any], ctx: LearnerContext) -> CoOpLearner:
        return build_coop(params, ctx)

    def __init__(
        self,
        depth: int,
        num_context: int,
        text_width: int,
        init_vectors: torch.Tensor | None = None,
        init_text: str | None = None,
    ):
        super().__init__(depth, num_context)
        self.context = context_tensor(depth, num_context, text_width, init_vectors)
        self.init_text = init_text

    def text_context(self, k: int, image_features: torch.Tensor | None = None) -> torch.Tensor:
        return self.context[k].unsqueeze(0)

    def describe(self) -> list[str]:
        return [
            f"text: {self.num_context} learned tokens after BOS, fresh at text {layer_span(self.depth)} "
            f"(CoOp, context {tuple(self.context.shape)}, {init_words(self.init_text)})"
        ]


def words_to_vectors(text: str, num_context: int, ctx: LearnerContext) -> torch.Tensor:
    """Embed ``text`` (no BOS/EOS) with the frozen token table; its token count must equal ``num_context``.

    The original silently took ``num_context`` from the token count of the words (docs/science.md §2.1); here a
    mismatch is an error, so the configured ``num_context`` always means what it says.
    """
    ids = ctx.tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != num_context:
        raise PromptConfigError(
            f"context_init {text!r} is {len(ids)} tokens but num_context is {num_context}: set num_context: "
            f"{len(ids)}, choose words that make {num_context} tokens, or set context_init: null for random init"
        )
    with torch.no_grad():
        weight = ctx.token_embedding.weight
        return weight[torch.tensor(ids, device=weight.device)].detach().clone().float().cpu()


def text_init(params: Mapping[str, Any], ctx: LearnerContext) -> tuple[int, int, torch.Tensor | None, str | None]:
    """Checked (depth, num_context, row-0 vectors or None, init words or None) of a text-prompting strategy."""
    depth, num_context = int(params["prompt_depth"]), int(params["num_context"])
    check_depth(depth, frozenset({"text"}), ctx)
    check_num_context(num_context)
    init_text = params.get("context_init") or None
    vectors = None if init_text is None else words_to_vectors(init_text, num_context, ctx)
    return depth, num_context, vectors, init_text


def build_coop(params: Mapping[str, Any], ctx: LearnerContext) -> CoOpLearner:
    """Build from resolved strategy parameters (prompt_depth, num_context, context_init)."""
    depth, num_context, vectors, init_text = text_init(params, ctx)
    return CoOpLearner(depth, num_context, ctx.text_width, vectors, init_text)
