"""Takeaways state a test, its effect, 95 % CI and n, and claim nothing the interval does not support: the depth
trend as a paired slope test, the domain gap as a Welch interval over datasets, both fine-tune baselines named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy import stats as st

from vlsm_batch.analysis.run import analyze
from vlsm_batch.analysis.stats import Paired, welch
from vlsm_batch.analysis.synthetic import write_study
from vlsm_batch.analysis.tables import best
from vlsm_batch.layout import StudyLayout

DATASETS = ("kvasir_polyp", "isic", "busi", "voc2012", "cityscapes")  # 3 medical, 2 natural
STRATEGIES = ("coop", "vpt", "maple", "shared_attn", "zero_shot", "decoder_finetune", "finetune")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("takeaways") / "runs" / "t"
    write_study(root, datasets=DATASETS, strategies=STRATEGIES, configs=40, failed=0.0, running=0.0)
    return root, analyze(StudyLayout(root), ["strategy"], curves="none")


def _takeaway(result, name):
    return next(t for t in result.takeaways if t.spec.name == name)


def test_depth_trend_is_a_paired_slope_test_over_datasets_and_seeds(study):
    root, result = study
    t = _takeaway(result, "depth")
    vpt = next(s for s in t.facts["slopes"] if s["strategy"] == "vpt")
    # by hand: the best configuration of each (dataset, depth) on validation, its test Dice per seed, one
    # least-squares slope per (dataset, seed), then a one-sample t over those slopes
    from vlsm_batch.analysis.collect import collect
    from vlsm_batch.analysis.tables import configs

    df = collect(StudyLayout(root))
    cfg = configs(df, "val/dice", ["test/dice"]).filter(pl.col("strategy") == "vpt")
    chosen = best(cfg, "max", within=["prompt_depth"])
    seeds = dict(zip(df["trial_id"], zip(df["seed"], df["test/dice"])))
    points: dict[tuple, list] = {}
    for ds, depth, ids in chosen.select("dataset", "prompt_depth", "trial_ids").iter_rows():
        for tid in ids.split(","):
            seed, y = seeds[tid]
            points.setdefault((ds, seed), []).append((depth, y))
    slopes = [np.polyfit(*np.array(p).T, 1)[0] for p in points.values()]
    ref = st.ttest_1samp(slopes, 0.0)
    lo, hi = ref.confidence_interval()
    assert vpt["n"] == len(slopes) == len(DATASETS) * 2 and vpt["test"] == "paired slope t"
    assert vpt["slope"] == pytest.approx(np.mean(slopes)) and vpt["p"] == pytest.approx(ref.pvalue, rel=1e-6)
    assert (vpt["lo"], vpt["hi"]) == (pytest.approx(lo), pytest.approx(hi))
    assert f"vpt: {vpt['slope']:+.3f} per step (95 % CI [{lo:+.3f}, {hi:+.3f}], n={len(slopes)}" in t.sentence


def test_depth_trend_inside_noise_is_no_clear_difference(tmp_path):
    root = tmp_path / "runs" / "noisy"  # coop: no planted depth effect, seed noise 0.05 Dice
    write_study(root, datasets=("isic", "voc2012"), strategies=("coop",), configs=6, noise=0.05, failed=0.0,
                running=0.0, trap=False)  # fmt: skip
    t = _takeaway(analyze(StudyLayout(root), ["strategy"], outputs=False), "depth")
    (coop,) = t.facts["slopes"]
    assert coop["lo"] < 0 < coop["hi"] and coop["verdict"] == "unclear" and coop["n"] == 4
    assert t.sentence.startswith("No clear difference for coop: ") and "helps" not in t.sentence


def test_domain_leaders_and_the_welch_interval_of_the_gap(study):
    _, result = study
    t = _takeaway(result, "domain")
    assert t.facts["best_medical"] == "vpt" and t.facts["best_natural"] == "maple"  # planted, and clearly ahead
    assert all(c["lo"] > 0 for c in t.facts["medical_comparisons"].values())
    coop = result.best_table.filter(pl.col("strategy") == "coop")
    med = coop.filter(pl.col("domain") == "medical")["test/dice mean"].to_list()
    nat = coop.filter(pl.col("domain") == "natural")["test/dice mean"].to_list()
    ref = st.ttest_ind(med, nat, equal_var=False)
    gap = t.facts["gaps"]["coop"]
    assert gap["groups"] == (3, 2) and gap["p"] == pytest.approx(ref.pvalue, rel=1e-6)
    assert (gap["lo"], gap["hi"]) == tuple(pytest.approx(v) for v in ref.confidence_interval())
    assert f"medical − natural {welch(med, nat, 'Welch t over datasets').text()}" in t.sentence
    row = t.table.filter(pl.col("strategy") == "coop").row(0, named=True)
    assert row["gap ci95 lo"] == pytest.approx(gap["lo"]) and row["n_medical"] == 3 and row["n_natural"] == 2


def test_both_fine_tunes_are_compared_with_the_best_prompt_tuning_and_labelled(study):
    root, result = study
    t = _takeaway(result, "strategies")
    assert t.table["strategy"].to_list()[-2:] == ["decoder_finetune", "finetune"]
    for base, words in (("decoder_finetune", "decoder-only fine-tune"), ("finetune", "full fine-tune (all weights)")):
        vs = t.facts[f"{base}_vs_leader"]
        assert vs["n"] == len(DATASETS) * 2 and vs["lo"] is not None  # paired over datasets and seeds
        assert f"{words}" in t.sentence and f"[{base}]" in t.sentence
    report = (root / "analysis" / "report.html").read_text()
    assert "id='baselines'" in report and "decoder_finetune = decoder-only fine-tune" in report
    assert "finetune = full fine-tune (all weights)" in report
    svg = (root / "analysis" / "plots" / "takeaway_strategies.svg").read_text()
    assert "decoder_finetune (decoder only)" in svg and "finetune (all weights)" in svg  # rows tell them apart
    summary = (root / "analysis" / "summary.md").read_text()
    assert "Baselines: zero_shot = zero-shot; decoder_finetune = decoder-only fine-tune" in summary


def test_effects_pair_over_cells_and_seeds(study):
    _, result = study
    up = _takeaway(result, "upsampler")
    cells = 4 * len(DATASETS)  # every prompt tuning takes learnable_upsampler
    assert up.facts["true_paired"]["n"] == 2 * cells and up.facts["true_cells"] == cells
    assert "paired over cells and seeds" in up.sentence


def _comparisons(facts: object) -> list[tuple[str, float | None, float | None]]:
    """(the text a sentence shows, lo, hi) of every comparison in a takeaway's facts."""
    out = []
    if isinstance(facts, dict):
        if {"effect", "lo", "hi", "n", "p", "test"} <= set(facts):
            out.append((Paired(**facts).text(), facts["lo"], facts["hi"]))
        elif {"text", "lo", "hi", "verdict"} <= set(facts):
            out.append((facts["text"], facts["lo"], facts["hi"]))
        for v in facts.values():
            out += _comparisons(v)
    elif isinstance(facts, list):
        for v in facts:
            out += _comparisons(v)
    return out


def test_every_comparison_states_effect_ci_and_n_and_no_clear_difference_inside_0(study):
    _, result = study
    checked = 0
    for t in result.takeaways:
        if t.skipped or t.spec.kind == "importance":  # a variance share, not a comparison
            continue
        shown = [c for c in _comparisons(t.facts) if c[0] in t.sentence]
        assert shown, t.spec.name  # each comparing takeaway shows at least one test
        for text, lo, hi in shown:
            assert "n=" in text and ("95 % CI [" in text or "no interval" in text)
            start = t.sentence.index(text)
            clause = t.sentence[t.sentence.rfind(";", 0, start) + 1 : t.sentence.find(";", start) % len(t.sentence)]
            if lo is None or lo < 0 < hi:
                assert "no clear difference" in clause or "not clearly" in clause, (t.spec.name, clause)
            checked += 1
    assert checked >= 10


def test_report_json_carries_the_tests(study):
    root, _ = study
    import json

    data = json.loads((Path(root) / "analysis" / "takeaways.json").read_text())
    depth = next(t for t in data if t["name"] == "depth")
    assert {s["test"] for s in depth["facts"]["slopes"]} == {"paired slope t"}
