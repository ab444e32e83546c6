"""Prompt learners: the base class every strategy implements, and the registry the model builders read.

A learner owns all trainable prompt parameters of a strategy and hands out, per depth index k (0-based), the
fresh tokens that enter tower layer k+1. The model wrapper decides where they go (after BOS for text, appended
for vision) and when; the learner only decides what they are. Each strategy's catalog entry names its learner class
("module:Class", ``StrategyInfo.learner``), imported only here, so new strategies can sit in their own files.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import VlsmBatchError
from . import ModelLike, StrategyInfo, get_strategy, incompatibility, refusal


class StrategyNotImplementedError(VlsmBatchError):
    """The strategy is in the catalog but this build has no model code for it."""


class PromptConfigError(VlsmBatchError):
    """Strategy parameters that cannot be built (e.g. num_context disagreeing with the init words)."""


@dataclass(frozen=True)
class LearnerContext:
    """What a learner may know about the model it prompts (frozen parts are read, never trained)."""

    model_name: str
    text_width: int
    text_layers: int
    vision_width: int | None
    vision_layers: int | None
    token_embedding: nn.Embedding  # frozen; used to turn init words into vectors
    tokenizer: Any  # transformers CLIPTokenizer
    vision_run_layers: int | None = None  # vision layers the model actually runs (CLIPSeg: deepest extract + 1)
    image_feature_dim: int | None = None  # width of the image feature CoCoOp's meta-net reads
    family: str | None = None  # model family, for the catalog's per-family refusals (None: not known here)
    towers: frozenset[str] | None = None  # where prompts can enter (None: text, and vision with vision layers)
    fusion_width: int | None = None  # token width of an image-text fusion encoder (SAM 3's DETR encoder)
    fusion_layers: int | None = None
    tower_notes: tuple[tuple[str, str], ...] = ()  # the model's reasons for towers it takes no prompts in

    @property
    def prompt_towers(self) -> frozenset[str]:
        """Towers this model can prompt: no vision transformer, no visual prompts."""
        if self.towers is not None:
            return self.towers
        return frozenset({"text", "vision"} if self.vision_layers else {"text"})

    def vision_rows(self, depth: int) -> int:
        """Visual prompt rows for ``depth``: rows for layers the model never runs would feed nothing.

        CLIPSeg runs its ViT only to layer 10, so depth 11 gets 10 visual rows (the original's 11th visual row
        reached the decoder only through its in-place overwrite leak, docs/science.md §8.12).
        """
        return min(depth, self.vision_run_layers or self.vision_layers or 0)


@dataclass
class Prompts:
    """The fresh tokens of one forward pass: ``text[k]`` / ``vision[k]`` enter layer k+1 of their tower.

    ``fusion[k]`` enters layer k+1 of an image-text fusion encoder (SAM 3's DETR encoder), appended to the image
    tokens. Each tensor is (1, n, width) when shared by the batch or (batch, n, width) when image-conditioned.
    """

    text: list[torch.Tensor] = field(default_factory=list)
    vision: list[torch.Tensor] = field(default_factory=list)
    fusion: list[torch.Tensor] = field(default_factory=list)


class PromptLearner(nn.Module):
    """Trainable prompt tokens for one strategy.

    ``depth`` rows of ``num_context`` tokens each: row k is written into the prompt slots at the input of layer
    k+1 of every prompted tower. Nothing exists for deeper layers.
    """

    towers: ClassVar[frozenset[str]]  # what this code prompts; must equal its catalog entry's towers
    needs_image_features: ClassVar[bool] = False  # CoCoOp-style learners condition on the image

    def __init__(self, depth: int, num_context: int, vision_rows: int = 0):
        super().__init__()
        self.depth = depth
        self.num_context = num_context
        self.text_rows = depth if "text" in self.towers else 0
        self.vision_rows = vision_rows if "vision" in self.towers else 0
        self.fusion_rows = depth if "fusion" in self.towers else 0

    def text_context(self, k: int, image_features: torch.Tensor | None = None) -> torch.Tensor:
        """Text prompt tokens (1 or batch, num_context, text_width) for depth index ``k``."""
        raise NotImplementedError(f"{type(self).__name__} does not prompt the text tower")

    def vision_context(self, k: int) -> torch.Tensor:
        """Visual prompt tokens (1, num_context, vision_width) for depth index ``k``."""
        raise NotImplementedError(f"{type(self).__name__} does not prompt the vision tower")

    def fusion_context(self, k: int) -> torch.Tensor:
        """Fusion-encoder prompt tokens (1, num_context, fusion_width) for depth index ``k``."""
        raise NotImplementedError(f"{type(self).__name__} does not prompt a fusion encoder")

    def forward(self, image_features: torch.Tensor | None = None) -> Prompts:
        """All prompt tokens of one forward pass (learners that share work across towers override this)."""
        return Prompts(
            text=[self.text_context(k, image_features) for k in range(self.text_rows)],
            vision=[self.vision_context(k) for k in range(self.vision_rows)],
            fusion=[self.fusion_context(k) for k in range(self.fusion_rows)],
        )

    def describe(self) -> list[str]:
        """One line per place prompts enter, for ``describe``."""
        return []

    @classmethod
    def from_params(cls, params: Mapping[str, Any], ctx: LearnerContext) -> PromptLearner:
        """Build from resolved strategy parameters (every declared one present), checked against the model."""
        raise NotImplementedError(f"{cls.__name__} does not say how to build itself from parameters")


LearnerBuilder = Callable[[Mapping[str, Any], LearnerContext], PromptLearner]


def resolve_params(strategy: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The strategy's declared parameters with catalog defaults filled in; undeclared keys are ignored."""
    info = get_strategy(strategy)
    return {p.name: params.get(p.name, p.default) for p in info.params}


def refuse_inapplicable(strategy: str, model: ModelLike) -> None:
    """Raise with the catalog's reason when ``strategy`` never runs on ``model`` (vpt or decoder_finetune on CRIS),
    the reason validate and plan give for skipping the pair. The caller passes the model record."""
    reason = refusal(get_strategy(strategy), model)
    if reason:
        raise StrategyNotImplementedError(reason)


def learner_class(info: StrategyInfo) -> type[PromptLearner] | None:
    """The learner class the catalog entry names (None: no prompts), checked to prompt the entry's towers."""
    if info.learner is None:
        if info.towers:
            raise StrategyNotImplementedError(f"strategy {info.name!r} is not implemented in this build")
        return None
    module_name, _, class_name = info.learner.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, PromptLearner)):
        raise StrategyNotImplementedError(f"strategy {info.name!r}: {info.learner} is not a PromptLearner class")
    if cls.towers != info.towers:
        raise StrategyNotImplementedError(
            f"strategy {info.name!r}: {info.learner} prompts {sorted(cls.towers)}, the catalog says "
            f"{sorted(info.towers)}"
        )
    return cls


