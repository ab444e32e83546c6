"""Every trial of a study (parameters, state, metrics) in one Polars frame, cached as Parquet.

The cache (``analysis/cache/trials.parquet``) keeps, per trial, a signature of its ``status.json`` and
``metrics.json`` (size and modification time). A later collection re-reads only the trials whose signature
changed, the trials new to ``trials.jsonl``, and those still pending or running (a local process may have died
without touching its files; Slurm may know a job ended: the same merge as ``status``); every other row comes from
the cache through a lazy scan.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..jobs import store
from ..jobs.store import ACTIVE
from ..jobs.study import read_manifest
from ..layout import StudyLayout, atomic_path
from ..trials import Trial

if TYPE_CHECKING:
    import polars as pl

AXES = ("model", "dataset", "strategy", "seed")
CACHE_VERSION = 3
TRAIN_PREFIX = "train."  # train settings as columns: train.max_epochs, train.early_stopping.patience, ...
SIG, CONFIG = "_sig", "config_id"
# Columns added from the registries after collection (never cached: a registry edit must show at once).
DERIVED = ("domain", "towers")
# SAM 3's detr_vpt prompts its DETR fusion encoder on the image side (tokens appended to the image tokens): visual
TOWER_LABELS = {"text": "unimodal text", "vision": "unimodal visual", "fusion": "unimodal visual", "both": "multimodal"}


def config_id(trial: Trial) -> str:
    """The configuration a trial replicates: everything but its seed (seeds are replicates of one config).

    The identity holds the model, dataset, strategy, every sampled or fixed parameter and every train setting
    (epochs, batch size, precision, early stopping, the dataset's definition), so a resubmission with another
    ``max_epochs`` is a second configuration, never more seeds of the first.
    """
    ident = {k: v for k, v in trial.identity().items() if k != "seed"}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:12]


def train_columns(train: dict[str, Any], prefix: str = TRAIN_PREFIX) -> dict[str, Any]:
    """A trial's train settings flattened into columns (``train.max_epochs``), so ``--by`` can group by them."""
    out: dict[str, Any] = {}
    for k, v in train.items():
        if isinstance(v, dict):
            out.update(train_columns(v, f"{prefix}{k}."))
        elif isinstance(v, (int, float, str, bool)) or v is None:
            out[f"{prefix}{k}"] = v
    return out


def _stamp(path: Path) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return "-"
    return f"{st.st_mtime_ns}:{st.st_size}"


def signature(layout: StudyLayout, trial_id: str) -> str:
    paths = layout.trial(trial_id)
    return f"{_stamp(paths.status)}|{_stamp(paths.metrics)}|v{CACHE_VERSION}"


def _statuses(layout: StudyLayout, trials: list[Trial]) -> dict[str, store.TrialRecord]:
    """Records judged as ``status`` judges them (active ones checked against their process; nothing written)."""
    from ..jobs.study import study_records

    return study_records(layout, trials, persist=False)


def trial_row(
    layout: StudyLayout, t: Trial, sig: str | None = None, status: store.TrialRecord | None = None
) -> dict[str, Any]:
    from ..layout import read_json

    paths = layout.trial(t.trial_id)
    sig = signature(layout, t.trial_id) if sig is None else sig
    status = store.read(paths) if status is None else status
    state = str(status.state)
    row: dict[str, Any] = {
        "trial_id": t.trial_id,
        "model": t.model,
        "dataset": t.dataset,
        "strategy": t.strategy,
        "seed": t.seed,
        "sample_index": t.sample_index,
        CONFIG: config_id(t),
        "state": state,
        "error_class": (status.error or {}).get("class") if isinstance(status.error, dict) else None,
        "spec_version": status.spec_version,
        SIG: sig,
        "dataset_domain": (t.data.get("custom") or {}).get("domain"),  # datasets declared in the spec
    }
    for k, v in {**t.params, **(status.extra.get("params") or {})}.items():  # tpe: the values asked at start
        row[k] = v
    row.update(train_columns(t.train))
    metrics = read_json(paths.metrics) if state == "done" else None
    for k, v in (metrics or {}).items():
        if isinstance(v, (int, float, str, bool)) or v is None:
            row.setdefault(k, v)
    return row


def trial_rows(layout: StudyLayout) -> list[dict[str, Any]]:
    trials = read_manifest(layout)
    statuses = _statuses(layout, trials)
    return [trial_row(layout, t, status=statuses[t.trial_id]) for t in trials]


def _frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    import polars as pl

    columns: dict[str, None] = {}
    for r in rows:
        columns.update(dict.fromkeys(r))
    return pl.DataFrame({c: [r.get(c) for r in rows] for c in columns}, strict=False)


def cache_path(layout: StudyLayout) -> Path:
    return layout.analysis / "cache" / "trials.parquet"


def collect(layout: StudyLayout, use_cache: bool = True, stats: dict[str, int] | None = None) -> pl.DataFrame:
    """One row per trial (manifest order); parameters a strategy does not take are null for it.

    ``stats`` (when given) receives how many rows were read from files and how many came from the cache.
    """
    import polars as pl

    trials = read_manifest(layout)
    sigs = [signature(layout, t.trial_id) for t in trials]
    cached: pl.DataFrame | None = None
    path = cache_path(layout)
    if use_cache and path.is_file():
        try:
            cached = pl.scan_parquet(path).select(["trial_id", SIG, "state"]).collect()
        except Exception:  # a damaged cache is rebuilt, never fatal
            cached = None
    keep: set[str] = set()
    if cached is not None:
        old = {tid: (sig, state) for tid, sig, state in cached.iter_rows()}
        for t, sig in zip(trials, sigs):
            hit = old.get(t.trial_id)
            if hit is not None and hit[0] == sig and hit[1] not in ACTIVE:
                keep.add(t.trial_id)
    todo = [(t, sig) for t, sig in zip(trials, sigs) if t.trial_id not in keep]
    statuses = _statuses(layout, [t for t, _ in todo])
    fresh = [trial_row(layout, t, sig, statuses[t.trial_id]) for t, sig in todo]
    parts = []
    if keep:
        parts.append(pl.scan_parquet(path).filter(pl.col("trial_id").is_in(list(keep))).collect())
    if fresh:
        parts.append(_frame(fresh))
    if not parts:
        df = pl.DataFrame({"trial_id": [], "state": []}, schema={"trial_id": pl.String, "state": pl.String})
    elif len(parts) == 1:
        df = parts[0]
    else:
        df = pl.concat(parts, how="diagonal_relaxed")
    if df.height:
        order = pl.DataFrame({"trial_id": [t.trial_id for t in trials], "_order": range(len(trials))})
        df = df.join(order, on="trial_id", how="inner").sort("_order").drop("_order")
    if use_cache and fresh:
        with atomic_path(path, durable=False) as tmp:
            df.write_parquet(tmp)
    if stats is not None:
        stats.update(read=len(fresh), cached=len(keep))
    return with_derived(df)


def with_derived(df: pl.DataFrame) -> pl.DataFrame:
    """Add the dataset's domain and the strategy's prompted towers (from the registries)."""
    import polars as pl

    from ..datasets import DATASETS
    from ..strategies import STRATEGIES
    from .plots import BASELINES

    def domain(name: str) -> str:
        return DATASETS.get(name).domain if name in DATASETS else "unknown"

    def towers(name: str) -> str:
        if name not in STRATEGIES:
            return "baseline" if name in BASELINES else "unknown"  # a baseline this build does not register
        info = STRATEGIES.get(name)
        if info.baseline or not info.towers:
            return "baseline"
        key = "both" if len(info.towers) > 1 else next(iter(info.towers))
        return TOWER_LABELS.get(key, key)

    if "dataset" not in df.columns or "strategy" not in df.columns:
        return df
    ds = {d: domain(d) for d in df["dataset"].unique().to_list()}
    st = {s: towers(s) for s in df["strategy"].unique().to_list()}
    domain_expr = pl.col("dataset").replace_strict(ds, return_dtype=pl.String)
    if "dataset_domain" in df.columns:
        domain_expr = pl.coalesce(pl.col("dataset_domain").cast(pl.String), domain_expr)
    return df.drop([c for c in DERIVED if c in df.columns]).with_columns(
        domain_expr.alias("domain"),
        pl.col("strategy").replace_strict(st, return_dtype=pl.String).alias("towers"),
    )
