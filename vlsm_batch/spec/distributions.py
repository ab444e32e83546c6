"""Search dimensions as written in YAML (``{log_uniform: [lo, hi]}``) -> which kinds a parameter allows, grid sizes,
and the typed ``Distribution``."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from ..strategies import ParamSpec, StrategyInfo
from .types import Distribution

GRID_KINDS = ("int", "choice")  # the kinds a grid can enumerate

D = TypeVar("D")


def strategy_dims(info: StrategyInfo, shared: Mapping[str, D], own: Mapping[str, D]) -> dict[str, D]:
    """The dimensions one strategy searches: the shared ones it takes, overridden by its ``per_strategy`` ones.

    Baselines ignore the shared space (the benchmark runs them once with their defaults); their own entry can
    still give them one. Validation (raw YAML dimensions) and expansion (typed ``Distribution``) both call this,
    so the grid size a check counts is the number of trials the plan expands.
    """
    takes = set(info.param_names)
    space = {} if info.baseline else {k: v for k, v in shared.items() if k in takes}
    space.update({k: v for k, v in own.items() if k in takes})
    return space


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


def grid_points(dist: dict[str, Any]) -> int:
    """How many values one enumerable YAML dimension contributes to a grid."""
    kind, args = kind_and_args(dist)
    if kind == "choice":
        return len(args)
    if kind == "int":
        return max(0, args[1] - args[0] + 1)
    raise ValueError(f"{kind} has no grid")


def grid_size(space: Iterable[dict[str, Any]]) -> int:
    """Points in the grid over these YAML dimensions (the product of their sizes)."""
    return math.prod(grid_points(d) for d in space)


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
