"""analyze on synthetic finished studies with planted effects (files written directly, no training)."""

from __future__ import annotations

import json
import math
import os
from html import unescape
from pathlib import Path

import polars as pl
import pytest

from vlsm_batch.analysis import takeaways as tk
from vlsm_batch.analysis.collect import cache_path, collect
from vlsm_batch.analysis.run import analyze
from vlsm_batch.analysis.stats import omega_squared, t975, within_slope
from vlsm_batch.analysis.synthetic import write_study
from vlsm_batch.analysis.tables import bin_column, configs
from vlsm_batch.cli import main
from vlsm_batch.layout import StudyLayout

REPO = Path(__file__).resolve().parent.parent
DATASETS = ("kvasir_polyp", "isic", "busi", "voc2012")
STRATEGIES = ("coop", "vpt", "maple", "shared_attn", "zero_shot", "decoder_finetune", "finetune")
MISSING = (("clipseg", "busi", "maple"),)  # a whole cell failed


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("analysis") / "runs" / "syn"
    syn = write_study(root, datasets=DATASETS, strategies=STRATEGIES, configs=32, missing_cells=MISSING)
    result = analyze(StudyLayout(root), ["prompt_depth"])
    return syn, result


def _takeaway(result, name):
    return next(t for t in result.takeaways if t.spec.name == name)


# --------------------------------------------------------------------------------------------- collection


def test_collection_flags_failed_running_and_derives_domain(study):
    syn, result = study
    df = collect(StudyLayout(syn.root))
    assert df.height == len(syn.trials) == result.n_trials
    states = dict(df.group_by("state").len().iter_rows())
    assert states["failed"] > 0 and states["running"] > 0 and states["done"] == result.n_done
    failed = df.filter(pl.col("state") == "failed")
    assert set(failed["error_class"].to_list()) == {"RuntimeError"}
    assert failed["val/dice"].null_count() == failed.height  # no metrics for failed trials
    dom = dict(df.select("dataset", "domain").unique().iter_rows())
    assert dom == {"kvasir_polyp": "medical", "isic": "medical", "busi": "medical", "voc2012": "natural"}
    tow = dict(df.select("strategy", "towers").unique().iter_rows())
    assert tow["coop"] == "unimodal text" and tow["vpt"] == "unimodal visual" and tow["maple"] == "multimodal"
    assert tow["finetune"] == "baseline" and tow["decoder_finetune"] == "baseline"
    # parameters a strategy does not take are null for it
    assert (
        df.filter(pl.col("strategy") == "vpt")["context_init"].null_count()
        == df.filter(pl.col("strategy") == "vpt").height
    )


def test_cache_rereads_only_changed_trials(tmp_path):
    syn = write_study(tmp_path / "s", configs=3, datasets=("isic",), strategies=("vpt",), running=0.0, failed=0.0)
    layout = StudyLayout(syn.root)
    stats: dict[str, int] = {}
    cold = collect(layout, stats=stats)
    assert stats == {"read": len(syn.trials), "cached": 0} and cache_path(layout).is_file()
    warm = collect(layout, stats=stats)
    assert stats == {"read": 0, "cached": len(syn.trials)}
    assert warm.drop("_sig").equals(cold.drop("_sig"))
    # one trial's metrics change: only it is re-read, and the new value shows
    tid = syn.trials[0].trial_id
    m = layout.trial(tid).metrics
    data = json.loads(m.read_text())
    data["test/dice"] = 0.123456
    m.write_text(json.dumps(data))
    os.utime(m, ns=(m.stat().st_atime_ns, m.stat().st_mtime_ns + 10_000_000))
    again = collect(layout, stats=stats)
    assert stats == {"read": 1, "cached": len(syn.trials) - 1}
    assert again.filter(pl.col("trial_id") == tid)["test/dice"][0] == pytest.approx(0.123456)
    # a trial that becomes failed loses its metrics
    (layout.trial(tid).status).write_text(json.dumps({"state": "failed", "error": {"class": "OOM"}}))
    os.utime(layout.trial(tid).status, ns=(1, 1))
    row = collect(layout, stats=stats).filter(pl.col("trial_id") == tid).row(0, named=True)
    assert row["state"] == "failed" and row["error_class"] == "OOM" and row["test/dice"] is None
    # --no-cache reads everything and leaves the cache alone
    before = cache_path(layout).stat().st_mtime_ns
    collect(layout, use_cache=False, stats=stats)
    assert stats["read"] == len(syn.trials) and cache_path(layout).stat().st_mtime_ns == before


