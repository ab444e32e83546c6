"""Where prompt tokens go, written once for CLIPSeg, CRIS and the packed (fused) forwards.

* text: the first row is inserted after BOS (positions 1..n, positions added after insertion, n "real" mask
  entries); a deep row replaces the n prompt slots at the input of the next layer; the sentence is pooled at the
  EOS, which moved to ``argmax(ids) + n``;
* vision: the first row is appended after patch + position embeddings; a deep row replaces the last n tokens.

Every replacement builds a new tensor (``torch.cat``): the output of the previous layer is never changed after the
fact. Each operation takes one row per *member*: ``hidden`` holds the members' blocks of ``batch`` sequences stacked
along dim 0 (one block for a model alone), so the fused forward of a pack runs the very same arithmetic as the
member alone. A row is (1 or batch, n, width); a ``None`` row leaves its block as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from .prompted import cap_tokens

Rows = Sequence[torch.Tensor | None]


def _fit(row: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return row.to(like.dtype).expand(like.shape[0], -1, -1)


def _stack(blocks: list[torch.Tensor]) -> torch.Tensor:
    return blocks[0] if len(blocks) == 1 else torch.cat(blocks, 0)


def row_for(rows: Sequence[torch.Tensor], layer: int) -> torch.Tensor | None:
    """The fresh row at the input of layer ``layer + 1`` (after ``layer`` layers ran), None past the depth."""
    return rows[layer] if layer < len(rows) else None


def _per_block(hidden: torch.Tensor, rows: Rows, place: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
    if all(r is None for r in rows):
        return hidden
    blocks = hidden.split(hidden.shape[0] // len(rows))
    return _stack([block if row is None else place(block, row) for block, row in zip(blocks, rows, strict=True)])


# -- text ------------------------------------------------------------------------------------------------------------
def embed_text(
    token_embedding: nn.Module,
    positions: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    first_rows: Sequence[torch.Tensor] = (),
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Token + position embeddings with each member's first row after BOS: (capped ids, hidden (K*B, L+n, w),
    mask (K*B, L+n), n). The ids are capped so that L + n fits the position table; no rows: K = 1, n = 0."""
    n = first_rows[0].shape[1] if first_rows else 0
    input_ids, attention_mask = cap_tokens(input_ids, attention_mask, positions.shape[0] - n)
    batch, length = input_ids.shape
    hidden = token_embedding(input_ids)
    if n:
        hidden = _stack([torch.cat([hidden[:, :1], _fit(row, hidden), hidden[:, 1:]], 1) for row in first_rows])
        attention_mask = torch.cat([attention_mask.new_ones(batch, n), attention_mask], 1)
        if len(first_rows) > 1:
            attention_mask = attention_mask.repeat(len(first_rows), 1)
    return input_ids, hidden + positions[: length + n], attention_mask, n  # prompts sit at positions 1..n


def replace_text(hidden: torch.Tensor, rows: Rows) -> torch.Tensor:
    """Each member's deep row written into its prompt slots 1..n (right after BOS), in a new tensor."""

    def place(block: torch.Tensor, row: torch.Tensor) -> torch.Tensor:
        return torch.cat([block[:, :1], _fit(row, block), block[:, 1 + row.shape[1] :]], 1)

    return _per_block(hidden, rows, place)


def pool_eos(hidden: torch.Tensor, input_ids: torch.Tensor, n: int) -> torch.Tensor:
    """The EOS state of every sequence (K*B, width): CLIP's EOS has the largest id, shifted by the n prompts."""
    eos = input_ids.argmax(dim=-1) + n
    members = hidden.shape[0] // input_ids.shape[0]
    if members > 1:
        eos = eos.repeat(members)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), eos]


# -- vision ----------------------------------------------------------------------------------------------------------
def append_vision(hidden: torch.Tensor, first_rows: Sequence[torch.Tensor]) -> torch.Tensor:
    """The shared embedded image tokens (B, T, w) with each member's first row appended: (K*B, T+n, w)."""
    if not first_rows:
        return hidden
    return _stack([torch.cat([hidden, _fit(row, hidden)], 1) for row in first_rows])


def replace_vision(hidden: torch.Tensor, rows: Rows) -> torch.Tensor:
    """Each member's deep row written into its last n tokens (the visual prompt slots), in a new tensor."""

    def place(block: torch.Tensor, row: torch.Tensor) -> torch.Tensor:
        return torch.cat([block[:, : -row.shape[1]], _fit(row, block)], 1)

    return _per_block(hidden, rows, place)
