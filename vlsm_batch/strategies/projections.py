"""Projection blocks of CoCoOp, MaPLe and Shared-Separate (docs/science.md §2.5), and per-depth stacks of them.

Three shapes, chosen by ``intermediate_dim`` (h) and ``use_lora``:

* h is None: one ``Linear(in -> out)`` with bias (no norm, whatever ``norm`` says, as in the original);
* MLP: ``Linear(in -> h) -> ReLU -> Linear(h -> out, bias only without norm and with final_bias)
  -> LayerNorm(out, bias=final_bias)``; the hidden Linear gets Kaiming-normal (ReLU gain) init;
* low rank (``use_lora``): ``Linear(in -> r, no bias) -> Linear(r -> out, bias as above) -> LayerNorm``, with
  ``r = min(h, out)``: a rank-r factorisation, no non-linearity, default init (not LoRA's zero init). When
  ``h > out`` the second factor is dropped, as in the original.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn


def make_projection(
    in_dim: int,
    out_dim: int,
    hidden: int | None,
    *,
    use_lora: bool = False,
    final_bias: bool = True,
    norm: bool = True,
) -> nn.Module:
    """One projection ``in_dim -> out_dim`` (see the module docstring for the three shapes)."""
    if hidden is None:
        return nn.Linear(in_dim, out_dim)
    if hidden < 1:
        raise ValueError(f"intermediate_dim must be at least 1, not {hidden}")
    last_bias = final_bias and not norm
    layers: list[nn.Module]
    if use_lora:
        rank = min(hidden, out_dim)
        layers = [nn.Linear(in_dim, rank, bias=False)]
        if hidden <= out_dim:
            layers.append(nn.Linear(rank, out_dim, bias=last_bias))
    else:
        first = nn.Linear(in_dim, hidden)
        nn.init.kaiming_normal_(first.weight, nonlinearity="relu")
        layers = [first, nn.ReLU(), nn.Linear(hidden, out_dim, bias=last_bias)]
    if norm:
        layers.append(nn.LayerNorm(out_dim, bias=final_bias))
    return nn.Sequential(*layers)


class ProjectionStack(nn.Module):
    """``count`` projections, one per depth index, or one module reused for all of them (``shared``)."""

    def __init__(self, count: int, shared: bool, make: Callable[[], nn.Module]):
        super().__init__()
        self.count, self.shared = count, shared
        self.blocks = nn.ModuleList([make() for _ in range(1 if shared else count)])

    def forward(self, k: int, x: Tensor) -> Tensor:
        if not 0 <= k < self.count:
            raise IndexError(f"no projection for depth index {k} (0..{self.count - 1})")
        return self.blocks[0 if self.shared else k](x)

    def describe(self) -> str:
        block = self.blocks[0]
        kind = (
            type(block).__name__ if not isinstance(block, nn.Sequential) else "+".join(type(m).__name__ for m in block)
        )
        return f"{'1 shared' if self.shared else self.count} x {kind}"
