"""Takeaways declared as data: each YAML file names a *kind* of computation and its options.

Built-in takeaways live in ``vlsm_batch/analysis/builtin_takeaways/*.yaml``; ``analyze --takeaways PATH`` adds files or
folders of your own (a file with the same ``name`` replaces the built-in one). A file looks like::

    name: depth                 # letters, digits, _ and -: names the output files
    kind: trend                 # trend | matrix | domain | towers | importance | effect | models
    title: Score vs prompt depth
    order: 10                   # position in the report (default 100)
    metric: test/dice           # what is reported (default test/dice); selection is always on validation
    x: prompt_depth             # options of the kind (see KINDS)
    sentence: "..."             # optional: your own sentence, with {placeholders} from the computed facts

Every kind returns a table, a figure and a sentence computed from the data, or a reason it was skipped.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from ..errors import VlsmBatchError
from ..strategies import BASELINES as REGISTERED_BASELINES
from . import plots
from .stats import Paired, levels_of, omega_squared, paired, t975, t_pvalue, unit_slopes, welch, within_slope
from .tables import CELL, best, param_columns

if TYPE_CHECKING:
    import polars as pl
    from matplotlib.figure import Figure

BUILTIN_DIR = Path(__file__).with_name("builtin_takeaways")
COMMON = {"name", "kind", "title", "order", "metric", "sentence", "description"}
# names known to be baselines, in display order, then any other the catalog declares; is_baseline also asks it
BASELINES = (*plots.BASELINES, *(b for b in REGISTERED_BASELINES if b not in plots.BASELINES))
is_baseline = plots.is_baseline
label = plots.label


@dataclass
class TakeawaySpec:
    name: str
    kind: str
    title: str
    options: dict[str, Any]
    order: int = 100
    metric: str = "test/dice"
    sentence: str | None = None
    description: str = ""
    source: str = ""


@dataclass
class Context:
    """What every kind reads: trials, configurations (seeds pooled) and the best configuration per cell."""

    df: pl.DataFrame
    cfg: pl.DataFrame
    best: pl.DataFrame
    objective: str
    mode: str


@dataclass
class Takeaway:
    spec: TakeawaySpec
    sentence: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    table: pl.DataFrame | None = None
    figure: Figure | None = None
    skipped: str | None = None
    plot: Path | None = None  # the PNG once written


class Skip(Exception):
    """The study cannot answer this takeaway (the reason is shown in the report)."""


# ----------------------------------------------------------------------------------------------------- helpers


def _fmt(v: float | None, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:+.3f}" if signed else f"{v:.3f}"


def _col(spec: TakeawaySpec) -> str:
    return f"{spec.metric} mean"


def _need(ctx: Context, spec: TakeawaySpec) -> None:
    if ctx.cfg.height == 0:
        raise Skip("no finished trials yet")
    if _col(spec) not in ctx.cfg.columns:
        raise Skip(f"no trial reports {spec.metric}")


def _strategy_order(names: list[str]) -> list[str]:
    return plots.strategy_order(names)


def seed_scores(
    ctx: Context, rows: pl.DataFrame, metric: str, keys: tuple[str, ...] = CELL
) -> dict[tuple, dict[int, float]]:
    """Per row of ``rows`` (with ``trial_ids``), keyed by its ``keys`` columns: the metric of each seed (the mean
    over the row's trials of that seed when the row pools several configurations)."""
    import polars as pl

    if "trial_ids" not in rows.columns or metric not in ctx.df.columns:
        return {}
    ids = {tid for s in rows["trial_ids"].to_list() for tid in (s or "").split(",") if tid}
    sub = ctx.df.filter(pl.col("trial_id").is_in(list(ids))).select("trial_id", "seed", metric)
    by_id = {tid: (seed, v) for tid, seed, v in sub.iter_rows()}
    out: dict[tuple, dict[int, float]] = {}
    for *key, tids in rows.select(*keys, "trial_ids").iter_rows():
        acc: dict[int, list[float]] = {}
        for tid in (tids or "").split(","):
            seed, v = by_id.get(tid, (None, None))
            if seed is not None and v is not None and not (isinstance(v, float) and math.isnan(v)):
                acc.setdefault(int(seed), []).append(float(v))
        out[tuple(key)] = {seed: sum(v) / len(v) for seed, v in acc.items()}
    return out


def pair_up(scores: dict[tuple, dict[int, float]], a: str, b: str, test: str = "paired t") -> Paired | None:
    """a − b over the keys both have (keys end with the compared label: (model, dataset, strategy), ...), paired
    over seeds where both ran them (else the two seed means make one pair)."""
    xa, xb = [], []
    for key, va in scores.items():
        if key[-1] != a:
            continue
        vb = scores.get((*key[:-1], b))
        if not va or not vb:
            continue
        common = sorted(set(va) & set(vb))
        if common:
            xa += [va[s] for s in common]
            xb += [vb[s] for s in common]
        else:
            xa.append(sum(va.values()) / len(va))
            xb.append(sum(vb.values()) / len(vb))
    return paired(xa, xb, test)


def claim(p: Paired | None, a: str, b: str, metric: str, short_a: str | None = None) -> str:
    """A claim no stronger than the interval: "a beats b by ..." or "no clear difference between a and b"
    (``short_a`` names a in the difference, when a is a long label)."""
    if p is None:
        return f"{a} and {b} never ran on the same dataset"
    if p.clear:
        word = "ahead of" if p.effect > 0 else "behind"
        return f"{a} is {word} {b} by {p.text()} {metric}"
    return f"no clear difference between {a} and {b} ({short_a or a} − {b} {p.text()})"


def _join(items: list[str]) -> str:
    return ", ".join(items) if items else "none"


def per_level(ctx: Context, cfg: pl.DataFrame, level: str, col: str, select: str) -> pl.DataFrame:
    """One row per (cell, level): the best configuration on validation (``select: best``) or the mean over the
    level's configurations (``select: mean``: unbiased under random or Sobol sampling, where levels with more
    configurations would otherwise win the best-of-n draw more often)."""
    import polars as pl

    if select == "best":
        return best(cfg, ctx.mode, within=[level])
    if select != "mean":
        raise Skip(f"select must be best or mean, not {select!r}")
    keys = [*CELL, level]
    aggs = [pl.col(col).mean(), pl.col("objective").mean(), pl.len().alias("n_configs")]
    if "trial_ids" in cfg.columns:  # every trial of the level: seed_scores averages them per seed
        aggs.append(pl.col("trial_ids").str.join(","))
    return cfg.group_by(keys).agg(aggs).sort(keys)


# ------------------------------------------------------------------------------------------------------- kinds


def _trend_units(
    ctx: Context, at_x: pl.DataFrame, spec: TakeawaySpec, x: str, lines: str
) -> dict[str, dict[tuple, list[tuple[float, float]]]]:
    """Per line (strategy): per unit (model, dataset, strategy, seed) the (x, metric) points of that seed, at each
    x from the configuration(s) ``per_level`` chose there."""
    import polars as pl

    keys = tuple(dict.fromkeys([*CELL, lines, x]))
    scores = seed_scores(ctx, at_x.filter(pl.col(_col(spec)).is_not_null()), spec.metric, keys)
    out: dict[str, dict[tuple, list[tuple[float, float]]]] = {}
    for key, seeds in scores.items():
        row = dict(zip(keys, key))
        for seed, v in seeds.items():
            unit = (*[row[c] for c in CELL], seed)
            out.setdefault(str(row[lines]), {}).setdefault(unit, []).append((float(row[x]), v))
    return {name: out[name] for name in _strategy_order(list(out))}


def _slope(
    units: dict[tuple, list[tuple[float, float]]], name: str, lines: str, min_effect: float
) -> dict[str, Any] | None:
    """The trend of one line: the mean of the units' least-squares slopes with its t-interval (a paired test: each
    dataset and seed is compared with itself at other x); with a single unit, that unit's regression slope."""
    per_unit = unit_slopes(units)
    if not per_unit:
        return None
    xs = [p[0] for pts in units.values() for p in pts]
    span = max(xs) - min(xs)
    if len(per_unit) >= 2:
        test = paired(list(per_unit.values()), [0.0] * len(per_unit), "paired slope t")
        assert test is not None  # unit slopes are finite, so every unit makes a pair
    else:  # one dataset and seed: nothing to pair; the regression's own interval over its x values, stated
        pts = units[next(iter(per_unit))]
        slope, half, n = within_slope([p[0] for p in pts], [p[1] for p in pts], [0] * len(pts))
        how = f"least-squares t over {n} points of one dataset and seed"
        if math.isnan(half):
            test = Paired(slope, None, None, n, None, how)
        else:
            se = half / t975(n - 2)
            test = Paired(slope, slope - half, slope + half, n, t_pvalue(slope / se, n - 2) if se else 0.0, how)
    if not test.clear:
        verdict = "unclear"
    elif abs(test.effect) * span < min_effect:
        verdict = "small"
    else:
        verdict = "helps" if test.effect > 0 else "hurts"
    return {
        lines: name,
        "slope": test.effect,
        "lo": test.lo,
        "hi": test.hi,
        "ci95": None if test.hi is None else test.hi - test.effect,
        "n": test.n,
        "units": len(per_unit),
        "p": test.p,
        "test": test.test,
        "change_over_range": test.effect * span,
        "verdict": verdict,
        "text": test.text(" per step"),
    }


def trend(ctx: Context, spec: TakeawaySpec) -> Takeaway:
    """Metric against a numeric parameter, per strategy, per dataset and pooled.

    At each value of ``x`` the best configuration of the cell is chosen on validation (``select: best``) or the
    level's configurations are averaged (``select: mean``). The test is paired: each (model, dataset, seed) unit
    gets its own least-squares slope of the metric on ``x`` (the unit is compared with itself, so dataset levels
    cancel), and the mean slope is tested over the units with a t-interval (a one-sample, i.e. paired, t). "helps"
    needs that interval above 0 and a change over the range of at least ``min_effect``; an interval that includes
    0 is "no clear difference". A line with one unit falls back to that unit's regression interval, stated.
    """
    import polars as pl

    _need(ctx, spec)
    x, lines = spec.options["x"], spec.options.get("lines", "strategy")
    min_effect = float(spec.options.get("min_effect", 0.01))
    if x not in ctx.cfg.columns or ctx.cfg[x].drop_nulls().n_unique() < 2:
        raise Skip(f"the study did not vary {x}")
    if not ctx.cfg.schema[x].is_numeric():
        raise Skip(f"{x} is not numeric")
    cfg = ctx.cfg.filter(pl.col(x).is_not_null())
    col = _col(spec)
    at_x = per_level(ctx, cfg, x, col, spec.options.get("select", "best"))
    ci_col = f"{spec.metric} ci95"
    ci_expr = pl.col(ci_col).first() if ci_col in at_x.columns else pl.lit(None, dtype=pl.Float64)
    per_ds = (
        at_x.group_by(["dataset", lines, x]).agg(
            pl.col(col).mean().alias(spec.metric), pl.len().alias("n_cells"), ci_expr.alias("_ci")
        )
    ).with_columns(
        pl.col("dataset").alias("scope"),
        pl.when(pl.col("n_cells") == 1).then(pl.col("_ci")).otherwise(None).alias("ci95"),  # over seeds only
    )
    pooled = (
        per_ds.group_by([lines, x])
        .agg(pl.col(spec.metric).mean(), pl.col("n_cells").sum())
        .with_columns(pl.lit("pooled").alias("scope"), pl.lit(None, dtype=pl.Float64).alias("ci95"))
    )
    cols_out = ["scope", lines, x, spec.metric, "ci95", "n_cells"]
    table = pl.concat([pooled.select(cols_out), per_ds.select(cols_out)])
    table = table.sort([pl.col("scope") != "pooled", "scope", lines, x])
    units_per_line = _trend_units(ctx, at_x, spec, x, lines)
    fitted = [_slope(units, name, lines, min_effect) for name, units in units_per_line.items()]
    slopes = [s for s in fitted if s is not None]
    slope_table = pl.DataFrame(slopes) if slopes else None

    def describe(*verdicts: str) -> list[str]:
        return [f"{s[lines]}: {s['text']}" for s in slopes if s["verdict"] in verdicts]

    facts = {
        "x": x,
        "metric": spec.metric,
        "helps": _join(describe("helps")),
        "hurts": _join(describe("hurts")),
        "small": _join(describe("small")),
        "unclear": _join(describe("unclear")),
        "flat": _join(describe("small", "unclear")),
        "helps_names": [s[lines] for s in slopes if s["verdict"] == "helps"],
        "hurts_names": [s[lines] for s in slopes if s["verdict"] == "hurts"],
        "small_names": [s[lines] for s in slopes if s["verdict"] == "small"],
        "unclear_names": [s[lines] for s in slopes if s["verdict"] == "unclear"],
        "flat_names": [s[lines] for s in slopes if s["verdict"] in ("small", "unclear")],
        "slopes": slopes,
        "test": "the slope of each (dataset, seed) unit, tested over the units with a paired (one-sample) t",
    }
    parts = []
    if facts["helps_names"]:
        parts.append(f"raising {x} helps {facts['helps']}")
    if facts["hurts_names"]:
        parts.append(f"hurts {facts['hurts']}")
    if facts["small_names"]:
        parts.append(f"changes {facts['small']} by less than {min_effect:g} over the range")
    if facts["unclear_names"]:
        parts.append(f"no clear difference for {facts['unclear']}")
    how = "slope per step fitted inside each dataset and seed, paired slope t over those units"
    if any(s["units"] == 1 for s in slopes):
        how += "; a single dataset and seed: its least-squares t"
    sentence = ("; ".join(parts) or f"no strategy has two values of {x}") + f" ({spec.metric}; {how})."
    sentence = sentence[0].upper() + sentence[1:]
    max_panels = int(spec.options.get("max_panels", 6))
    panels = []
    names_ds = sorted(per_ds["dataset"].unique().to_list())
    scopes = (["pooled"] if len(names_ds) > 1 else []) + names_ds  # one dataset: no duplicate "pooled" panel
    for scope in scopes[: max_panels + 1]:
        sub = table.filter(pl.col("scope") == scope)
        series = {}
        for name in _strategy_order(sub[lines].unique().to_list()):
            s = sub.filter(pl.col(lines) == name).sort(x)
            series[name] = (s[x].to_list(), s[spec.metric].to_list(), s["ci95"].to_list())
        panels.append((scope if scope != "pooled" else "pooled (mean over datasets)", series))
    fig = plots.line_panels(
        panels,
        x,
        spec.metric,
        "Best configuration per cell and value of the parameter (chosen on validation); error bars: 95 % CI over "
        "seeds where a point has several (none on pooled panels).",
    )
    if slope_table is not None:
        facts["slope_table"] = slope_table.to_dicts()
    return Takeaway(spec, sentence, facts, table, fig)


def _best_prompt_tuning(ctx: Context, b: pl.DataFrame, spec: TakeawaySpec) -> tuple[dict[str, Any], str]:
    """The facts and sentence of ``matrix`` over the best-configuration rows ``b`` (one model's, or a study's with
    one model): the prompt tuning with the highest mean, named the best only when it is clearly ahead of every other
    (paired over datasets and seeds), and every baseline against it."""
    import polars as pl

    col = _col(spec)
    datasets = sorted(b["dataset"].unique().to_list())
    models = sorted(b["model"].unique().to_list())
    wins: dict[str, int] = {}
    baselines = [s for s in b["strategy"].unique().to_list() if is_baseline(s)]
    for model in models:
        mb = b.filter(pl.col("model") == model)
        for ds in datasets:
            prompt = mb.filter((pl.col("dataset") == ds) & ~pl.col("strategy").is_in(baselines))
            if prompt.height:
                top = prompt.sort(col, descending=True).row(0, named=True)
                wins[top["strategy"]] = wins.get(top["strategy"], 0) + 1
    n = sum(wins.values())
    ranked = sorted(wins.items(), key=lambda kv: (-kv[1], kv[0]))
    if not ranked:
        raise Skip("no prompt-tuning strategy finished on any dataset")
    scores = seed_scores(ctx, b, spec.metric)
    prompt_names = [s for s in _strategy_order(b["strategy"].to_list()) if not is_baseline(s)]
    means = b.filter(pl.col("strategy").is_in(prompt_names)).group_by("strategy").agg(pl.col(col).mean())
    leader = means.sort([col, "strategy"], descending=[True, False])["strategy"][0]  # highest mean over cells
    comparisons = {o: pair_up(scores, leader, o) for o in prompt_names if o != leader}
    clear = [o for o, p in comparisons.items() if p is not None and p.clear and p.effect > 0]
    unclear = [o for o, p in comparisons.items() if p is None or not p.clear]  # never compared: not beaten
    facts: dict[str, Any] = {
        "metric": spec.metric,
        "wins": dict(ranked),
        "n_datasets": n,
        "leader": leader,
        "comparisons": {o: None if p is None else p.__dict__ for o, p in comparisons.items()},
        "test": "paired t over (model, dataset, seed): each pair is one seed of both strategies' best configuration",
    }
    if len(prompt_names) == 1:
        sentence = f"{leader} is the only prompt tuning that finished ({n} (model, dataset) pair(s))"
        facts["winner"] = leader
    elif not unclear and clear:
        facts["winner"] = leader
        sentence = f"{leader} is the best prompt tuning: " + "; ".join(
            claim(comparisons[o], leader, o, spec.metric) for o in clear
        )
    else:
        facts["winner"] = None  # no winner is named while an interval includes 0
        sentence = f"{leader} has the highest mean {spec.metric} but is not clearly best: " + "; ".join(
            claim(p, leader, o, spec.metric) for o, p in comparisons.items()
        )
    # every baseline against the best prompt tuning, each named for what it trains (two fine-tunes may be present)
    present = {k[-1] for k in scores}
    for base in [s for s in _strategy_order(list(present)) if is_baseline(s)]:
        vs = pair_up(scores, base, leader)
        facts[f"{base}_vs_leader"] = None if vs is None else vs.__dict__
        if base == "zero_shot":
            facts["zero_shot_gap"] = None if vs is None else vs.effect
        sentence += f"; {claim(vs, f'{label(base)} [{base}]', leader, spec.metric, base)}"
    facts.setdefault("finetune_vs_leader", None)
    facts.setdefault("zero_shot_vs_leader", None)
    facts.setdefault("zero_shot_gap", None)
    return facts, sentence


def matrix(ctx: Context, spec: TakeawaySpec) -> Takeaway:
    """Strategy × dataset table of the best configuration's test score, with the baselines as rows (rows named
    "model / strategy" when the study has several models). Strategies are ranked within each model (its datasets
    and seeds): models of different strength, running different strategies (CRIS and SAM 3 have no ``vpt``), must
    not decide which strategy is best; the facts then hold each model's under ``per_model``."""
    import polars as pl

    _need(ctx, spec)
    col = _col(spec)
    b = ctx.best.filter(pl.col(col).is_not_null())
    datasets = sorted(b["dataset"].unique().to_list())
    models = plots.model_order(b["model"].unique().to_list())
    rows, labels, values = [], [], []
    for model in models:
        for strategy in _strategy_order(b.filter(pl.col("model") == model)["strategy"].to_list()):
            row: dict[str, Any] = {"model": model, "strategy": strategy}
            vals = []
            for ds in datasets:
                hit = b.filter(
                    (pl.col("model") == model) & (pl.col("strategy") == strategy) & (pl.col("dataset") == ds)
                )
                v = hit[col][0] if hit.height else None
                row[ds] = v
                row[f"{ds} ci95"] = (
                    hit[f"{spec.metric} ci95"][0] if hit.height and f"{spec.metric} ci95" in hit.columns else None
                )
                vals.append(v)
            rows.append(row)
            labels.append(plots.short(strategy) if len(models) == 1 else f"{model} / {plots.short(strategy)}")
            values.append(vals)
    table = pl.DataFrame(rows)
    if len(models) == 1:
        facts, sentence = _best_prompt_tuning(ctx, b, spec)
    else:  # strategies are compared within each model: its own datasets and seeds, never across models
        per_model: dict[str, dict[str, Any]] = {}
        sentences = []
        for model in models:
            try:
                f_m, s_m = _best_prompt_tuning(ctx, b.filter(pl.col("model") == model), spec)
            except Skip:
                continue
            per_model[model] = f_m
            sentences.append(f"For {model}: {s_m}")
        if not per_model:
            raise Skip("no prompt-tuning strategy finished on any dataset")
        facts = {
            "metric": spec.metric,
            "models": list(per_model),
            "per_model": per_model,
            "leader": ", ".join(f"{m}: {f['leader']}" for m, f in per_model.items()),
            "winner": ", ".join(f"{m}: {f['winner'] or 'none'}" for m, f in per_model.items()),
            "test": "paired t over (dataset, seed) within each model: each pair is one seed of both strategies' best "
            "configuration",
        }
        sentence = ". ".join(sentences)
    fig = plots.heatmap(
        labels,
        datasets,
        values,
        f"{spec.metric} (mean ± 95 % CI over seeds): best configuration per cell, chosen on validation",
        errors=[[r.get(f"{ds} ci95") for ds in datasets] for r in rows],
    )
    return Takeaway(spec, sentence + ".", facts, table, fig)


def domain(ctx: Context, spec: TakeawaySpec) -> Takeaway:
    """Medical vs natural: each strategy's mean over the datasets of each domain, the best prompt tuning of each
    domain, and each strategy's medical − natural gap.

    The leader of a domain is the highest mean over the datasets where every prompt-tuning strategy of that domain
    finished (a strategy missing its hardest dataset must not look better for it); it is named the best only when
    it is clearly ahead (paired t over that domain's datasets and seeds) of every other. The gap medical − natural
    compares different datasets, so it is unpaired: a Welch t over datasets (each the mean over the seeds of the
    best configuration), with its interval and n per domain.
    """
    import polars as pl

    _need(ctx, spec)
    col = _col(spec)
    b = ctx.best.filter(pl.col(col).is_not_null())
    models = plots.model_order(b["model"].unique().to_list())
    if len(models) <= 1:
        table, facts, sentence = _domain_of(ctx, b, spec)
        groups = table["strategy"].to_list()
    else:  # each model on its own: a strategy's domain means and gap are over one model's datasets
        tables, per_model, sentences = [], {}, []
        for model in models:
            try:
                t_m, f_m, s_m = _domain_of(ctx, b.filter(pl.col("model") == model), spec)
            except Skip:
                continue
            tables.append(t_m.select(pl.lit(model).alias("model"), pl.all()))
            per_model[model] = f_m
            sentences.append(f"For {model}: {s_m[0].lower()}{s_m[1:]}")
        if not tables:
            raise Skip("no prompt-tuning strategy finished")
        table = pl.concat(tables, how="diagonal_relaxed")
        domains = sorted({d for f in per_model.values() for d in f["domains"]}, key=lambda d: (d != "medical", d))
        table = table.select("model", "strategy", *domains, *[c for c in table.columns if c not in
                             ("model", "strategy", *domains)])  # fmt: skip
        facts = {"metric": spec.metric, "domains": domains, "models": list(per_model), "per_model": per_model}
        sentence = " ".join(sentences)
        groups = [f"{m} / {plots.short(st)}" for m, st in zip(table["model"], table["strategy"])]
    domains = facts["domains"]
    fig = plots.grouped_bars(
        groups,
        {dom: table[dom].to_list() for dom in domains},
        spec.metric,
        "Medical vs natural datasets",
        note="Mean over the datasets of each domain of the best configuration per cell; no error bars: datasets "
        "are not replicates (n per bar, and the Welch interval of each medical − natural gap, in the table).",
    )
    return Takeaway(spec, sentence, facts, table, fig)


def _domain_of(ctx: Context, b: pl.DataFrame, spec: TakeawaySpec) -> tuple[pl.DataFrame, dict[str, Any], str]:
    """``domain``'s table, facts and sentence over the best-configuration rows ``b`` (one model's, or a study's
    with one model)."""
    import polars as pl

    col = _col(spec)
    domains = sorted(b["domain"].unique().to_list(), key=lambda d: (d != "medical", d))
    strategies = _strategy_order(b["strategy"].to_list())
    prompt = [s for s in strategies if not is_baseline(s)]
    rows = {s: {"strategy": s} for s in strategies}
    facts: dict[str, Any] = {"metric": spec.metric, "domains": domains}
    parts = []
    for dom in domains:
        d = b.filter(pl.col("domain") == dom)
        per = d.group_by("strategy").agg(pl.col(col).mean().alias("m"), pl.len().alias("n"))
        for s, m, n in per.iter_rows():
            rows[s][dom], rows[s][f"n_{dom}"] = m, n
        present = d.filter(pl.col("strategy").is_in(prompt))
        n_strat = present["strategy"].n_unique()
        full = present.group_by(["model", "dataset"]).agg(pl.col("strategy").n_unique().alias("k"))
        common = full.filter(pl.col("k") == n_strat).select("model", "dataset")
        basis = present.join(common, on=["model", "dataset"]) if common.height else present
        ranked = (
            basis.group_by("strategy")
            .agg(pl.col(col).mean().alias("m"))
            .sort(["m", "strategy"], descending=[True, False])
        )
        if not ranked.height:
            continue
        top, value = ranked["strategy"][0], ranked["m"][0]
        n_ds = common.height or basis["dataset"].n_unique()
        facts[f"best_{dom}_value"] = value
        facts[f"{dom}_common_datasets"] = common.height
        scores = seed_scores(ctx, basis, spec.metric)
        vs = {o: pair_up(scores, top, o) for o in ranked["strategy"].to_list()[1:]}
        facts[f"{dom}_comparisons"] = {o: None if p is None else p.__dict__ for o, p in vs.items()}
        where = f"mean {_fmt(value)} over {n_ds} {dom} dataset(s) every strategy finished"
        if not vs:
            facts[f"best_{dom}"] = top
            parts.append(f"on {dom} data {top} is the only prompt tuning that finished ({where})")
            continue
        runner = ranked["strategy"][1]
        unclear = [o for o, p in vs.items() if p is None or not p.clear]
        if not unclear:
            facts[f"best_{dom}"] = top
            ahead = claim(vs[runner], top, runner, spec.metric)
            parts.append(
                f"on {dom} data {top} is the best prompt tuning ({where}; {ahead}, the runner-up; clearly ahead of "
                f"all {len(vs)} other(s))"
            )
        else:
            facts[f"best_{dom}"] = None  # no winner while an interval includes 0
            facts[f"leader_{dom}"] = top
            parts.append(
                f"on {dom} data {top} has the highest mean but is not clearly best ({where}; "
                + "; ".join(claim(vs[o], top, o, spec.metric) for o in unclear)
                + ")"
            )
    if not parts:
        raise Skip("no prompt-tuning strategy finished")
    table = pl.DataFrame([rows[s] for s in strategies])
    for dom in domains:
        if dom not in table.columns:
            table = table.with_columns(pl.lit(None, dtype=pl.Float64).alias(dom))
    table = table.select("strategy", *domains, *[c for c in table.columns if c.startswith("n_")])
    if {"medical", "natural"} <= set(domains):
        gaps = {}
        for st in strategies:
            per_ds = b.filter(pl.col("strategy") == st)
            med = per_ds.filter(pl.col("domain") == "medical")[col].to_list()
            nat = per_ds.filter(pl.col("domain") == "natural")[col].to_list()
            gaps[st] = welch(med, nat, "Welch t over datasets")
        ordered = [gaps[s] for s in strategies]
        table = table.with_columns(
            pl.Series("medical - natural", [None if g is None else g.effect for g in ordered], pl.Float64),
            pl.Series("gap ci95 lo", [None if g is None else g.lo for g in ordered], pl.Float64),
            pl.Series("gap ci95 hi", [None if g is None else g.hi for g in ordered], pl.Float64),
        )
        facts["gaps"] = {s: None if g is None else g.__dict__ for s, g in gaps.items()}
        drops = {s: g for s, g in gaps.items() if g is not None and s in prompt}
        if drops:
            value, worst = min((g.effect, s) for s, g in drops.items())
            g = drops[worst]
            facts.update(largest_drop=worst, largest_drop_value=value, largest_drop_clear=g.clear)
            verdict = "" if g.clear else "; no clear difference between the domains"
            parts.append(f"{worst} loses most on medical data (medical − natural {g.text()}{verdict})")
    else:
        parts.append(f"this study has only {domains[0]} datasets")
    sentence = "; ".join(parts) + "."
    return table, facts, sentence[0].upper() + sentence[1:]


def towers(ctx: Context, spec: TakeawaySpec) -> Takeaway:
    """Unimodal (text, visual) vs multimodal: the best strategy of each family per dataset (chosen on validation).

    Families come from the strategies' prompted towers; SAM 3's ``detr_vpt`` (prompts in its DETR fusion encoder,
    appended to the image tokens) is image-side, so "unimodal visual". With no multimodal strategy at all (CRIS and
    SAM 3 take none) the image-side family becomes the reference, so text vs image prompts is still answered.
    """
    import polars as pl

    _need(ctx, spec)
    col = _col(spec)
    ref = spec.options.get("reference", "multimodal")
    tol = float(spec.options.get("tolerance", 0.01))
    b = ctx.best.filter(pl.col(col).is_not_null() & (pl.col("towers") != "baseline"))
    fam = (
        b.sort("objective", descending=ctx.mode == "max")
        .group_by(["model", "dataset", "towers"], maintain_order=True)
        .first()
        .select(
            "model",
            "dataset",
            "towers",
            "strategy",
            col,
            *([ci] if (ci := f"{spec.metric} ci95") in b.columns else []),
            *(["trial_ids"] if "trial_ids" in b.columns else []),
        )
    )
    families = [f for f in ("unimodal text", "unimodal visual", "multimodal") if f in fam["towers"].to_list()]
    asked, lead = ref, ""
    if ref not in families and ref == "multimodal" and {"unimodal text", "unimodal visual"} <= set(families):
        # CRIS and SAM 3 take no multimodal prompts: a study of them still asks text vs image-side prompts
        ref = "unimodal visual"
        lead = "no multimodal strategy finished, so image-side (visual) prompt tuning is the reference: "
    if ref not in families:
        raise Skip(f"no {ref} strategy finished")
    table = (
        fam.pivot(on="towers", index=["model", "dataset"], values=col)
        .sort(["model", "dataset"])
        .select("model", "dataset", *families)  # text, visual, multimodal: the same order in every study
    )
    facts: dict[str, Any] = {"metric": spec.metric, "tolerance": tol, "reference": ref, "reference_asked": asked}
    where = "datasets" if table["model"].n_unique() == 1 else "(model, dataset) pairs"
    scores = seed_scores(ctx, fam, spec.metric, ("model", "dataset", "towers"))
    parts = []
    for f in families:
        if f == ref:
            continue
        both = table.filter(pl.col(f).is_not_null() & pl.col(ref).is_not_null())
        gap = (both[ref] - both[f]).to_list()  # signed: ref - family
        within = sum(abs(g) <= tol for g in gap)  # "within" is a distance, either side
        key = f.split()[-1]
        facts[f"{key}_within"], facts[f"{key}_n"] = within, both.height
        facts[f"{key}_mean_gap"] = sum(gap) / len(gap) if gap else None
        test = pair_up(scores, ref, f)  # ref − family, paired over datasets and seeds
        facts[f"{key}_paired"] = None if test is None else test.__dict__
        name = {"unimodal visual": "visual prompt tuning", "unimodal text": "textual prompt tuning"}.get(f, f)
        verdict = "no clear difference" if test is None or not test.clear else "a clear difference"
        parts.append(
            f"{name} is within {tol:g} {spec.metric} of {ref} on {within} of {both.height} {where} ({verdict}: "
            f"{ref} − {name.split()[0]} {test.text() if test else 'n/a'}, paired over datasets and seeds)"
        )
    if not parts:
        raise Skip("no unimodal strategy finished")
    sentence = lead + "; ".join(parts) + "."
    sentence = sentence[0].upper() + sentence[1:]
    groups = [d if table["model"].n_unique() == 1 else f"{m}/{d}" for m, d in zip(table["model"], table["dataset"])]
    errors = None
    if f"{spec.metric} ci95" in fam.columns:
        cis = fam.pivot(on="towers", index=["model", "dataset"], values=f"{spec.metric} ci95").sort(
            ["model", "dataset"]
        )
        errors = {f: cis[f].to_list() for f in families if f in cis.columns}
    fig = plots.grouped_bars(
        groups,
        {f: table[f].to_list() for f in families},
        spec.metric,
        "Unimodal vs multimodal",
        errors=errors,
        note="Best strategy of each family per dataset (chosen on validation); error bars: 95 % CI over seeds "
        "(none with one seed).",
    )
    return Takeaway(spec, sentence, facts, table, fig)


def importance(ctx: Context, spec: TakeawaySpec) -> Takeaway:
    """Hyperparameter importance over the conditional space: ω² within each cell where the parameter is active.

    For each (model, dataset, strategy) cell and each parameter that takes two or more values there, the share of
    the variance of the configurations' score (seeds averaged) explained by the parameter's levels (numbers in up
    to ``max_levels`` quantile bins) is estimated with ω² (bias-corrected, ≈ 0 for a parameter that does not
    matter). A parameter's importance is the mean over the cells where it is active, weighted by their number of
    configurations; cells of strategies that do not take it contribute nothing (rather than a misleading zero).
    """
    import numpy as np
    import polars as pl

    if ctx.cfg.height == 0:
        raise Skip("no finished trials yet")
    use_objective = spec.options.get("on", "objective") == "objective"
    score = "objective" if use_objective else _col(spec)
    if score not in ctx.cfg.columns:
        raise Skip(f"no trial reports {spec.metric}")
    max_levels = int(spec.options.get("max_levels", 4))
    negligible = float(spec.options.get("negligible", 0.01))
    min_configs = int(spec.options.get("min_configs", 8))
    params = [p for p in param_columns(ctx.cfg) if p not in ("n_seeds", "sample_index", "trial_ids", "objective")]
    params = [p for p in params if not p.endswith((" mean", " std", " ci95"))]
    acc: dict[str, list[tuple[float, int, str]]] = {p: [] for p in params}
    for _, cell in ctx.cfg.group_by(list(CELL)):
        cell = cell.filter(pl.col(score).is_not_null() & pl.col(score).is_not_nan())
        if cell.height < min_configs:
            continue
        y = cell[score].to_numpy().astype(float)
        for p in params:
            vals = cell[p].to_list()
            if all(v is None for v in vals) or len({str(v) for v in vals}) < 2:
                continue
            w = omega_squared(levels_of(vals, max_levels), y, clip=False)
            if w is not None:
                acc[p].append((w, len(y), cell["strategy"][0]))
    rows = []
    for p, items in acc.items():
        if not items:
            continue
        weights = np.array([n for _, n, _ in items], float)
        omegas = np.array([w for w, _, _ in items], float)
        rows.append(
            {
                "parameter": p,
                "importance": max(0.0, float((omegas * weights).sum() / weights.sum())),
                "cells": len(items),
                "strategies": ",".join(sorted({s for _, _, s in items})),
            }
        )
    if not rows:
        raise Skip(f"no cell has {min_configs} finished configurations with a parameter taking two values")
    table = pl.DataFrame(rows).sort("importance", descending=True)
    ranking = table["parameter"].to_list()
    small = table.filter(pl.col("importance") < negligible)["parameter"].to_list()
    target = ctx.objective if use_objective else spec.metric
    facts = {
        "ranking": ranking,
        "top": ranking[0],
        "top_value": table["importance"][0],
        "negligible": small,
        "method": "omega-squared within cells",
        "score": target,
    }
    n_cells = int(cast(int, table["cells"].max()))  # a count per row: an int column
    sentence = (
        f"{ranking[0]} matters most (ω² {_fmt(table['importance'][0])} of the variance of {target} within a cell, "
        f"over {n_cells} cell{'s' if n_cells != 1 else ''})"
    )
    rest = [(p, v) for p, v in zip(ranking[1:], table["importance"][1:]) if v >= negligible][:3]
    if rest:
        sentence += "; then " + ", ".join(f"{p} ({_fmt(v)})" for p, v in rest)
    if small:
        sentence += f"; {', '.join(small)} explain{'s' if len(small) == 1 else ''} almost nothing (ω² < {negligible:g})"
    fig = plots.barh(ranking, table["importance"].to_list(), f"ω² (variance of {target} explained)", spec.title)
    return Takeaway(spec, sentence + ".", facts, table, fig)


def effect(ctx: Context, spec: TakeawaySpec) -> Takeaway:
    """Effect of one (categorical or boolean) parameter against a reference level: per cell and level the mean over
    the level's configurations (``select: mean``) or its best one (``select: best``), the difference paired within
    cells and, where both levels ran them, seeds (paired t)."""
    import polars as pl

    _need(ctx, spec)
    p = spec.options["param"]
    col = _col(spec)
    if p not in ctx.cfg.columns:
        raise Skip(f"the study has no parameter {p}")
    cfg = ctx.cfg.with_columns(pl.col(p).cast(pl.String).fill_null("null").alias("_level"))
    active = ctx.cfg.filter(pl.col(p).is_not_null())["strategy"].unique().to_list()
    cfg = cfg.filter(pl.col("strategy").is_in(active))
    lv = per_level(ctx, cfg, "_level", col, spec.options.get("select", "mean")).filter(pl.col(col).is_not_null())
    varied = lv.group_by(list(CELL)).agg(pl.col("_level").n_unique().alias("k")).filter(pl.col("k") >= 2)
    if varied.height == 0:
        raise Skip(f"the study did not vary {p}")
    lv = lv.join(varied.select(CELL), on=list(CELL))
    levels = sorted(lv["_level"].unique().to_list())
    ref = str(spec.options.get("reference", "false" if "false" in levels else levels[0]))
    if ref not in levels:
        raise Skip(f"reference level {ref!r} of {p} never finished")
    base = lv.filter(pl.col("_level") == ref).select(*CELL, pl.col(col).alias("_ref"))
    pairs = lv.join(base, on=list(CELL)).with_columns((pl.col(col) - pl.col("_ref")).alias("diff"))
    table = (
        pairs.group_by(["strategy", "_level"])
        .agg(
            pl.col(col).mean().alias(spec.metric),
            pl.col("diff").mean().alias(f"vs {ref}"),
            (pl.col("diff") > 0).sum().alias("cells better"),
            pl.len().alias("cells"),
        )
        .rename({"_level": p})
        .sort(["strategy", p])
    )
    facts: dict[str, Any] = {"param": p, "reference": ref, "metric": spec.metric}
    scores = seed_scores(ctx, lv, spec.metric, (*CELL, "_level"))
    parts = []
    for level in levels:
        if level == ref:
            continue
        d = pairs.filter(pl.col("_level") == level)
        mean = cast("float | None", d["diff"].mean())  # a float column (None when empty)
        better = int((d["diff"] > 0).sum())
        test = pair_up(scores, level, ref) if scores else paired(d[col].to_list(), d["_ref"].to_list())
        effect = mean if test is None else test.effect
        facts[f"{level}_diff"], facts[f"{level}_better"], facts[f"{level}_cells"] = effect, better, d.height
        facts[f"{level}_paired"] = None if test is None else test.__dict__
        says = "" if test is not None and test.clear else "no clear difference: "
        parts.append(
            f"{p}={level} vs {ref}: {says}{test.text() if test else _fmt(mean, True)} {spec.metric} "
            f"(paired over cells and seeds; better in {better} of {d.height} cells)"
        )
    sentence = "; ".join(parts) + "."
    strategies = _strategy_order(table["strategy"].to_list())
    series = {}
    for level in levels:
        s = table.filter(pl.col(p) == level)
        m = dict(zip(s["strategy"], s[spec.metric]))
        series[f"{p}={level}"] = [m.get(st) for st in strategies]
    fig = plots.grouped_bars(
        strategies,
        series,
        spec.metric,
        spec.title,
        note="Mean over cells per level; the paired difference with its 95 % CI and n is in the sentence.",
    )
    return Takeaway(spec, sentence, facts, table, fig)


def compare_models(ctx: Context, spec: TakeawaySpec) -> Takeaway:
    """Model against model, on the cells they share.

    Every (dataset, strategy) cell that finished on two or more models keeps each model's best configuration there
    (chosen on validation, reported on test, as everywhere). Each pair of models is compared over the cells both
    ran: a − b paired over (dataset, strategy, seed) units (one seed of both models' best configuration of the same
    cell makes a pair; paired t), with its 95 % interval and n, and per strategy over (dataset, seed) — baselines
    too, so zero-shot is compared with zero-shot. A model is named the best only when it is clearly ahead of every
    other; an interval that includes 0 is "no clear difference". One model: nothing to compare (skipped, said so).
    ``detail`` picks the per-strategy comparisons the sentence states (baselines, all or none; the table has all).
    """
    import itertools

    import polars as pl

    _need(ctx, spec)
    col = _col(spec)
    detail = str(spec.options.get("detail", "baselines"))
    if detail not in ("baselines", "all", "none"):
        raise Skip(f"detail must be baselines, all or none, not {detail!r}")
    b = ctx.best.filter(pl.col(col).is_not_null())
    names = plots.model_order(b["model"].unique().to_list())
    if len(names) < 2:
        raise Skip(f"the study has one model ({names[0] if names else 'none finished'}): nothing to compare")
    shared = b.group_by(["dataset", "strategy"]).agg(pl.col("model").n_unique().alias("_k")).filter(pl.col("_k") >= 2)
    if shared.height == 0:
        raise Skip(f"no (dataset, strategy) cell finished on two of the models ({', '.join(names)})")
    b = b.join(shared.select("dataset", "strategy"), on=["dataset", "strategy"])
    names = plots.model_order(b["model"].unique().to_list())
    strategies = _strategy_order(b["strategy"].to_list())
    scores = seed_scores(ctx, b, spec.metric, ("strategy", "dataset", "model"))  # model last: what pair_up compares
    by_strategy = {st: {k: v for k, v in scores.items() if k[0] == st} for st in strategies}
    cells = {m: {(k[0], k[1]) for k in scores if k[2] == m} for m in names}
    test = "paired t over (dataset, strategy, seed)"
    rows: list[dict[str, Any]] = []
    pairs: dict[str, Paired | None] = {}
    oriented: list[tuple[str, str]] = []

    def row(scope: str, a: str, o: str, p: Paired | None, n_cells: int) -> dict[str, Any]:
        verdict = (
            "no pairs" if p is None else (f"{a if p.effect > 0 else o} ahead" if p.clear else "no clear difference")
        )
        return {
            "scope": scope,
            "model a": a,
            "model b": o,
            "a - b": None if p is None else p.effect,
            "ci95 lo": None if p is None else p.lo,
            "ci95 hi": None if p is None else p.hi,
            "n": 0 if p is None else p.n,
            "cells": n_cells,
            "p": None if p is None else p.p,
            "test": test if scope == "all shared cells" else "paired t over (dataset, seed)",
            "verdict": verdict,
        }

    for a, o in itertools.combinations(names, 2):  # catalog order, unless the second is clearly ahead
        p = pair_up(scores, a, o)
        if p is not None and p.clear and p.effect < 0:
            a, o = o, a
            p = pair_up(scores, a, o)
        oriented.append((a, o))
        pairs[f"{a} vs {o}"] = p
        rows.append(row("all shared cells", a, o, p, len(cells[a] & cells[o])))
    per_strategy: dict[str, dict[str, Paired]] = {}
    for st in strategies:
        for a, o in oriented:
            p = pair_up(by_strategy[st], a, o)
            if p is None:
                continue
            per_strategy.setdefault(st, {})[f"{a} vs {o}"] = p
            rows.append(row(st, a, o, p, sum(1 for c in cells[a] & cells[o] if c[0] == st)))
    table = pl.DataFrame(rows, schema_overrides={"a - b": pl.Float64, "ci95 lo": pl.Float64, "ci95 hi": pl.Float64,
                                                 "p": pl.Float64})  # fmt: skip

    def beats(m: str, other: str) -> bool:
        p = pairs.get(f"{m} vs {other}") or pairs.get(f"{other} vs {m}")
        if p is None or not p.clear:
            return False
        return (p.effect > 0) == (f"{m} vs {other}" in pairs)

    winner = next((m for m in names if all(beats(m, o) for o in names if o != m)), None)
    clear = [k for k, p in pairs.items() if p is not None and p.clear]
    unclear = [k for k, p in pairs.items() if p is None or not p.clear]
    facts: dict[str, Any] = {
        "metric": spec.metric,
        "models": names,
        "cells": shared.height,
        "winner": winner,
        "clear": clear,
        "unclear": unclear,
        "pairs": {k: None if p is None else p.__dict__ for k, p in pairs.items()},
        "per_strategy": {st: {k: p.__dict__ for k, p in ps.items()} for st, ps in per_strategy.items()},
        "test": "paired t over (dataset, strategy, seed) units: each pair is one seed of both models' best "
        "configuration of the same cell (per strategy: over (dataset, seed))",
    }
    head = (
        f"Over the {shared.height} (dataset, strategy) cell{'s' if shared.height != 1 else ''} finished on two or "
        f"more of {', '.join(names)} (paired over dataset, strategy and seed): "
    )
    parts = [claim(pairs[f"{a} vs {o}"], a, o, spec.metric) for a, o in oriented]
    if winner is not None:
        parts.append(f"{winner} is the best model here, clearly ahead of every other")
    else:
        parts.append("no model is clearly ahead of every other")
    for st in strategies if detail != "none" else []:
        if (detail == "baselines" and not is_baseline(st)) or st not in per_strategy:
            continue
        said = [claim(per_strategy[st][f"{a} vs {o}"], a, o, spec.metric) for a, o in oriented
                if f"{a} vs {o}" in per_strategy[st]]  # fmt: skip
        parts.append(f"on {label(st)} [{st}] alone (paired over dataset and seed): " + "; ".join(said))
    sentence = head + "; ".join(parts) + "."
    max_panels = int(spec.options.get("max_panels", 6))
    ci_col = f"{spec.metric} ci95"
    datasets = sorted(b["dataset"].unique().to_list())
    panels = []
    for ds in datasets[:max_panels]:
        d = b.filter(pl.col("dataset") == ds)
        cats = _strategy_order(d["strategy"].to_list())
        pts: plots.Points = {}
        for m in names:
            dm = d.filter(pl.col("model") == m)
            if dm.height == 0:
                continue
            ci = dm[ci_col].to_list() if ci_col in dm.columns else [None] * dm.height
            got = dict(zip(dm["strategy"].to_list(), zip(dm[col].to_list(), ci, dm["n_seeds"].to_list())))
            pts[m] = (
                [got.get(c, (None, None, None))[0] for c in cats],
                [got.get(c, (None, None, None))[1] for c in cats],
                [got.get(c, (None, None, None))[2] for c in cats],
            )
        panels.append((ds, cats, pts))
    seeds = sorted({int(n) for n in b["n_seeds"].drop_nulls().to_list()})
    n_text = f"n = {seeds[0]}" if len(seeds) == 1 else f"n = {seeds[0]} to {seeds[-1]}"
    left = f" First {max_panels} of {len(datasets)} datasets shown." if len(datasets) > max_panels else ""
    fig = plots.model_points(
        panels,
        spec.metric,
        spec.title,
        note=f"Best configuration of each model per (dataset, strategy) cell finished on two or more models, chosen "
        f"on validation, reported on test: mean ± 95 % CI over the n seeds of that configuration ({n_text}; no bar "
        f"with one seed). The paired model differences, with their 95 % CI and n, are in the table.{left}",
    )
    return Takeaway(spec, sentence, facts, table, fig)


# name -> (function, required options, optional options)
KINDS: dict[str, tuple[Callable[[Context, TakeawaySpec], Takeaway], set[str], set[str]]] = {
    "trend": (trend, {"x"}, {"lines", "min_effect", "max_panels", "select"}),
    "matrix": (matrix, set(), set()),
    "domain": (domain, set(), set()),
    "towers": (towers, set(), {"reference", "tolerance"}),
    "importance": (importance, set(), {"on", "max_levels", "negligible", "min_configs"}),
    "effect": (effect, {"param"}, {"reference", "select"}),
    "models": (compare_models, set(), {"detail", "max_panels"}),
}


# ----------------------------------------------------------------------------------------------------- loading


def parse(data: Any, source: str, where: Callable[[tuple], str] = lambda p: "") -> TakeawaySpec:
    """A validated spec from plain data; errors name the file (and line:col when known)."""

    def fail(path: tuple, msg: str) -> VlsmBatchError:
        return VlsmBatchError(f"{source}{where(path)}: {'.'.join(map(str, path)) or 'takeaway'}: {msg}")

    if not isinstance(data, dict):
        raise fail((), "must be a mapping with at least 'name' and 'kind'")
    for key in ("name", "kind"):
        if not isinstance(data.get(key), str):
            raise fail((key,), "required (a string)")
    if not re.fullmatch(r"[A-Za-z0-9_-]+", data["name"]):
        raise fail(("name",), "letters, digits, _ and - only")
    if data["kind"] not in KINDS:
        raise fail(("kind",), f"unknown kind; valid: {', '.join(KINDS)}")
    _, required, optional = KINDS[data["kind"]]
    for key in data:
        if key not in COMMON | required | optional:
            raise fail(
                (key,), f"unknown key for kind {data['kind']}; valid: {', '.join(sorted(COMMON | required | optional))}"
            )
    for key in required:
        if key not in data:
            raise fail((key,), f"required for kind {data['kind']}")
    if "sentence" in data and not isinstance(data["sentence"], str):
        raise fail(("sentence",), "must be a string")
    return TakeawaySpec(
        name=data["name"],
        kind=data["kind"],
        title=str(data.get("title", data["name"])),
        options={k: v for k, v in data.items() if k in required | optional},
        order=int(data.get("order", 100)),
        metric=str(data.get("metric", "test/dice")),
        sentence=data.get("sentence"),
        description=str(data.get("description", "")),
        source=source,
    )


def load_file(path: Path) -> TakeawaySpec:
    from ..spec.yamlsafe import read_yaml

    text = path.read_text(encoding="utf-8")
    doc = read_yaml(text, str(path))

    def where(p: tuple) -> str:
        line, col = doc.where(p, key=True)
        return f":{line}:{col}"

    return parse(doc.data, str(path), where)


def load(extra: list[Path] | None = None, builtin: bool = True) -> list[TakeawaySpec]:
    """Built-in takeaways, then those under ``extra`` (files or folders of ``*.yaml``); later names win."""
    files: list[Path] = sorted(BUILTIN_DIR.glob("*.yaml")) if builtin else []
    for p in extra or []:
        p = Path(p)
        if p.is_dir():
            files += sorted([*p.glob("*.yaml"), *p.glob("*.yml")])
        elif p.is_file():
            files.append(p)
        else:
            raise VlsmBatchError(f"--takeaways {p}: no such file or folder")
    specs: dict[str, TakeawaySpec] = {}
    for f in files:
        s = load_file(f)
        specs[s.name] = s
    return sorted(specs.values(), key=lambda s: (s.order, s.name))


class _Facts(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "?}"


def compute(ctx: Context, spec: TakeawaySpec) -> Takeaway:
    fn = KINDS[spec.kind][0]
    try:
        out = fn(ctx, spec)
    except Skip as why:
        return Takeaway(spec, skipped=str(why))
    if spec.sentence:
        facts = _Facts({k: (_fmt(v) if isinstance(v, float) else v) for k, v in out.facts.items()})
        try:
            out.sentence = spec.sentence.format_map(facts)
        except (ValueError, IndexError, AttributeError, KeyError) as exc:
            out.sentence = f"(sentence template error: {exc}) {out.sentence}"
    return out