def build_prompt_learner(strategy: str, params: Mapping[str, Any], ctx: LearnerContext) -> PromptLearner | None:
    """Build the learner of ``strategy`` (None: no prompts), or say plainly that this build lacks it or that the
    pair does not apply (by the towers the context shows, and its family when the model passed one)."""
    info = get_strategy(strategy)  # unknown names raise the catalog's error with close matches
    reason = incompatibility(info, ctx.prompt_towers, ctx.model_name, ctx.family, ctx.tower_notes)
    if reason:
        raise StrategyNotImplementedError(reason)
    cls = learner_class(info)
    return None if cls is None else cls.from_params(resolve_params(strategy, params), ctx)


def layer_span(rows: int, depth: int | None = None) -> str:
    """Text "layer 1" or "layers 1..rows" for describe lines; notes rows cut below ``depth`` (vision stops early)."""
    span = "layer 1" if rows == 1 else f"layers 1..{rows}"
    if depth is not None and rows < depth:
        span += f" (prompt_depth {depth}: the model runs no vision layer above {rows})"
    return span


def check_num_context(num_context: int) -> None:
    if num_context < 1:
        raise PromptConfigError(f"num_context must be at least 1, not {num_context}")


def check_depth(depth: int, towers: frozenset[str], ctx: LearnerContext) -> None:
    """1 <= depth <= layers of every prompted tower (fresh tokens at layers 1..depth)."""
    limits = {"text": ctx.text_layers, "vision": ctx.vision_layers, "fusion": ctx.fusion_layers}
    for tower in sorted(towers):
        layers = limits[tower]
        if layers is None:
            raise PromptConfigError(f"{ctx.model_name} has no {tower} transformer to prompt")
        if not 1 <= depth <= layers:
            raise PromptConfigError(
                f"prompt_depth {depth} is outside 1..{layers} for the {tower} tower of {ctx.model_name}"
            )