def test_damaged_cache_is_rebuilt(tmp_path):
    syn = write_study(tmp_path / "s", configs=2, datasets=("isic",), strategies=("vpt",))
    layout = StudyLayout(syn.root)
    collect(layout)
    cache_path(layout).write_bytes(b"not parquet")
    stats: dict[str, int] = {}
    assert collect(layout, stats=stats).height == len(syn.trials) and stats["cached"] == 0


# ------------------------------------------------------------------------------------ selection and seeds


def test_selection_uses_validation_never_test(study):
    syn, result = study
    b = result.best_table
    chosen = {tid for ids in b["trial_ids"].to_list() for tid in ids.split(",")}
    assert syn.trap_ids and not chosen & set(syn.trap_ids)  # best on test, poor on validation: never chosen
    cfg = configs(collect(StudyLayout(syn.root)), "val/dice", ["test/dice"])
    for row in b.iter_rows(named=True):
        cell = cfg.filter(
            (pl.col("model") == row["model"])
            & (pl.col("dataset") == row["dataset"])
            & (pl.col("strategy") == row["strategy"])
        )
        assert row["objective"] == pytest.approx(cell["objective"].max())
    vpt = b.filter(pl.col("strategy") == "vpt")
    assert (vpt["test/dice mean"] < 0.99).all()  # the trap's 0.999 test score is never reported


def test_seeds_are_replicates_with_t_interval(study):
    _, result = study
    b = result.best_table
    row = b.filter(pl.col("n_seeds") == 2).row(0, named=True)
    assert row["test/dice ci95"] == pytest.approx(t975(1) * row["test/dice std"] / math.sqrt(2))
    assert len(row["trial_ids"].split(",")) == 2
    assert t975(1) == pytest.approx(12.706, abs=1e-3) and t975(200) == pytest.approx(1.972, abs=0.002)


def test_missing_cell_is_absent_not_fatal(study):
    _, result = study
    b = result.best_table
    assert b.filter((pl.col("dataset") == "busi") & (pl.col("strategy") == "maple")).height == 0
    table = _takeaway(result, "strategies").table
    assert table.filter(pl.col("strategy") == "maple")["busi"][0] is None
    order = table["strategy"].to_list()
    assert order[0] == "zero_shot" and order[-2:] == ["decoder_finetune", "finetune"]  # fine-tunes last


# --------------------------------------------------------------------------------------- planted effects


def test_depth_helps_visual_and_multimodal_not_textual(study):
    _, result = study
    t = _takeaway(result, "depth")
    assert {"vpt", "maple", "shared_attn"} <= set(t.facts["helps_names"])
    assert "coop" in t.facts["flat_names"]
    assert t.sentence.startswith("Raising prompt_depth helps ")
    assert "no clear difference for coop" in t.sentence and "paired slope t" in t.sentence
    slopes = {s["strategy"]: s for s in t.facts["slopes"]}
    assert set(slopes) == {"coop", "vpt", "maple", "shared_attn"}  # baselines have no depth
    for name in ("vpt", "maple", "shared_attn"):  # planted +0.02 per layer, paired over datasets x seeds
        s = slopes[name]
        assert s["lo"] > 0 and s["slope"] == pytest.approx(0.02, abs=0.003) and s["test"] == "paired slope t"
        assert s["n"] == s["units"] >= 2 * (len(DATASETS) - 1)
    assert slopes["coop"]["lo"] < 0 < slopes["coop"]["hi"]
    assert set(t.table["scope"].unique().to_list()) == {"pooled", *DATASETS}


