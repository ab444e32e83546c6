"""Semantic checks the schema cannot express: catalog names, model x strategy pairs, search and loop settings.

Each check reads only parts of the data that passed the schema, so one mistake is reported once.
"""

from __future__ import annotations

from typing import Any

from ..datasets import DATASETS
from ..models import MODELS
from ..objectives import OBJECTIVES
from ..registry import did_you_mean
from ..strategies import STRATEGIES, refusal
from .context import CheckContext
from .distributions import GRID_KINDS, grid_size
from .overrides import run_override_checks
from .paramcheck import check_params, strategy_space
from .resources import check_profile
from .tokens import check_context_init

MAX_GRID = 100_000


def check_names(ctx: CheckContext) -> None:
    """Models, datasets, strategies and baselines exist and sit in the right list; weights name listed models."""
    for i, name in ctx.items("models"):
        if name not in MODELS:
            ctx.report.error(("models", i), f"unknown model {name!r}; {did_you_mean(name, MODELS.names())}")
    custom = ctx.section("custom_datasets")
    for i, name in ctx.items("datasets"):
        if name not in DATASETS and name not in custom:
            known = DATASETS.names() + list(custom)
            ctx.report.error(
                ("datasets", i),
                f"unknown dataset {name!r}; {did_you_mean(name, known)} (or declare it under custom_datasets)",
            )
    for i, name in ctx.items("strategies"):
        if name not in STRATEGIES:
            ctx.report.error(("strategies", i), f"unknown strategy {name!r}; {did_you_mean(name, STRATEGIES.names())}")
        elif STRATEGIES.get(name).baseline:
            ctx.report.error(("strategies", i), f"{name} is a baseline, not a prompt strategy; move it to baselines")
    for i, name in ctx.items("baselines"):
        if name not in STRATEGIES:
            ctx.report.error(("baselines", i), f"unknown baseline {name!r}; {did_you_mean(name, STRATEGIES.names())}")
        elif not STRATEGIES.get(name).baseline:
            ctx.report.error(("baselines", i), f"{name} is a prompt strategy, not a baseline; move it to strategies")
    if ctx.ok(("strategies",), ("baselines",)) and not ctx.data.get("strategies") and not ctx.data.get("baselines"):
        ctx.report.error(("strategies",), "nothing to run: list at least one strategy or baseline")

    listed = [m for _, m in ctx.items("models")]
    if ctx.ok(("models",)):
        for key in ctx.section("weights"):
            if key in listed:
                continue
            if key in MODELS:
                msg = f"weights for {key!r}, which is not in models; add it to models or remove this entry"
            else:
                msg = f"weights for unknown model {key!r}; {did_you_mean(key, listed or MODELS.names())}"
            ctx.report.error(("weights", key), msg, key=True)


def check_custom_datasets(ctx: CheckContext) -> None:
    """Declared datasets: no clash with catalog names, one prompt source, used somewhere."""
    listed = {name for _, name in ctx.items("datasets")}
    for name, d in ctx.section("custom_datasets").items():
        if not ctx.ok(("custom_datasets", name)):
            continue
        where = ("custom_datasets", name)
        if name in DATASETS:
            ctx.report.error(where, f"{name!r} is a catalog dataset; give your dataset another name", key=True)
            continue
        if "prompt" in d and "prompt_key" in d:
            ctx.report.error(
                (*where, "prompt"), "give either prompt (fixed) or prompt_key (from anns/*.json), not both"
            )
        if d.get("layout") == "image_dir" and ("prompt" in d or "prompt_key" in d):
            ctx.report.error(
                (*where, "prompt" if "prompt" in d else "prompt_key"),
                "the image_dir layout takes its prompt from the class folder name; remove this key",
            )
        if name not in listed:
            ctx.report.note(f"custom dataset {name!r} is declared but not listed under datasets")


def check_pairs(ctx: CheckContext) -> None:
    """A strategy no listed model can run is an error; one that some models cannot run is a note."""
    models = ctx.models()
    if not models or not ctx.ok(("models",)):
        return
    for i, name in ctx.items("strategies"):
        if name not in STRATEGIES or STRATEGIES.get(name).baseline:
            continue
        info = STRATEGIES.get(name)
        reasons = {m.name: refusal(info, m) for m in models}
        blocked = {m: why for m, why in reasons.items() if why}
        if len(blocked) == len(models):
            ctx.report.error(
                ("strategies", i), f"{name} cannot run on any listed model: " + "; ".join(blocked.values())
            )
        else:
            for model, why in blocked.items():
                ctx.report.note(f"{name} skipped for {model}: {why}")


def check_search(ctx: CheckContext) -> None:
    """Method-specific rules (grid size, trials) and a known objective whose mode agrees with its metric."""
    search = ctx.section("search")
    method = search.get("method", "grid")
    if ctx.ok(("search", "method"), ("search", "trials")):
        if method == "grid" and "trials" in search:
            ctx.report.error(
                ("search", "trials"),
                "grid search takes no trials (its size is the product of its dimensions); "
                "remove trials or use method: random",
            )
        if method in ("random", "sobol", "tpe") and "trials" not in search:
            at = ("search", "method") if "method" in search else ("search",)
            ctx.report.error(("search", "trials"), f"required for method {method} (trials per cell)", at=at)
    if method == "grid" and ctx.ok(("search", "method")):
        _check_grid(ctx)
    if ctx.ok(("search", "method")):
        _check_adaptive(ctx, method)
    _check_pruner(ctx)
    _check_objective(ctx)


