"""Strategy parameters in search.space, search.per_strategy and train: who takes them, and whether every value
a dimension can produce is valid for them (kind, range, choices, and each parameter's model-relative bound, such
as prompt_depth against each model's max_prompt_depth).
Also what the catalog says about baselines: the model families one never runs on, and the epoch budget it keeps."""

from __future__ import annotations

import math
from typing import Any

from ..registry import did_you_mean
from ..strategies import STRATEGIES, ParamSpec, StrategyInfo, refusal
from .context import CheckContext
from .distributions import allowed_kinds, kind_and_args, strategy_dims
from .report import KeyPath
from .schema import describe

_KIND_WORDS = {"float": "a real-valued", "int": "an integer", "bool": "a true/false", "str": "a text"}


def all_param_names() -> list[str]:
    """Every parameter some registered strategy takes, in registry order."""
    names: list[str] = []
    for s in STRATEGIES:
        names += [n for n in STRATEGIES.get(s).param_names if n not in names]
    return names


def param_kind(name: str) -> str:
    """The kind of a parameter (the same for every strategy that takes it)."""
    return next(p.kind for s in STRATEGIES if (p := STRATEGIES.get(s).param(name)) is not None)


def _specs(name: str, strategies: list[StrategyInfo]) -> list[ParamSpec]:
    """Distinct constraints on ``name`` among ``strategies`` (finetune and the prompt strategies may differ)."""
    out: dict[tuple[Any, ...], ParamSpec] = {}
    for info in strategies:
        p = info.param(name)
        if p is not None:
            out.setdefault((p.kind, p.low, p.high, p.choices, p.nullable, p.model_bound), p)
    return list(out.values())


def _registered() -> list[StrategyInfo]:
    return [STRATEGIES.get(s) for s in STRATEGIES]


def strategy_space(ctx: CheckContext, info: StrategyInfo) -> dict[str, dict[str, Any]]:
    """The schema-valid search dimensions one strategy sees, as the expansion picks them (``strategy_dims``)."""
    shared = {n: d for n, d in ctx.section("search", "space").items() if ctx.ok(("search", "space", n))}
    own = {
        n: d
        for n, d in ctx.section("search", "per_strategy", info.name).items()
        if ctx.ok(("search", "per_strategy", info.name, n))
    }
    return strategy_dims(info, shared, own)


def value_problem(name: str, value: Any, spec: ParamSpec) -> str | None:
    """Why ``value`` is not a valid ``name``, or None."""
    if value is None:
        return None if spec.nullable else f"{name} cannot be null"
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if spec.kind == "int" and not (number and isinstance(value, int)):
        return f"{name} takes integers, got {describe(value)}"
    if spec.kind == "float" and not number:
        return f"{name} takes numbers, got {describe(value)}"
    if spec.kind == "float" and not math.isfinite(value):
        return f"{name} must be finite, got {value}"
    if spec.kind == "bool" and not isinstance(value, bool):
        return f"{name} takes true or false, got {describe(value)}"
    if spec.kind == "str" and not isinstance(value, str):
        return f"{name} takes text, got {describe(value)}"
    if spec.choices is not None and value not in spec.choices:
        return f"{name} must be one of {', '.join(map(str, spec.choices))}; got {value}"
    if spec.low is not None and value < spec.low:
        return f"{name} must be >= {spec.low:g}, got {value}"
    if spec.high is not None and value > spec.high:
        return f"{name} must be <= {spec.high:g}, got {value}"
    return None


def check_model_bound(ctx: CheckContext, path: KeyPath, value: Any, spec: ParamSpec) -> None:
    """The spec's model-relative bound (prompt_depth <= max_prompt_depth, num_heads divides joint_width) against
    every listed model."""
    if spec.model_bound is None or not ctx.ok(("models",)):
        return
    problem = spec.model_bound.problem(spec.name, value, ctx.models())
    if problem:
        ctx.report.error(path, problem)


_check_model_bound = check_model_bound