def test_domain_leader_is_not_called_best_on_too_few_pairs(study):
    _, result = study
    t = _takeaway(result, "domain")
    # maple failed on busi, so vpt and maple share two medical datasets (4 pairs with 2 seeds): the planted lead of
    # vpt does not clear its interval there, and the sentence says so instead of naming a winner
    assert t.facts["leader_medical"] == "vpt" and t.facts["best_medical"] is None
    vs_maple = t.facts["medical_comparisons"]["maple"]
    assert vs_maple["n"] == 4 and vs_maple["lo"] < 0 < vs_maple["hi"] and vs_maple["effect"] > 0
    assert "On medical data vpt has the highest mean but is not clearly best" in t.sentence
    assert "no clear difference between vpt and maple (vpt − maple +" in t.sentence
    assert t.facts["largest_drop"] == "coop"
    # one natural dataset: the medical - natural gap has no interval, so no difference between domains is claimed
    assert t.facts["gaps"]["coop"]["groups"] == (3, 1) and t.facts["gaps"]["coop"]["lo"] is None
    assert "no interval" in t.sentence and "no clear difference between the domains" in t.sentence


def test_visual_close_to_multimodal_text_is_not(study):
    _, result = study
    t = _takeaway(result, "towers")
    assert t.facts["text_within"] == 0 and t.facts["text_n"] == len(DATASETS)
    n = t.facts["visual_within"]
    # "within" is a distance: |multimodal - visual| <= 0.01 on either side, never a signed gap
    gaps = (t.table["multimodal"] - t.table["unimodal visual"]).drop_nulls().to_list()
    assert n == sum(abs(g) <= 0.01 for g in gaps) and 1 <= n < len(gaps)
    assert "no clear difference" in t.sentence.split("visual prompt tuning")[-1]
    assert f"visual prompt tuning is within 0.01 test/dice of multimodal on {n} of 4 datasets" in t.sentence.lower()


def test_importance_ranks_the_parameter_that_matters(study):
    _, result = study
    t = _takeaway(result, "importance")
    table = dict(zip(t.table["parameter"], t.table["importance"]))
    ranking = t.facts["ranking"]
    assert ranking.index("lr") < ranking.index("weight_decay")
    assert ranking.index("prompt_depth") < ranking.index("weight_decay")
    assert table["lr"] > 0.1 and table["weight_decay"] < 0.05
    assert "weight_decay" in t.facts["negligible"]
    # conditional space: context_init is judged only where it exists (coop, maple)
    ctx_row = t.table.filter(pl.col("parameter") == "context_init").row(0, named=True)
    assert ctx_row["strategies"] == "coop,maple"


def test_upsampler_helps_context_init_does_not(study):
    _, result = study
    up = _takeaway(result, "upsampler")
    assert up.facts["true_diff"] == pytest.approx(0.03, abs=0.015)
    ci = _takeaway(result, "context_init")
    diffs = [v for k, v in ci.facts.items() if k.endswith("_diff")]
    assert diffs and all(abs(d) < 0.02 for d in diffs)


def test_stats_helpers():
    import numpy as np

    rng = np.random.default_rng(0)
    labels = np.repeat(np.array(["a", "b", "c"]), 30)
    assert omega_squared(labels, rng.normal(size=90)) < 0.05
    y = np.repeat([0.0, 1.0, 2.0], 30) + rng.normal(scale=0.1, size=90)
    assert omega_squared(labels, y) > 0.9
    assert omega_squared(np.array(["a", "a"]), np.array([1.0, 2.0])) is None
    slope, _half, n = within_slope([1, 2, 3, 1, 2, 3], [0.1, 0.2, 0.3, 1.1, 1.2, 1.3], list("aaabbb"))
    assert slope == pytest.approx(0.1) and n == 6


def test_binning_orders_intervals():
    df = pl.DataFrame({"lr": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, None]})
    out = bin_column(df, "lr", 2)
    assert out["lr"].dtype == pl.Enum
    assert out["lr"].to_list()[:5] == ["[0.0001, 0.001)"] * 2 + ["[0.001, 0.01]"] * 3
    assert out["lr"][5] is None


# ------------------------------------------------------------------------------------------ outputs, CLI


