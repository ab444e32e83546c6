"""``context_init`` against ``num_context``: the words must make exactly num_context CLIP tokens.

At training time a mismatch fails the trial (``strategies.coop.words_to_vectors``); here every pair a strategy can
see (fixed under train, searched in search.space or search.per_strategy, or the strategy's default) is counted
with the same CLIP BPE tokenizer, built without torch or transformers, so the study is refused before launch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..strategies import StrategyInfo
from .context import CheckContext
from .distributions import kind_and_args
from .paramcheck import value_problem
from .report import KeyPath

MAX_RANGE = 64  # num_context is at most 32; a wider range is refused by the parameter checks


@dataclass(frozen=True)
class _Value:
    value: Any
    path: KeyPath | None  # where it is written; None for the strategy's default
    source: str  # how the message names where it comes from


def _values(ctx: CheckContext, info: StrategyInfo, name: str) -> list[_Value]:
    """Every value of ``name`` a trial of ``info`` can get, with where it is written (per_strategy > space > train)."""
    spec = info.param(name)
    assert spec is not None
    own: tuple[str, ...] = ("search", "per_strategy", info.name, name)
    shared: tuple[str, ...] = ("search", "space", name)
    if name in ctx.section(*own[:-1]):
        where = own
    elif name in ctx.section(*shared[:-1]) and not info.baseline:
        where = shared
    elif name in ctx.section("train"):
        return [_Value(ctx.data["train"][name], ("train", name), f"train.{name}")] if ctx.ok(("train", name)) else []
    else:
        return [_Value(spec.default, None, f"the default {name}")]
    if not ctx.ok(where):
        return []
    kind, args = kind_and_args(ctx.section(*where[:-1])[name])
    dotted = ".".join(str(p) for p in where)
    if kind == "choice":
        return [_Value(v, (*where, "choice", j), dotted) for j, v in enumerate(args)]
    if kind == "int" and all(isinstance(a, int) for a in args) and 0 <= args[1] - args[0] < MAX_RANGE:
        return [_Value(v, (*where, "int"), dotted) for v in range(args[0], args[1] + 1)]
    return []


def _valid(ctx: CheckContext, info: StrategyInfo, name: str) -> list[_Value]:
    """The values the parameter checks accept (the others are reported there, once)."""
    spec = info.param(name)
    assert spec is not None
    return [v for v in _values(ctx, info, name) if v.value is not None and value_problem(name, v.value, spec) is None]


def check_context_init(ctx: CheckContext) -> None:
    """Each non-null context_init must make as many tokens as every num_context it can be paired with."""
    strategies = [s for s in ctx.strategies() if s.param("context_init") and s.param("num_context")]
    found: dict[tuple[Any, ...], tuple[_Value, _Value, list[int], int, list[str]]] = {}
    for info in strategies:
        inits = [v for v in _valid(ctx, info, "context_init") if v.value]  # "" and null: random init
        counts = _valid(ctx, info, "num_context")
        for init in inits if counts else []:
            n = _count(ctx, init)
            if n is None:
                return
            wrong = sorted({c.value for c in counts if c.value != n})
            if wrong:
                first = next(c for c in counts if c.value != n)
                key = (init.value, init.path, first.path, tuple(wrong))
                found.setdefault(key, (init, first, wrong, n, []))[4].append(info.name)
    for init, first, wrong, n, names in found.values():
        _report(ctx, init, first, wrong, n, names)


_COUNTS: dict[str, int] = {}


def _count(ctx: CheckContext, init: _Value) -> int | None:
    """The token count of a context_init, or None (with a note) when no CLIP tokenizer is available here."""
    from ..models.tokenizer import TokenizerUnavailableError, count_tokens

    text = init.value
    if text not in _COUNTS:
        try:
            _COUNTS[text] = count_tokens(text)
        except (TokenizerUnavailableError, ImportError) as exc:
            ctx.report.note(f"context_init token counts not checked: {exc}")
            return None
    return _COUNTS[text]


def _report(ctx: CheckContext, init: _Value, first: _Value, wrong: list[int], n: int, names: list[str]) -> None:
    shown = ", ".join(map(str, wrong[:8])) + (" ..." if len(wrong) > 8 else "")
    can = "is" if first.path is None or first.path[-1] in ("num_context",) else "can be"
    who = ", ".join(names)
    words = "token" if n == 1 else "tokens"
    msg = (
        f"context_init {init.value!r} is {n} CLIP {words} but num_context {can} {shown} ({first.source}; "
        f"strategies {who}): set num_context: {n}, choose words that make {wrong[0]} tokens, or set "
        f"context_init: null for random init"
    )
    if init.path is not None:
        ctx.report.error(init.path, msg)
    else:
        assert first.path is not None  # a default pair always matches
        ctx.report.error(first.path, msg.replace("context_init ", f"{init.source} ", 1))
