"""Statistics a reviewer accepts: intervals over seeds only, no winner inside overlapping intervals, train
settings as part of a configuration, and figures a journal takes (300 dpi, real SVG text, no lines on categories)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy import stats as st

from vlsm_batch.analysis import plots
from vlsm_batch.analysis.collect import collect
from vlsm_batch.analysis.run import analyze
from vlsm_batch.analysis.stats import paired, t975
from vlsm_batch.analysis.synthetic import write_study
from vlsm_batch.analysis.tables import configs, grouped
from vlsm_batch.cli import main
from vlsm_batch.layout import StudyLayout


def _takeaway(result, name):
    return next(t for t in result.takeaways if t.spec.name == name)


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory):
    root = tmp_path_factory.mktemp("seeds") / "runs" / "two"
    write_study(root, configs=3, datasets=("isic", "voc2012"), strategies=("coop", "vpt", "maple"), failed=0.0,
                running=0.0, history=True)  # fmt: skip
    return root, analyze(StudyLayout(root), ["strategy"])


def test_scipy_quantiles_and_paired_test():
    for df in (1, 2, 7, 30, 31, 200):
        assert t975(df) == pytest.approx(st.t.ppf(0.975, df), rel=1e-9)
    a, b = [0.61, 0.64, 0.66, 0.70, 0.59, 0.63, 0.65], [0.60, 0.62, 0.66, 0.67, 0.58, 0.60, 0.66]
    p = paired(a, b)
    d = np.subtract(a, b)
    assert p.effect == pytest.approx(d.mean()) and p.n == 7
    assert p.hi - p.effect == pytest.approx(st.t.ppf(0.975, 6) * d.std(ddof=1) / math.sqrt(7))
    # one t statistic for the interval and the p-value: "excludes 0" and "p < 0.05" never disagree
    assert p.test == "paired t" and p.p == pytest.approx(st.ttest_rel(a, b).pvalue, rel=1e-9)
    lo, hi = st.ttest_rel(a, b).confidence_interval()
    assert (p.lo, p.hi) == (pytest.approx(lo), pytest.approx(hi)) and p.clear == (p.p < 0.05)
    assert paired([0.5], [0.4]).lo is None  # one pair: no interval claimed


def test_intervals_are_over_the_seeds_of_one_configuration(two_seeds):
    root, result = two_seeds
    b = result.best_table
    assert (b["n_seeds"] == 2).all()
    df = collect(StudyLayout(root))
    for row in b.iter_rows(named=True):
        seeds = df.filter(pl.col("trial_id").is_in(row["trial_ids"].split(",")))["test/dice"].to_numpy()
        assert len(seeds) == 2
        assert row["test/dice ci95"] == pytest.approx(t975(1) * seeds.std(ddof=1) / math.sqrt(2))
    # --by strategy pools several configurations: a spread, never an interval
    assert (result.table["n_configs"] > 1).all() and result.table["test/dice ci95"].null_count() == result.table.height
    one = grouped(df, ["dataset", "strategy", "sample_index"], "val/dice")
    assert (one["n_configs"] == 1).all() and one["test/dice ci95"].null_count() == 0
    assert result.max_seeds == 2 and not result.notes()


def test_one_seed_claims_no_interval(tmp_path):
    root = tmp_path / "runs" / "one"
    write_study(root, configs=2, seeds=(0,), datasets=("isic",), strategies=("coop", "vpt"), failed=0.0, running=0.0)
    result = analyze(StudyLayout(root), ["strategy"])
    assert result.best_table["test/dice ci95"].null_count() == result.best_table.height
    assert any("one seed" in n for n in result.notes())
    assert "one seed: no interval is claimed" in (root / "analysis" / "report.html").read_text()


def test_overlapping_intervals_name_no_winner(tmp_path):
    root = tmp_path / "runs" / "noisy"
    write_study(root, configs=2, datasets=("isic", "kvasir_polyp"), strategies=("vpt", "shared_attn"), noise=0.3,
                failed=0.0, running=0.0, trap=False)  # fmt: skip
    t = _takeaway(analyze(StudyLayout(root), ["strategy"]), "strategies")
    comp = next(iter(t.facts["comparisons"].values()))
    assert comp["lo"] < 0 < comp["hi"]  # the interval of the paired difference includes 0
    assert t.facts["winner"] is None
    assert "not clearly best" in t.sentence and "no clear difference between" in t.sentence
    assert "is the best prompt tuning" not in t.sentence
    assert "95 % CI [" in t.sentence and f"n={comp['n']}" in t.sentence


def test_a_clear_difference_is_named_with_effect_interval_and_n(two_seeds):
    _, result = two_seeds
    t = _takeaway(result, "strategies")
    comp = t.facts["comparisons"]["coop"]  # coop is planted far below on medical data
    assert comp["hi"] < 0 or comp["lo"] > 0
    assert f"ahead of coop by {comp['effect']:+.3f} (95 % CI [" in t.sentence


def test_resubmission_with_other_max_epochs_is_a_second_configuration(tmp_path, capsys):
    root = tmp_path / "runs" / "resub"
    kw = {"configs": 2, "datasets": ("isic",), "strategies": ("vpt",), "failed": 0.0, "running": 0.0, "trap": False}
    write_study(root, train={"max_epochs": 1, "batch_size": 16}, spec_version="aaaaaaaaaaaa", **kw)
    write_study(root, train={"max_epochs": 2, "batch_size": 16}, spec_version="bbbbbbbbbbbb", **kw)
    df = collect(StudyLayout(root))
    assert df.height == 8 and sorted(df["train.max_epochs"].unique().to_list()) == [1, 2]
    cfg = configs(df, "val/dice", ["test/dice"])
    assert cfg.height == 4 and (cfg["n_seeds"] == 2).all()  # never 4 "seeds" of one configuration
    result = analyze(StudyLayout(root), ["max_epochs"])  # a train setting in --by (train. prefix optional)
    assert result.by == ["train.max_epochs"] and result.table["train.max_epochs"].to_list() == [1, 2]
    assert result.spec_versions == {"aaaaaaaaaaaa": 4, "bbbbbbbbbbbb": 4}
    assert any("mixes spec versions" in n for n in result.notes())
    assert main(["analyze", "--study", str(root), "--by", "train.max_epochs"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("note: This study mixes spec versions")
    assert "mixes spec versions" in (root / "analysis" / "summary.md").read_text()


def test_figures_for_a_journal(two_seeds):
    root, result = two_seeds
    from PIL import Image

    plot_dir = root / "analysis" / "plots"
    for t in result.takeaways:
        if t.plot is None:
            continue
        with Image.open(t.plot) as im:
            assert im.info["dpi"][0] == pytest.approx(300, abs=1)
        svg = t.plot.with_suffix(".svg").read_text()
        assert "<text" in svg  # real text, not glyph paths
        assert t.plot.with_suffix(".pdf").read_bytes()[:4] == b"%PDF"
    assert (plot_dir / "learning_curves.png").is_file() and result.curves_plot is not None
    # categorical axis: points, never a line joining strategies
    fig = plots.score_vs(collect(StudyLayout(root)), "strategy", ["val/dice", "test/dice"])
    for ax in fig.axes:
        for line in ax.get_lines():
            assert line.get_linestyle() in ("None", "none", "") or len(line.get_xdata()) < 2
        assert ax.get_ylim()[0] == 0  # Dice from 0
        labels = [lbl.get_text() for lbl in ax.get_xticklabels()]
        assert labels == ["coop", "maple", "vpt"]  # the one fixed order
    # colour scale fixed at 0..1: a 0.003 gap does not fill the map
    heat = plots.heatmap(["a", "b"], ["x"], [[0.700], [0.703]], "t")
    assert heat.axes[0].images[0].get_clim() == (0.0, 1.0)
    # every Dice axis of every saved figure starts at 0; one dataset: no duplicate "pooled" panel
    depth = _takeaway(result, "depth")
    assert "pooled" in " ".join(depth.table["scope"].unique().to_list())


def test_latex_table_is_booktabs_with_intervals(two_seeds):
    root, _ = two_seeds
    tex = (root / "analysis" / "tables" / "best_per_cell.tex").read_text()
    for token in ("\\toprule", "\\midrule", "\\bottomrule", "$\\pm$", "test dice", "val iou", "vpt", "voc2012"):
        assert token in tex, token
    rows = [ln for ln in tex.splitlines() if ln.count("&") >= 7]
    assert len(rows) == 1 + 2 * 3  # header + (dataset x strategy)


def test_unchanged_figures_are_not_drawn_again(two_seeds):
    root, result = two_seeds
    png = next(t.plot for t in result.takeaways if t.plot is not None)
    before = png.stat().st_mtime_ns
    again = analyze(StudyLayout(root), ["strategy"])
    assert next(t.plot for t in again.takeaways if t.plot is not None).stat().st_mtime_ns == before
    assert Path(png).with_suffix(".svg").is_file()


def test_curves_of_every_trial_of_one_cell(two_seeds, capsys):
    root, _ = two_seeds
    assert main(["analyze", "--study", str(root), "--curves", "clipseg/isic/vpt", "--format", "json"]) == 0
    capsys.readouterr()
    assert (root / "analysis" / "plots" / "learning_curves.svg").read_text().count(
        "clipseg/isic/vpt"
    ) == 3 * 2  # every trial
    assert main(["analyze", "--study", str(root), "--curves", "nonsense"]) != 0
    assert "MODEL/DATASET/STRATEGY" in capsys.readouterr().err
