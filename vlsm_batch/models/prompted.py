"""The interface the training loop uses: a frozen VLSM plus trainable prompts (and an optional head).

Everything the strategy does not own is frozen here once (``requires_grad_(False)``) and kept in eval mode by
``train()``, so Lightning's ``model.train()`` cannot switch dropout/normalisation of frozen parts back on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import VlsmBatchError
from ..strategies.impl import LearnerContext, PromptLearner, build_prompt_learner, resolve_params
from . import get_model_info

_DECAY_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d)


class ModelLoadError(VlsmBatchError):
    """Weights could not be loaded (no network, wrong path, incompatible checkpoint)."""


def freeze(module: nn.Module) -> nn.Module:
    """No gradient, eval mode: a frozen part behaves like inference code."""
    module.requires_grad_(False)
    return module.eval()


def seeded(build: Callable[[], nn.Module], seed: int = 0) -> Any:
    """Build with a fixed seed without disturbing the caller's random state (same random model every time)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def cap_tokens(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, max_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut to ``max_len`` columns; rows whose EOS falls beyond get EOS (and mask 1) in the last kept column.

    The EOS is the largest id of a row (CLIP's rule), so pooling at ``argmax(ids)`` still finds it. Works on the
    device with tensor ops only (no host sync).
    """
    if input_ids.shape[1] <= max_len:
        return input_ids, attention_mask
    eos_pos = input_ids.argmax(dim=-1, keepdim=True)
    eos_id = input_ids.gather(1, eos_pos)
    cut = eos_pos >= max_len
    ids = torch.cat([input_ids[:, : max_len - 1], torch.where(cut, eos_id, input_ids[:, max_len - 1 : max_len])], 1)
    last_mask = torch.where(cut, torch.ones_like(eos_id), attention_mask[:, max_len - 1 : max_len])
    return ids, torch.cat([attention_mask[:, : max_len - 1], last_mask.to(attention_mask.dtype)], 1)


class LearnableUpsampler(nn.Module):
    """docs/science.md §4.3 head: bilinear upsampling of the decoder features + 5x5 conv, blended with frozen logits.

    ``logits = (1 - r) * frozen + r * head`` with a free scalar ``r`` (init 0.5, unconstrained as in the original).
    """

    def __init__(self, in_channels: int, kernel_size: int = 5, ratio: float = 0.5):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 1, kernel_size, padding="same", padding_mode="replicate")
        self.residual_ratio = nn.Parameter(torch.tensor(float(ratio)))

    def forward(self, features: torch.Tensor, frozen_logits: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(features, size=frozen_logits.shape[-2:], mode="bilinear", align_corners=False)
        r = self.residual_ratio
        return (1 - r) * frozen_logits + r * self.conv(up)


class PromptedSegmenter(nn.Module):
    """A class-agnostic binary segmenter: (image, prompt) -> logits (B, 1, image_size, image_size).

    Subclasses hold the frozen model and implement ``forward``; this base class owns tokenisation, freezing,
    optimizer groups and bookkeeping.
    """

    image_size: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    sentence_end = "."  # appended to prompts that lack it (CLIP-based models, as TuneVLSeg); "" leaves them as they are

    def __init__(
        self,
        *,
        tokenizer: Any,
        image_size: int,
        image_mean: tuple[float, float, float],
        image_std: tuple[float, float, float],
        max_text_tokens: int,
        learner: PromptLearner | None,
        head: nn.Module | None,
        name: str,
        strategy: str,
    ):
        super().__init__()
        self.tokenizer = tokenizer
        self.image_size = image_size
        self.image_mean = image_mean
        self.image_std = image_std
        self.max_text_tokens = max_text_tokens  # model positions, prompt tokens included
        self.learner = learner
        self.head = head
        self.name = name
        self.strategy = strategy

    @property
    def num_context(self) -> int:
        """Text prompt tokens inserted per sequence (0 without a text learner)."""
        return self.learner.num_context if self.learner is not None and "text" in self.learner.towers else 0

    def frozen_modules(self) -> list[nn.Module]:
        """Submodules that are never trained; subclasses list their backbone here."""
        return []

    # -- interface --------------------------------------------------------------------------------------------
    def tokenize(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """Token ids and mask for ``prompts``: ``sentence_end`` appended if missing, padded to the longest, room
        left for the prompt tokens (``positions - num_context`` including BOS/EOS; truncation keeps the EOS)."""
        end = self.sentence_end
        texts = [p if not end or p.rstrip().endswith(end) else p.rstrip() + end for p in prompts]
        enc = self.tokenizer(
            texts,
            padding="longest",
            truncation=True,
            max_length=self.max_text_tokens - self.num_context,
            return_tensors="pt",
        )
        return {"input_ids": enc["input_ids"].long(), "attention_mask": enc["attention_mask"].long()}

    def forward(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        raise NotImplementedError

    # -- packing: each family says how a pack shares its frozen model ------------------------------------------------
    def member(self, strategy: str, params: Mapping[str, Any]) -> PromptedSegmenter:
        """A wrapper of this frozen model with the prompts of another trial (its own learner and head)."""
        raise TypeError(f"{type(self).__name__} cannot be packed: no shared frozen model to wrap")

    def shared_image(self, pixel_values: torch.Tensor) -> tuple[Any, torch.Tensor | None]:
        """(what the decoder reads, the image feature CoCoOp conditions on) from the frozen, prompt-free image
        pass, computed without gradient once per batch for a pack."""
        raise TypeError(f"{type(self).__name__} has no shared image path")

    def logits_from_shared(
        self,
        shared: Any,
        prompts: Any,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
    ) -> torch.Tensor:
        """This trial's logits from the pack's image pass: its text forward, the decoder and its head (the same
        arithmetic as ``forward``)."""
        raise TypeError(f"{type(self).__name__} has no shared image path")

    def train(self, mode: bool = True) -> PromptedSegmenter:
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()
        return self

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW groups of trainable parameters: decay on Linear/Conv weights and attention in-projections
        (``*proj_weight``) only; prompt vectors, norms, biases, embeddings and free scalars are not decayed."""
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        seen: set[int] = set()
        for module in self.modules():
            for pname, param in module.named_parameters(recurse=False):
                if not param.requires_grad or id(param) in seen:
                    continue
                seen.add(id(param))
                is_weight = (isinstance(module, _DECAY_MODULES) and pname == "weight") or pname.endswith("proj_weight")
                (decay if is_weight else no_decay).append(param)
        groups = [
            {"name": "decay", "params": decay, "weight_decay": float(weight_decay)},
            {"name": "no_decay", "params": no_decay, "weight_decay": 0.0},
        ]
        return [g for g in groups if g["params"]]

    def trainable_parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def total_parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def describe_prompts(self) -> list[str]:
        """One line per place prompts (or the head) enter the model."""
        lines = list(self.learner.describe()) if self.learner is not None else []
        if not lines and self.trainable_parameter_count() and self.head is None:
            lines.append(f"no prompts: every weight of {self.name} is trained ({self.strategy})")
        elif not lines:
            lines.append(f"no prompts: {self.name} runs frozen ({self.strategy})")
        if self.head is not None:
            lines.append(
                "head: learnable upsampler on the decoder features (bilinear + 5x5 conv), "
                "blended (1 - r)·frozen + r·head, r learnable (init 0.5)"
            )
        return lines


Segmenter = TypeVar("Segmenter", bound=PromptedSegmenter)


def wrap_segmenter(
    cls: Callable[..., Segmenter],
    model: nn.Module,
    ctx: LearnerContext,
    strategy: str,
    params: Mapping[str, Any],
    **options: Any,
) -> Segmenter:
    """Freeze ``model`` and wrap it in ``cls`` with the learner of ``strategy`` (and the head), for any family:
    ``ctx`` says what the learner may know of the model; ``options`` are the family's own flags."""
    freeze(model)
    learner = build_prompt_learner(strategy, params, ctx)
    resolved = resolve_params(strategy, params)
    return cls(
        model,
        ctx.tokenizer,
        image_size=get_model_info(ctx.model_name).image_size,
        learner=learner,
        learnable_upsampler=bool(resolved.get("learnable_upsampler", False)),
        name=ctx.model_name,
        strategy=strategy,
        finetune=strategy == "finetune",
        **options,
    )
