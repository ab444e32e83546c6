"""Several trials of one cell on one frozen VLSM: members that share the frozen weights, and the forwards that
compute the frozen parts once for all of them.

* :func:`member_model` wraps the *same* frozen model object with another trial's prompts (and head), so a pack
  holds the frozen weights once.
* Text-side strategies (CoOp, CoCoOp, zero-shot, and any learner without visual prompts): the prompt-free image
  forward does not depend on the trial, so :func:`shared_image` runs it once per batch and
  :func:`logits_from_shared` runs each member's prompts, text forward, decoder and head on it. This is the same
  arithmetic as the member's own ``forward`` (exact, not an approximation).
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
from torch.nn import functional as F

from ..strategies.impl import Prompts
from .prompted import PromptedSegmenter, cap_tokens


def member_model(base: PromptedSegmenter, strategy: str, params: Mapping[str, Any]) -> PromptedSegmenter:
    """A wrapper of ``base``'s frozen model with the prompts of another trial (its own learner and head)."""
    from .clipseg import CLIPSegPromptedSegmenter, wrap_clipseg
    from .cris import CRISPromptedSegmenter, wrap_cris

    if isinstance(base, CLIPSegPromptedSegmenter):
        return wrap_clipseg(base.clipseg, base.tokenizer, base.name, strategy, params)
    if isinstance(base, CRISPromptedSegmenter):
        return wrap_cris(base.cris, base.tokenizer, base.name, strategy, params)
    raise TypeError(f"{type(base).__name__} cannot be packed: no shared frozen model to wrap")


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
    from .clipseg import CLIPSegPromptedSegmenter
    from .cris import CRISPromptedSegmenter

    learner = model.learner
    pooled = learner is not None and learner.needs_image_features
    with torch.no_grad():
        if isinstance(model, CLIPSegPromptedSegmenter):
            activations, embeds = model.encode_image(pixel_values, pooled=pooled)
            return activations, embeds
        if isinstance(model, CRISPromptedSegmenter):
            feats = model.cris.encode_image(pixel_values)
            return feats, feats[2].float().mean(dim=(2, 3)) if pooled else None
    raise TypeError(f"{type(model).__name__} has no shared image path")


def logits_from_shared(
    model: PromptedSegmenter,
    shared: Any,
    prompts: Prompts,
    pixel_values: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
) -> torch.Tensor:
    """The member's logits from the pack's image features: its text forward, the decoder and its head."""
    from .clipseg import CLIPSegPromptedSegmenter
    from .cris import CRISPromptedSegmenter

    if isinstance(model, CLIPSegPromptedSegmenter):
        grid = (pixel_values.shape[-2] // model.patch_size, pixel_values.shape[-1] // model.patch_size)
        conditional = model.encode_text(input_ids, attention_mask, prompts.text)
        logits, features = model.decode(shared, conditional, grid, 0)
        return model.head(features, logits) if model.head is not None else logits
    if isinstance(model, CRISPromptedSegmenter):
        words, pad, state = model.cris.encode_text(input_ids, attention_mask, prompts.text)
        coarse, fq = model.cris.decode(shared, words, pad, state)
        logits = F.interpolate(coarse, size=pixel_values.shape[-2:], mode="bicubic", align_corners=True)
        return model.head(fq, logits) if model.head is not None else logits
    raise TypeError(f"{type(model).__name__} has no shared image path")


# -- visual: one fused forward through the frozen weights ------------------------------------------------------------
def _blocks_with(hidden: torch.Tensor, batch: int, rows: Sequence[torch.Tensor | None], keep: int) -> torch.Tensor:
    """Per member block of ``hidden``: ``rows[m]`` (1 or batch, n, width) written after ``keep`` tokens (text: after
    BOS, replacing the old prompt slots) or appended (vision, keep = -n); None keeps the block as it is."""
    if all(r is None for r in rows):
        return hidden
    out = []
    for block, row in zip(hidden.split(batch), rows, strict=True):
        if row is None:
            out.append(block)
            continue
        row = row.to(block.dtype).expand(batch, -1, -1)
        if keep < 0:  # vision: the last n tokens are the prompt slots
            out.append(torch.cat([block[:, :keep], row], 1))
        else:
            out.append(torch.cat([block[:, :keep], row, block[:, keep + row.shape[1] :]], 1))
    return torch.cat(out, 0)


def _fused_vision(model: Any, pixel_values: torch.Tensor, prompts: Sequence[Prompts]) -> list[torch.Tensor]:
    """``CLIPSegPromptedSegmenter.encode_image`` for K members at once: extract-layer outputs (K*B, T+n, w)."""
    from .clipseg import _run_layer

    vision = model.clipseg.clip.vision_model
    batch, n = pixel_values.shape[0], prompts[0].vision[0].shape[1]
    with torch.no_grad():  # prompt-free: computed once, the same for every member
        embedded = vision.embeddings(pixel_values, interpolate_pos_encoding=True)
    hidden = torch.cat(
        [torch.cat([embedded, p.vision[0].to(embedded.dtype).expand(batch, -1, -1)], 1) for p in prompts], 0
    )
    hidden = vision.pre_layrnorm(hidden)
    outputs: dict[int, torch.Tensor] = {}
    for i, layer in enumerate(vision.encoder.layers[: max(model.extract_layers) + 1]):
        hidden = _run_layer(layer, hidden, None)
        if i in model.extract_layers:
            outputs[i] = hidden
        rows = [p.vision[i + 1] if i + 1 < len(p.vision) else None for p in prompts]
        hidden = _blocks_with(hidden, batch, rows, -n)
    return [outputs[i] for i in model.extract_layers]


def _fused_text(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompts: Sequence[Prompts]
) -> torch.Tensor:
    """``CLIPSegPromptedSegmenter.encode_text`` for K members with text prompts of equal n: (K*B, projection)."""
    from .clipseg import _run_layer, _text_mask

    text = model.clipseg.clip.text_model
    k = len(prompts)
    n = prompts[0].text[0].shape[1]
    positions = text.embeddings.position_embedding.weight
    input_ids, attention_mask = cap_tokens(input_ids, attention_mask, positions.shape[0] - n)
    batch, length = input_ids.shape
    tokens = text.embeddings.token_embedding(input_ids)
    rows = [p.text[0].to(tokens.dtype).expand(batch, -1, -1) for p in prompts]
    hidden = torch.cat([torch.cat([tokens[:, :1], row, tokens[:, 1:]], 1) for row in rows])
    mask_rows = torch.cat([attention_mask.new_ones(batch, n), attention_mask], 1).repeat(k, 1)
    hidden = hidden + positions[: length + n]
    mask = _text_mask(mask_rows, model._attn_implementation, hidden.dtype)
    for depth, layer in enumerate(text.encoder.layers, start=1):
        hidden = _run_layer(layer, hidden, mask)
        hidden = _blocks_with(hidden, batch, [p.text[depth] if depth < len(p.text) else None for p in prompts], 1)
    eos = (input_ids.argmax(dim=-1) + n).repeat(k)
    pooled = hidden[torch.arange(k * batch, device=hidden.device), eos]
    return model.clipseg.clip.text_projection(text.final_layer_norm(pooled))


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
        conditional = _fused_text(model, input_ids, attention_mask, prompts)
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
