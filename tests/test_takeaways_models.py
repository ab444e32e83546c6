"""SAM 3 is a third model everywhere in the analysis: the models takeaway compares every pair of models (paired
over dataset, strategy and seed, a winner only where the interval excludes 0), the report names each model's image
and text encoders, and every built-in takeaway answers on a CLIPSeg + CRIS + SAM 3 study."""

from __future__ import annotations

import subprocess
import sys
from html import unescape

import polars as pl
import pytest
from scipy import stats as st
from test_takeaways import _comparisons

from vlsm_batch.analysis import takeaways as tk
from vlsm_batch.analysis.collect import collect
from vlsm_batch.analysis.encoders import describe
from vlsm_batch.analysis.run import analyze
from vlsm_batch.analysis.synthetic import runs_on, write_study
from vlsm_batch.analysis.tables import best, configs
from vlsm_batch.layout import StudyLayout
from vlsm_batch.models import get_model_info

MODELS = ("clipseg", "cris", "sam3")
DATASETS = ("kvasir_polyp", "isic", "voc2012")
STRATEGIES = ("coop", "cocoop", "vpt", "maple", "detr_vpt", "zero_shot", "decoder_finetune", "finetune")
# planted: SAM 3 well above CRIS; CLIPSeg and CRIS equal (same configurations, same truth: they differ by noise only)
OFFSET = {"clipseg": 0.0, "cris": 0.0, "sam3": 0.06}
SHARED = ("coop", "cocoop", "zero_shot", "finetune")  # the strategies all three models run


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("models") / "runs" / "three"
    write_study(root, datasets=DATASETS, strategies=STRATEGIES, models=MODELS, model_offset=OFFSET, configs=8,
                noise=0.01, failed=0.0, running=0.0)  # fmt: skip
    return root, analyze(StudyLayout(root), ["strategy"], curves="none")


def _takeaway(result, name):
    return next(t for t in result.takeaways if t.spec.name == name)


def test_synthetic_models_run_only_what_the_catalogs_allow(study):
    root, _ = study
    df = collect(StudyLayout(root))
    ran = {m: set(df.filter(pl.col("model") == m)["strategy"].unique().to_list()) for m in MODELS}
    assert ran["clipseg"] == set(STRATEGIES) - {"detr_vpt"}
    assert ran["cris"] == set(SHARED)
    assert ran["sam3"] == {*SHARED, "detr_vpt"}
    assert not runs_on("sam3", "vpt") and not runs_on("cris", "maple") and runs_on("sam3", "detr_vpt")
    towers = dict(df.select("strategy", "towers").unique().iter_rows())
    assert towers["detr_vpt"] == "unimodal visual"  # prompts in the DETR fusion encoder: image-side


