"""Search dimensions as written in YAML (``{log_uniform: [lo, hi]}``) -> which kinds a parameter allows, grid sizes,
and the typed ``Distribution``."""

from __future__ import annotations

from typing import Any

from ..strategies import ParamSpec
from .types import Distribution

GRID_KINDS = ("int", "choice")  # the kinds a grid can enumerate


def allowed_kinds(spec: ParamSpec) -> tuple[str, ...]:
    """Distribution kinds that can only produce valid values for ``spec``."""
    if spec.choices is not None or spec.kind in ("bool", "str"):
        return ("choice",)
    if spec.kind == "int":
        return ("int", "choice")
    return ("log_uniform", "uniform", "choice")


def kind_and_args(dist: dict[str, Any]) -> tuple[str, list[Any]]:
    """The single (kind, arguments) pair of a schema-valid dimension."""
    ((kind, args),) = dist.items()
    return kind, args


def grid_size(dist: dict[str, Any]) -> int:
    kind, args = kind_and_args(dist)
    if kind == "choice":
        return len(args)
    if kind == "int":
        return max(0, args[1] - args[0] + 1)
    raise ValueError(f"{kind} has no grid")


def _as(kind: str, value: Any) -> Any:
    """Floats stay floats (``1`` for lr becomes ``1.0``) so equal settings hash to equal trial ids."""
    if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def to_distribution(dist: dict[str, Any], param_kind: str) -> Distribution:
    kind, args = kind_and_args(dist)
    if kind == "choice":
        return Distribution(kind="choice", choices=tuple(_as(param_kind, v) for v in args))
    if kind == "int":
        return Distribution(kind="int", low=int(args[0]), high=int(args[1]))
    return Distribution(kind=kind, low=float(args[0]), high=float(args[1]))


def fixed_value(value: Any, param_kind: str) -> Any:
    return _as(param_kind, value)