def test_outputs_tables_plots_report(study):
    syn, result = study
    a = syn.root / "analysis"
    for name in ("trials", "by_prompt_depth", "configs", "best_per_cell", "takeaway_depth", "takeaway_importance"):
        assert (a / "tables" / f"{name}.csv").is_file() and (a / "tables" / f"{name}.parquet").is_file(), name
    answered = [t for t in result.takeaways if t.spec.kind != "models"]
    (models,) = [t for t in result.takeaways if t.spec.kind == "models"]
    assert models.skipped == "the study has one model (clipseg): nothing to compare"  # said, not failed
    assert not (a / "plots" / "takeaway_models.png").exists()
    for t in answered:
        assert not t.skipped, (t.spec.name, t.skipped)
        assert (a / "plots" / f"takeaway_{t.spec.name}.png").read_bytes()[:4] == b"\x89PNG"
        assert b"<svg" in (a / "plots" / f"takeaway_{t.spec.name}.svg").read_bytes()[:400]
    html = (a / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') == len(answered) + 1
    assert "http://" not in html and "https://" not in html  # nothing to fetch
    assert "Not answered: the study has one model (clipseg): nothing to compare." in html
    for t in answered:
        assert t.sentence in unescape(html)
    md = (a / "summary.md").read_text()
    assert "## Takeaways" in md and "![depth](plots/takeaway_depth.png)" in md
    saved = json.loads((a / "takeaways.json").read_text())
    assert [s["name"] for s in saved] == [t.spec.name for t in result.takeaways]


def test_cli_by_several_bin_and_formats(study, capsys):
    syn, _ = study
    assert main(["analyze", "--study", str(syn.root), "--by", "strategy,lr", "--bin", "lr=3", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {r["strategy"] for r in data["table"]} >= {"vpt", "coop"}
    assert len({r["lr"] for r in data["table"] if r["lr"]}) == 3
    assert {t["name"] for t in data["takeaways"]} >= {"depth", "strategies", "domain", "towers", "importance"}
    assert data["best"] and all("test/dice mean" in r for r in data["best"])
    assert (syn.root / "analysis/tables/by_strategy_lr.parquet").is_file()
    assert main(["analyze", "--study", str(syn.root), "--format", "markdown"]) == 0
    assert capsys.readouterr().out.startswith("# Analysis of `syn`")
    assert main(["analyze", "--study", str(syn.root), "--by", "domain", "--by", "towers"]) == 0
    out = capsys.readouterr().out
    assert "unimodal visual" in out and "Takeaways" in out and "Raising prompt_depth helps" in out
    assert main(["analyze", "--study", str(syn.root), "--bin", "strategy"]) == 2
    assert "not a numeric column" in capsys.readouterr().err


def test_user_takeaway_files(study, tmp_path, capsys):
    syn, _ = study
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "up.yaml").write_text(
        "name: upsampler_best\nkind: effect\ntitle: Upsampler, best per level\nparam: learnable_upsampler\n"
        "select: best\nsentence: 'upsampler gains {true_diff} in {true_better} of {true_cells} cells'\n"
    )
    assert main(["analyze", "--study", str(syn.root), "--takeaways", str(mine), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    mine_t = next(t for t in data["takeaways"] if t["name"] == "upsampler_best")
    assert mine_t["sentence"].startswith("upsampler gains 0.0") and " cells" in mine_t["sentence"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nkind: trend\nx: prompt_depth\ncolour: red\n")
    assert main(["analyze", "--study", str(syn.root), "--takeaways", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:4:1: colour: unknown key for kind trend" in err


def test_repo_analysis_folder_takeaways_parse():
    specs = tk.load([REPO / "analysis"], builtin=False)
    assert specs, "analysis/ holds example takeaways"
    assert all(s.kind in tk.KINDS for s in specs)


def test_partly_finished_study_still_analyses(tmp_path, capsys):
    syn = write_study(
        tmp_path / "p", configs=2, datasets=("isic",), strategies=("vpt", "coop"), failed=0.6, running=0.4
    )
    assert main(["analyze", "--study", str(syn.root), "--by", "strategy"]) == 0
    out = capsys.readouterr().out
    assert "0 of" in out and "not answered (no finished trials yet)" in out
    html = (syn.root / "analysis" / "report.html").read_text()
    assert "Not answered" in html
    assert not list((syn.root / "analysis" / "plots").glob("takeaway_*"))  # nothing stale, nothing empty