def test_models_compares_three_pairs_paired_and_names_only_clear_winners(study):
    root, result = study
    t = _takeaway(result, "models")
    assert t.skipped is None and t.figure is None and t.plot is not None  # drawn and written
    f = t.facts
    assert f["models"] == list(MODELS) and f["cells"] == len(DATASETS) * len(SHARED)
    assert set(f["pairs"]) == {"clipseg vs cris", "sam3 vs clipseg", "sam3 vs cris"}  # 3 pairs, higher one first
    units = len(DATASETS) * len(SHARED) * 2  # (dataset, strategy, seed)
    assert all(p["n"] == units and p["test"] == "paired t" for p in f["pairs"].values())
    # by hand: each model's best configuration per shared cell (on validation), its test Dice per seed, paired
    df = collect(StudyLayout(root))
    chosen = best(configs(df, "val/dice", ["test/dice"]), "max").filter(pl.col("strategy").is_in(SHARED))
    seeds = df.select("trial_id", "seed", "test/dice")
    per_seed = (
        chosen.select("model", "dataset", "strategy", pl.col("trial_ids").str.split(",").alias("trial_id"))
        .explode("trial_id")
        .join(seeds, on="trial_id")
        .pivot(on="model", index=["dataset", "strategy", "seed"], values="test/dice")
        .sort(["dataset", "strategy", "seed"])
    )
    for key, a, b in (("sam3 vs cris", "sam3", "cris"), ("clipseg vs cris", "clipseg", "cris")):
        ref = st.ttest_rel(per_seed[a].to_numpy(), per_seed[b].to_numpy())
        lo, hi = ref.confidence_interval()
        p = f["pairs"][key]
        assert p["effect"] == pytest.approx((per_seed[a] - per_seed[b]).mean())
        assert (p["lo"], p["hi"]) == (pytest.approx(lo), pytest.approx(hi))
        assert p["p"] == pytest.approx(ref.pvalue, rel=1e-6)
    sam3_cris, clip_cris = f["pairs"]["sam3 vs cris"], f["pairs"]["clipseg vs cris"]
    assert sam3_cris["lo"] > 0 and sam3_cris["effect"] == pytest.approx(0.06, abs=0.015)
    # planted equal: the interval includes 0 (rng_seed 0; a 95 % interval: over seeds 0-11 it missed 0 once)
    assert clip_cris["lo"] < 0 < clip_cris["hi"]
    assert f["winner"] == "sam3" and set(f["clear"]) == {"sam3 vs clipseg", "sam3 vs cris"}
    assert f["unclear"] == ["clipseg vs cris"]
    assert "sam3 is ahead of cris by +0.0" in t.sentence and "sam3 is the best model here" in t.sentence
    assert "no clear difference between clipseg and cris (clipseg − cris " in t.sentence
    assert "clipseg is ahead of cris" not in t.sentence and "cris is ahead of clipseg" not in t.sentence
    # baselines compared per strategy like the rest: SAM 3 zero-shot vs CLIPSeg zero-shot, over datasets and seeds
    zs = f["per_strategy"]["zero_shot"]["sam3 vs clipseg"]
    assert zs["n"] == len(DATASETS) * 2 and zs["lo"] > 0
    assert "on zero-shot [zero_shot] alone (paired over dataset and seed): " in t.sentence
    table = t.table
    assert set(table["scope"].to_list()) == {"all shared cells", *SHARED}  # one-model strategies are not compared
    row = table.filter(
        (pl.col("scope") == "zero_shot") & (pl.col("model a") == "sam3") & (pl.col("model b") == "clipseg")
    )
    assert row["verdict"].to_list() == ["sam3 ahead"] and row["n"].to_list() == [6]
    svg = (root / "analysis" / "plots" / "takeaway_models.svg").read_text()
    assert "mean ± 95 % CI over the n seeds" in svg and all(m in svg for m in MODELS)


def test_every_stated_model_comparison_has_effect_ci_n_and_no_claim_inside_0(study):
    _, result = study
    t = _takeaway(result, "models")
    shown = [c for c in _comparisons(t.facts) if c[0] in t.sentence]
    assert len(shown) >= 3 + 3 * 2  # the 3 pairs, and 3 pairs each for zero-shot and full fine-tune
    for text, lo, hi in shown:
        assert "n=" in text and "95 % CI [" in text
        start = t.sentence.index(text)
        clause = t.sentence[t.sentence.rfind(";", 0, start) + 1 : t.sentence.find(";", start) % len(t.sentence)]
        if lo < 0 < hi:
            assert "no clear difference" in clause, clause


def test_one_model_has_nothing_to_compare_and_does_not_fail(tmp_path):
    root = tmp_path / "runs" / "one"
    write_study(root, datasets=("isic",), strategies=("coop", "zero_shot"), models=("sam3",), configs=2, failed=0.0,
                running=0.0)  # fmt: skip
    result = analyze(StudyLayout(root), ["strategy"], curves="none")
    t = _takeaway(result, "models")
    assert t.skipped == "the study has one model (sam3): nothing to compare" and t.table is None
    html = unescape((root / "analysis" / "report.html").read_text())
    assert "Not answered: the study has one model (sam3): nothing to compare." in html
    # two models that share no (dataset, strategy) cell: nothing to pair either, said so
    root2 = tmp_path / "runs" / "apart"
    write_study(root2, datasets=("isic",), strategies=("vpt", "detr_vpt"), models=("clipseg", "sam3"), configs=2,
                failed=0.0, running=0.0)  # fmt: skip
    apart = _takeaway(analyze(StudyLayout(root2), ["strategy"], outputs=False), "models")
    assert apart.skipped == "no (dataset, strategy) cell finished on two of the models (clipseg, sam3)"