def _check_adaptive(ctx: CheckContext, method: str) -> None:
    """tpe needs something to model: a space with continuous dimensions or more points than trials."""
    search = ctx.section("search")
    if "n_startup_trials" in search and method != "tpe" and ctx.ok(("search", "n_startup_trials")):
        ctx.report.error(
            ("search", "n_startup_trials"),
            f"n_startup_trials applies to method tpe only (method is {method})",
            key=True,
        )
    if method != "tpe" or not ctx.ok(("search", "trials")):
        return
    trials = search.get("trials")
    for info in ctx.strategies():
        space = strategy_space(ctx, info)
        if not space or not all(next(iter(d)) in GRID_KINDS for d in space.values()):
            continue
        size = grid_size(space.values())
        if isinstance(trials, int) and size <= trials:
            ctx.report.error(
                ("search", "method"),
                f"tpe over {info.name}'s space of {size} combination(s) (choice/int only) would ask repeated points "
                f"for {trials} trials; use method: grid to run each combination once, or widen the space",
            )


def _check_pruner(ctx: CheckContext) -> None:
    """Keys that belong to the pruner type, and epoch counts within max_epochs."""
    pruner = ctx.section("search", "pruner")
    if not pruner or not ctx.ok(("search", "pruner", "type")):
        return
    kind = pruner.get("type")
    own: dict[Any, tuple[str, ...]] = {
        "asha": ("min_resource", "reduction_factor", "grace"),
        "median": ("warmup", "n_startup_trials", "grace"),
    }
    for key in pruner:
        if key != "type" and key not in own.get(kind, ()):
            what = f"pruner {kind} takes " + (", ".join(own[kind]) if kind in own else "no other keys")
            ctx.report.error(("search", "pruner", key), f"{key} does not apply here: {what}; remove it", key=True)
    max_epochs = ctx.section("train").get("max_epochs", 100)
    if not ctx.ok(("train", "max_epochs")) or not isinstance(max_epochs, int):
        return
    for key in ("grace", "min_resource", "warmup"):
        value = pruner.get(key)
        if (
            isinstance(value, int)
            and key in own.get(kind, ())
            and value > max_epochs
            and ctx.ok(("search", "pruner", key))
        ):
            ctx.report.error(
                ("search", "pruner", key),
                f"{key} {value} is larger than train.max_epochs {max_epochs}: no trial would ever be pruned; "
                f"lower {key} or set pruner type none",
            )


def _check_objective(ctx: CheckContext) -> None:
    objective = ctx.section("search", "objective")
    metric, mode = objective.get("metric", "val/dice"), objective.get("mode")
    if not ctx.ok(("search", "objective", "metric")):
        return
    if metric not in OBJECTIVES:
        ctx.report.error(
            ("search", "objective", "metric"),
            f"unknown objective metric {metric!r}; {did_you_mean(metric, list(OBJECTIVES))}",
        )
    elif mode is not None and ctx.ok(("search", "objective", "mode")) and mode != OBJECTIVES[metric]:
        word = "maximized" if OBJECTIVES[metric] == "max" else "minimized"
        ctx.report.error(
            ("search", "objective", "mode"), f"{metric} is {word}, mode {mode} contradicts it; remove mode"
        )


def _check_grid(ctx: CheckContext) -> None:
    """Every grid dimension must be enumerable, and no cell may have more than MAX_GRID points."""
    search = ctx.section("search")
    spaces: list[tuple[tuple[str, ...], dict[str, Any]]] = [(("search", "space"), ctx.section("search", "space"))]
    spaces += [
        (("search", "per_strategy", s), ctx.section("search", "per_strategy", s))
        for s in ctx.section("search", "per_strategy")
    ]
    grid = "grid search" if "method" in search else "grid search (the default method)"
    for path, space in spaces:
        for name, dist in space.items():
            if ctx.ok((*path, name)) and next(iter(dist)) not in GRID_KINDS:
                kind = next(iter(dist))
                ctx.report.error(
                    (*path, name, kind),
                    f"{grid} cannot enumerate {kind}; list the values to try with {{choice: [...]}} "
                    "or sample with method: random and trials",
                    key=True,
                )
    at = ("search", "method") if "method" in search else ("search",)
    for info in ctx.strategies():
        space = strategy_space(ctx, info)
        if all(next(iter(d)) in GRID_KINDS for d in space.values()):
            size = grid_size(space.values())
            if size > MAX_GRID:
                ctx.report.error(
                    ("search", "method"), f"grid for {info.name} has {size:,} points per cell (max {MAX_GRID:,})", at=at
                )


def check_train(ctx: CheckContext) -> None:
    """min_epochs within max_epochs; early stopping watches a metric that exists."""
    train = ctx.section("train")
    if ctx.ok(("train", "min_epochs"), ("train", "max_epochs")) and "min_epochs" in train:
        high = train.get("max_epochs", 100)
        if train["min_epochs"] > high:
            ctx.report.error(("train", "min_epochs"), f"min_epochs {train['min_epochs']} is above max_epochs {high}")
    monitor = ctx.section("train", "early_stopping").get("monitor")
    if monitor is not None and ctx.ok(("train", "early_stopping", "monitor")) and monitor not in OBJECTIVES:
        ctx.report.error(
            ("train", "early_stopping", "monitor"),
            f"unknown metric {monitor!r}; {did_you_mean(monitor, list(OBJECTIVES))}",
        )


def run_checks(ctx: CheckContext) -> None:
    """All semantic checks, in file order of the sections they read."""
    check_names(ctx)
    check_custom_datasets(ctx)
    check_pairs(ctx)
    check_params(ctx)
    check_search(ctx)
    check_train(ctx)
    check_context_init(ctx)
    run_override_checks(ctx)
    check_profile(ctx)