def _bounded(name: str, ctx: CheckContext, path: KeyPath, value: Any, models: list[Any]) -> None:
    spec = next(p for s in STRATEGIES if (p := STRATEGIES.get(s).param(name)) and p.model_bound)
    assert spec.model_bound is not None
    problem = spec.model_bound.problem(name, value, models)
    if problem:
        ctx.report.error(path, problem)


def _check_depth(ctx: CheckContext, path: KeyPath, value: Any, models: list[Any]) -> None:
    """Compatibility for callers written before model bounds were declared: use ``check_model_bound``."""
    _bounded("prompt_depth", ctx, path, value, models)


def _check_heads(ctx: CheckContext, path: KeyPath, value: Any, models: list[Any]) -> None:
    """Compatibility for callers written before model bounds were declared: use ``check_model_bound``."""
    _bounded("num_heads", ctx, path, value, models)


def _check_bounds(ctx: CheckContext, path: KeyPath, kind: str, lo: float, hi: float) -> bool:
    """Structural rules of a [low, high] pair; False when the pair is unusable."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        ctx.report.error(path, f"bounds must be finite numbers, got [{lo}, {hi}]")
        return False
    if not lo < hi:
        hint = "; to fix one value, set it under train" if lo == hi else ""
        ctx.report.error(path, f"low must be below high, got [{lo}, {hi}]{hint}")
        return False
    if kind == "log_uniform" and lo <= 0:
        ctx.report.error((*path, 0), f"log_uniform needs low > 0, got {lo}; use uniform to include 0")
        return False
    return True


def check_dimension(ctx: CheckContext, path: KeyPath, name: str, dist: dict[str, Any], specs: list[ParamSpec]) -> None:
    """Every value ``dist`` can produce must be valid for each constraint in ``specs``."""
    kind, args = kind_and_args(dist)
    here = (*path, kind)
    for spec in specs:
        allowed = allowed_kinds(spec)
        if kind not in allowed:
            word = "a fixed-choice" if spec.choices is not None else _KIND_WORDS[spec.kind]
            ctx.report.error(here, f"{name} is {word} parameter: use {' or '.join(allowed)}", key=True)
            return
        if kind == "choice":
            values = list(enumerate(args))
        elif _check_bounds(ctx, here, kind, args[0], args[1]):
            values = [(0, args[0]), (1, args[1])]
        else:
            return
        for j, v in values:
            problem = value_problem(name, v, spec)
            if problem:
                ctx.report.error((*here, j), problem)
    for bound in {s.model_bound: s for s in specs if s.model_bound is not None}.values():
        # a range is checked at its top for a maximum; divisibility only for listed values
        if kind == "choice":
            for j, v in enumerate(args):
                _check_model_bound(ctx, (*here, j), v, bound)
        elif bound.model_bound is not None and bound.model_bound.rule == "max":
            _check_model_bound(ctx, (*here, 1), args[1], bound)


def _check_shared(ctx: CheckContext, path: KeyPath, name: str, listed: list[StrategyInfo]) -> list[ParamSpec]:
    """Constraints for a shared parameter: the listed strategies', else (dropped, with a note) the registry's."""
    specs = _specs(name, listed)
    if listed and not specs:
        ctx.report.note(f"{'.'.join(map(str, path))}: no listed strategy takes {name}; ignored")
    return specs or _specs(name, _registered())


def _check_space(ctx: CheckContext, listed: list[StrategyInfo]) -> None:
    for name, dist in ctx.section("search", "space").items():
        path = ("search", "space", name)
        # a strategy with its own range for the parameter (search.per_strategy) never sees the shared one
        sees = [i for i in listed if name not in ctx.section("search", "per_strategy", i.name)]
        if ctx.ok(path):
            specs = _check_shared(ctx, path, name, sees) if sees or not listed else []
            check_dimension(ctx, path, name, dist, specs)


def report_unlisted(ctx: CheckContext, path: KeyPath, name: str, listed: list[str]) -> bool:
    """A ``per_strategy`` key (under search or at the top) must name a listed strategy or baseline: True (and
    reported at the key) when it does not."""
    if name in listed:
        return False
    if name in STRATEGIES:
        msg = f"{name} is not in strategies or baselines; add it there or remove this entry"
    else:
        msg = f"unknown strategy {name!r}; {did_you_mean(name, listed or STRATEGIES.names())}"
    ctx.report.error(path, msg, key=True)
    return True


def _check_per_strategy(ctx: CheckContext) -> None:
    """Keys name listed strategies; each dimension is one its strategy takes."""
    names = ctx.listed_names()
    params = set(all_param_names())
    for strategy, own in ctx.section("search", "per_strategy").items():
        path = ("search", "per_strategy", strategy)
        if report_unlisted(ctx, path, strategy, names):
            continue
        if strategy not in STRATEGIES or not isinstance(own, dict):
            continue
        info = STRATEGIES.get(strategy)
        for name, dist in own.items():
            spec = info.param(name)
            if name not in params:
                continue  # the schema already named it an unknown parameter
            if spec is None:
                takes = ", ".join(info.param_names) or "no parameters"
                ctx.report.error((*path, name), f"{strategy} does not take {name!r} (it takes: {takes})", key=True)
            elif ctx.ok((*path, name)):
                check_dimension(ctx, (*path, name), name, dist, [spec])


def _check_fixed(ctx: CheckContext, listed: list[StrategyInfo]) -> None:
    """Strategy parameters fixed under train: valid values, and not also searched in the shared space."""
    params = set(all_param_names())
    space = ctx.section("search", "space")
    for name, value in ctx.section("train").items():
        path = ("train", name)
        if name not in params or not ctx.ok(path):
            continue
        if name in space:
            ctx.report.error(path, f"{name} is fixed here and searched in search.space; remove one", key=True)
        specs = _check_shared(ctx, path, name, listed)
        for spec in specs:
            problem = value_problem(name, value, spec)
            if problem:
                ctx.report.error(path, problem)
        for bound in {s.model_bound: s for s in specs if s.model_bound is not None}.values():
            _check_model_bound(ctx, path, value, bound)


def check_baseline_pairs(ctx: CheckContext) -> None:
    """A baseline no listed model can run is an error, one that some cannot run a note (decoder_finetune on CRIS),
    worded as plan words the skipped cells. Prompt strategies get the same check by tower in ``checks``."""
    models = ctx.models()
    if not models or not ctx.ok(("models",)):
        return
    for i, name in ctx.items("baselines"):
        if name not in STRATEGIES or not STRATEGIES.get(name).baseline:
            continue
        info = STRATEGIES.get(name)
        blocked = {m.name: why for m in models if (why := refusal(info, m))}
        if len(blocked) == len(models):
            ctx.report.error(("baselines", i), f"{name} cannot run on any listed model: " + "; ".join(blocked.values()))
        else:
            for model, why in blocked.items():
                ctx.report.note(f"{name} skipped for {model}: {why}")


def _note_epoch_caps(ctx: CheckContext, listed: list[StrategyInfo]) -> None:
    """Say when a baseline trains fewer epochs than the study's max_epochs (it keeps the run it reproduces)."""
    train = ctx.section("train")
    if not ctx.ok(("train", "max_epochs"), ("train", "min_epochs")):
        return
    high = train.get("max_epochs", 100)
    settings = {"max_epochs": high, "min_epochs": train.get("min_epochs", min(10, high))}
    for info in listed:
        own = info.loop_settings(settings)
        if own != settings:
            ctx.report.note(
                f"{info.name} trains {own['min_epochs']}-{own['max_epochs']} epochs (the original run's budget, "
                f"at most {info.max_epochs}); the study's {settings['min_epochs']}-{settings['max_epochs']} applies "
                "to the other strategies"
            )


def check_params(ctx: CheckContext) -> None:
    """search.space, search.per_strategy and the strategy parameters fixed under train; baselines' model pairs and
    epoch budgets."""
    listed = ctx.strategies()
    _check_space(ctx, listed)
    _check_per_strategy(ctx)
    _check_fixed(ctx, listed)
    check_baseline_pairs(ctx)
    _note_epoch_caps(ctx, listed)