def test_report_has_a_models_section_naming_each_models_encoders(study):
    root, _ = study
    html = unescape((root / "analysis" / "report.html").read_text())
    assert "<h2 id='models'>Models: image and text encoders</h2>" in html and "<a href='#models'>encoders</a>" in html
    section = html[html.index("<h2 id='models'>") : html.index("<h2 id='t-")]
    for words in (
        "CLIP ViT-B/16 (12 layers, width 768), 352 px",  # clipseg
        "CLIP ModifiedResNet RN50 (convolutional",  # cris
        "Perception Encoder ViT (32 layers, width 1024, patch 14",  # sam3
        "CLIP-style text transformer (24 layers, width 1024)",
        "DETR encoder fusing image and text tokens (6 layers, width 256)",
        "CLIP text transformer (12 layers, width 512)",
    ):
        assert words in section, words
    for m in MODELS:
        assert get_model_info(m).description in section  # the catalog's own words, beside the derived facts
    scope = html[html.index("<p id='scope-models'>") :].split("</p>")[0]
    assert (
        "Models (3): clipseg: CLIP ViT-B/16 image encoder, CLIP text encoder; cris: CLIP ModifiedResNet RN50 "
        "image encoder"
        in scope
        and "sam3: Perception Encoder ViT image encoder, CLIP-style text encoder" in scope
    )
    md = (root / "analysis" / "summary.md").read_text()
    assert "## Models: image and text encoders" in md and "Perception Encoder ViT" in md
    assert describe("sam3")["prompts enter"] == "text tower, DETR fusion encoder"
    assert describe("cris")["prompts enter"] == "text tower" and describe("nope")["family"] == "unknown"


def test_encoder_facts_are_torch_free():
    code = "import sys, vlsm_batch.analysis.encoders as e; e.describe('sam3'); e.describe('cris'); " \
        "assert 'torch' not in sys.modules, 'torch imported'"  # fmt: skip
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_builtin_takeaway_answers_on_three_models(study):
    root, result = study
    builtin = {s.name for s in tk.load()}
    assert {t.spec.name for t in result.takeaways} == builtin and "models" in builtin
    for t in result.takeaways:
        assert t.skipped is None, (t.spec.name, t.skipped)
        assert t.sentence and t.table is not None and t.table.height, t.spec.name
        assert (root / "analysis" / "plots" / f"takeaway_{t.spec.name}.png").is_file(), t.spec.name
    matrix = _takeaway(result, "strategies")
    rows = list(zip(matrix.table["model"], matrix.table["strategy"]))
    assert ("clipseg", "vpt") in rows and ("sam3", "detr_vpt") in rows
    assert not {("cris", "vpt"), ("sam3", "vpt"), ("cris", "maple"), ("clipseg", "detr_vpt")} & set(rows)
    svg = (root / "analysis" / "plots" / "takeaway_strategies.svg").read_text()
    assert "sam3 / detr_vpt" in svg and "clipseg / vpt" in svg  # rows labelled by model
    # strategies are ranked within each model, never across models of different strength
    per_model = matrix.facts["per_model"]
    assert set(per_model) == set(MODELS) and per_model["sam3"]["leader"] == "detr_vpt"
    assert per_model["clipseg"]["leader"] in ("vpt", "maple") and per_model["cris"]["leader"] in ("coop", "cocoop")
    assert matrix.sentence.startswith("For clipseg: ") and "For sam3: detr_vpt" in matrix.sentence
    domain = _takeaway(result, "domain")
    assert set(domain.facts["per_model"]) == set(MODELS) and "For cris: on medical data" in domain.sentence
    assert domain.table.filter(pl.col("model") == "cris")["strategy"].to_list() == ["zero_shot", "cocoop", "coop",
                                                                                      "finetune"]  # fmt: skip
    towers = _takeaway(result, "towers")
    sam3 = towers.table.filter(pl.col("model") == "sam3")
    assert sam3["unimodal visual"].null_count() == 0 and sam3["multimodal"].null_count() == sam3.height
    assert "(model, dataset) pairs" in towers.sentence
    depth = _takeaway(result, "depth")
    assert "detr_vpt" in depth.facts["helps_names"]  # planted: SAM 3's fusion prompts gain with depth


def test_towers_with_detr_vpt_as_the_only_image_side_strategy(tmp_path):
    root = tmp_path / "runs" / "sam3"
    write_study(root, datasets=("isic", "voc2012"), strategies=("coop", "detr_vpt", "zero_shot"), models=("sam3",),
                configs=4, failed=0.0, running=0.0)  # fmt: skip
    t = _takeaway(analyze(StudyLayout(root), ["strategy"], outputs=False), "towers")
    assert t.skipped is None
    assert t.facts["reference"] == "unimodal visual" and t.facts["reference_asked"] == "multimodal"
    assert t.sentence.startswith("No multimodal strategy finished, so image-side (visual) prompt tuning is the ")
    assert t.facts["text_paired"]["effect"] > 0 and t.facts["text_n"] == 2  # detr_vpt above coop, planted
    assert t.table.columns == ["model", "dataset", "unimodal text", "unimodal visual"]
