"""Several trials of one cell on one frozen VLSM: members that share the frozen weights, and the forwards that
compute the frozen parts once for all of them.

* :func:`member_model` wraps the *same* frozen model object with another trial's prompts (and head), so a pack
  holds the frozen weights once.
* Text-side strategies (CoOp, CoCoOp, zero-shot, any learner without visual prompts, and SAM 3's detr_vpt, whose
  tokens enter after its frozen ViT): the prompt-free image forward does not depend on the trial, so
  :func:`shared_image` runs it once per batch and :func:`logits_from_shared` runs each member's prompts, text
  forward, decoder and head on it. This is the same arithmetic as the member's own ``forward`` (exact, not an
  approximation). Each segmenter family implements the three hooks (``member``, ``shared_image``,
  ``logits_from_shared``), so a new model packs without changes here.
* Visual strategies (VPT, MaPLe, Shared-Separate, Shared-Attention) on CLIPSeg: the prompts enter the image tower,
  so nothing is shared but the weights. :func:`fused_logits` stacks the K members' token sequences into one batch
  (each block with its own prompts, deep prompts replaced block by block) and runs every frozen layer once on
  K x batch rows, so each GEMM is K times larger. Rows never mix (attention is within a sequence, norms are per
  token), so each member's logits and gradients are its own.

Each member's learner is called by the caller (:func:`member_prompts`), so the pack runner can give each one its
own random stream (Shared-Attention's dropout) exactly as it would have alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..strategies.impl import Prompts
from .prompted import PromptedSegmenter


def member_model(base: PromptedSegmenter, strategy: str, params: Mapping[str, Any]) -> PromptedSegmenter:
    """A wrapper of ``base``'s frozen model with the prompts of another trial (its own learner and head)."""
    return base.member(strategy, params)


def frozen_image_path(model: PromptedSegmenter) -> bool:
    """True when the image forward depends on nothing the trial trains (no visual prompts, nothing fine-tuned)."""
    learner = model.learner
    visual = learner is not None and "vision" in learner.towers and bool(getattr(learner, "vision_rows", 0))
    return not visual and not getattr(model, "finetune", False) and not getattr(model, "trains_decoder", False)


def can_fuse(members: Sequence[PromptedSegmenter]) -> bool:
    """Visual-prompt members of CLIPSeg with equal ``num_context`` run one fused forward."""
    from .clipseg import CLIPSegPromptedSegmenter

    if not members or not all(isinstance(m, CLIPSegPromptedSegmenter) for m in members):
        return False
    if any(m.learner is None or frozen_image_path(m) or getattr(m, "finetune", False) for m in members):
        return False
    return len({m.learner.num_context for m in members}) == 1  # type: ignore[union-attr]


def member_prompts(model: PromptedSegmenter, image_features: torch.Tensor | None = None) -> Prompts:
    """The member's prompt tokens for one forward (its learner's own work: call under its random stream)."""
    learner = model.learner
    if learner is None:
        return Prompts()
    if learner.needs_image_features:
        return learner(image_features)
    return learner()


# -- text-side: one prompt-free image forward for the pack ----------------------------------------------------------
def shared_image(model: PromptedSegmenter, pixel_values: torch.Tensor) -> tuple[Any, torch.Tensor | None]:
    """(what the decoder reads, the image embedding CoCoOp conditions on) from the frozen, prompt-free image pass."""
    return model.shared_image(pixel_values)


def logits_from_shared(
    model: PromptedSegmenter,
    shared: Any,
    prompts: Prompts,
    pixel_values: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
) -> torch.Tensor:
    """The member's logits from the pack's image features: its text forward, the decoder and its head."""
    return model.logits_from_shared(shared, prompts, pixel_values, input_ids, attention_mask)


# -- visual: one fused forward through the frozen weights ------------------------------------------------------------
def _fused_vision(model: Any, pixel_values: torch.Tensor, prompts: Sequence[Prompts]) -> list[torch.Tensor]:
    """``CLIPSegPromptedSegmenter.encode_image`` for K members at once: extract-layer outputs (K*B, T+n, w)."""
    vision = model.clipseg.clip.vision_model
    with torch.no_grad():  # prompt-free: computed once, the same for every member
        embedded = vision.embeddings(pixel_values, interpolate_pos_encoding=True)
    return model.vision_layers(embedded, [p.vision for p in prompts])[0]


def fused_logits(
    members: Sequence[Any],
    prompts: Sequence[Prompts],
    pixel_values: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
) -> list[torch.Tensor]:
    """Each member's logits from one fused CLIPSeg forward (members of :func:`can_fuse`, one shared model)."""
    model = members[0]
    batch, k = pixel_values.shape[0], len(members)
    grid = (pixel_values.shape[-2] // model.patch_size, pixel_values.shape[-1] // model.patch_size)
    activations = _fused_vision(model, pixel_values, prompts)
    with_text = [bool(p.text) for p in prompts]
    if all(with_text) and len({p.text[0].shape[1] for p in prompts}) == 1:
        conditional = model.encode_text_members(input_ids, attention_mask, [p.text for p in prompts])
    elif not any(with_text):  # VPT: the text forward has no prompts and no gradient: once for the pack
        with torch.no_grad():
            conditional = model.encode_text(input_ids, attention_mask).repeat(k, 1)
    else:
        conditional = torch.cat([model.encode_text(input_ids, attention_mask, p.text) for p in prompts])
    n_vision = prompts[0].vision[0].shape[1]
    logits, features = model.decode(activations, conditional, grid, n_vision)
    out = []
    for m, block_logits, block_features in zip(members, logits.split(batch), features.split(batch), strict=True):
        out.append(m.head(block_features, block_logits) if m.head is not None else block_logits)
    return out
