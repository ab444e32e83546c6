"""All six prompt strategies and both baselines on CLIPSeg (docs/science.md §2-§4): trainability, gradients, depth
semantics, eval mode through fit, and the full-size trainable counts of docs/science.md §3.3."""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


from fit_helpers import assert_frozen_through_fit  # noqa: E402

from vlsm_batch.models.clipseg import CLIPSegPromptedSegmenter, build_clipseg, wrap_clipseg  # noqa: E402
from vlsm_batch.models.factory import create_model  # noqa: E402
from vlsm_batch.strategies import get_strategy  # noqa: E402
from vlsm_batch.strategies.impl import PromptConfigError  # noqa: E402

PROMPTS = ["a polyp", "a small benign tumour in the left breast"]
STRATEGIES = ("coop", "cocoop", "vpt", "maple", "shared_separate", "shared_attn")
# small widths keep the tiny model tiny; dropout off so gradient checks are deterministic
TINY_PARAMS: dict[str, dict[str, Any]] = {
    "cocoop": {"intermediate_dim": 8},
    "maple": {"intermediate_dim": 8},
    "shared_separate": {"shared_dim": 8},
    "shared_attn": {"ffn_dim": 32, "num_heads": 4, "dropout": 0.0},
}


def tiny(strategy: str, depth: int = 3, **params: Any) -> CLIPSegPromptedSegmenter:
    return create_model("clipseg-tiny", strategy, {"prompt_depth": depth, **TINY_PARAMS.get(strategy, {}), **params})


def batch(model: CLIPSegPromptedSegmenter, seed: int = 1) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    pixels = torch.randn(len(PROMPTS), 3, model.image_size, model.image_size, generator=gen)
    return {"pixel_values": pixels, **model.tokenize(PROMPTS)}


def test_every_strategy_and_baseline_is_implemented_for_clipseg() -> None:
    text_only = {"coop", "cocoop", "zero_shot", "finetune"}  # CRIS takes text prompts only; SAM 3 these and detr_vpt
    for name in (*STRATEGIES, "zero_shot", "finetune"):
        expected = {"clipseg", "cris", "sam3"} if name in text_only else {"clipseg"}
        assert get_strategy(name).implemented_for == frozenset(expected), name
    assert get_strategy("detr_vpt").implemented_for == frozenset({"sam3"})


# -- trainability and gradients ---------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_only_strategy_parameters_train_and_all_get_gradient(strategy: str) -> None:
    model = tiny(strategy, learnable_upsampler=True)
    for name, param in model.named_parameters():
        assert param.requires_grad == name.startswith(("learner.", "head.")), name
    assert model.trainable_parameter_count() > 1_602 - 1_600  # something beyond the head
    model.train()
    assert not any(m.training for m in model.clipseg.modules())
    logits = model(**batch(model))
    assert logits.shape == (2, 1, 64, 64)
    logits.square().mean().backward()
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
        else:
            assert param.grad is None, name


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_each_prompt_row_changes_the_output_and_none_exist_above_depth(strategy: str) -> None:
    depth = 2
    model = tiny(strategy, depth).eval()
    learner = model.learner
    towers = get_strategy(strategy).towers
    assert learner.text_rows == (depth if "text" in towers else 0)
    assert learner.vision_rows == (depth if "vision" in towers else 0)
    assert learner.context.shape[0] == depth  # one row per prompted layer, nothing for deeper layers
    for stack in ("meta_net", "to_text", "to_vision", "joint"):
        if hasattr(learner, stack):
            assert len(getattr(learner, stack).blocks) == depth, stack
    inputs = batch(model)
    with torch.no_grad():
        base = model(**inputs)
        saved = learner.context.clone()
        for k in range(depth):
            learner.context[k] += 0.5
            assert not torch.allclose(model(**inputs), base), f"row {k} has no effect"
            learner.context.copy_(saved)
        assert torch.equal(model(**inputs), base)


def test_vision_rows_stop_at_the_last_layer_that_runs() -> None:
    """clipseg-tiny runs vision layers 1..3 (deepest extract layer 2): depth 4 has 3 visual rows, 4 text rows."""
    vpt, maple = tiny("vpt", 4), tiny("maple", 4)
    assert vpt.learner.context.shape[0] == 3 and vpt.learner.vision_rows == 3
    assert maple.learner.context.shape[0] == 4 and len(maple.learner.to_vision.blocks) == 3


def test_visual_prompts_reach_the_decoder_and_are_dropped_before_the_reshape() -> None:
    model = tiny("vpt", 2).eval()
    seen: list[torch.Tensor] = []
    hook = model.clipseg.decoder.layers[-1].register_forward_hook(
        lambda m, i, o: seen.append(o[0] if isinstance(o, tuple) else o)
    )
    with torch.no_grad():
        logits = model(**batch(model))
    hook.remove()
    assert seen[0].shape[1] == 1 + 8 * 8 + 4  # CLS + 8x8 patches + 4 prompts through the decoder layers
    assert logits.shape == (2, 1, 64, 64)


def test_visual_prompts_enter_before_the_pre_layernorm() -> None:
    model = tiny("vpt", 1).eval()
    seen: list[torch.Tensor] = []
    hook = model.clipseg.clip.vision_model.pre_layrnorm.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    with torch.no_grad():
        model(**batch(model))
    hook.remove()
    torch.testing.assert_close(seen[0][:, -4:], model.learner.context[0].expand(2, -1, -1))


def test_text_prompt_slots_and_pooling_position() -> None:
    """Prompts right after BOS at positions 1..n; the layer-1 input holds ctx[0] + position embedding."""
    model = tiny("maple", 1).eval()
    seen: list[torch.Tensor] = []
    layer = model.clipseg.clip.text_model.encoder.layers[0]
    hook = layer.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    with torch.no_grad():
        model(**batch(model))
    hook.remove()
    positions = model.clipseg.clip.text_model.embeddings.position_embedding.weight
    torch.testing.assert_close(seen[0][0, 1:5], model.learner.context[0] + positions[1:5])


# -- CoCoOp ------------------------------------------------------------------------------------------------------
def test_cocoop_prompts_depend_on_the_stock_image_embedding() -> None:
    torch.manual_seed(0)  # the meta-net init (a tiny hidden layer can have every ReLU off for both images)
    model = tiny("cocoop", 2, intermediate_dim=32).eval()
    inputs = batch(model)
    with torch.no_grad():
        _, ours = model.encode_image(inputs["pixel_values"], pooled=True)
        stock = model.clipseg.clip.get_image_features(pixel_values=inputs["pixel_values"])
        stock = getattr(stock, "pooler_output", stock)
        prompts = model.learner(ours)
    torch.testing.assert_close(ours, stock, atol=1e-5, rtol=1e-5)  # prompt-free 12-layer pass, not normalised
    assert prompts.text[0].shape == (2, 4, 32)
    assert not torch.allclose(prompts.text[0][0], prompts.text[0][1])  # per-image prompts
    shift = prompts.text[0] - model.learner.context[0]  # the same image shift for all n tokens
    torch.testing.assert_close(shift, shift[:, :1].expand_as(shift), atol=1e-5, rtol=0)


# -- Shared-Attention ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("across", [True, False])
def test_shared_attn_attention_across_tokens_or_per_token(across: bool) -> None:
    """Per token (the original), softmax over one key is 1: query/key projections get no gradient (up to
    rounding)."""
    model = tiny("shared_attn", 1, attend_across_tokens=across).train()
    model(**batch(model)).square().mean().backward()
    attn = model.learner.joint.blocks[0].self_attn
    width = attn.embed_dim
    qk_grad = attn.in_proj_weight.grad[: 2 * width].abs().sum()
    v_grad = attn.in_proj_weight.grad[2 * width :].abs().sum()  # values always matter
    assert v_grad > 0
    assert (qk_grad / v_grad > 1e-3) == across  # per token: zero up to rounding


def test_shared_attn_runs_the_joint_layer_once_per_depth_and_forward() -> None:
    model = tiny("shared_attn", 3).eval()
    calls: list[int] = []
    for block in model.learner.joint.blocks:
        block.register_forward_hook(lambda m, i, o: calls.append(1))
    with torch.no_grad():
        model(**batch(model))
    assert len(calls) == 3


def test_num_heads_must_divide_the_joint_width() -> None:
    with pytest.raises(PromptConfigError, match="does not divide"):
        tiny("shared_attn", 1, num_heads=5)  # tiny joint width 64


# -- projections -------------------------------------------------------------------------------------------------------
def test_shared_projection_reuses_one_module() -> None:
    shared, separate = tiny("maple", 3, shared_projection=True), tiny("maple", 3)
    assert len(shared.learner.to_vision.blocks) == 1 and len(separate.learner.to_vision.blocks) == 3
    shared(**batch(shared)).mean().backward()
    assert shared.learner.to_vision.blocks[0][0].weight.grad.abs().sum() > 0


def test_param_groups_decay_projection_and_attention_weights_only() -> None:
    model = tiny("shared_attn", 1, learnable_upsampler=True)
    groups = {g["name"]: {id(p) for p in g["params"]} for g in model.param_groups(0.01)}
    layer = model.learner.joint.blocks[0]
    assert id(layer.self_attn.in_proj_weight) in groups["decay"] and id(layer.linear1.weight) in groups["decay"]
    for p in (model.learner.context, layer.norm1.weight, layer.linear1.bias, model.head.residual_ratio):
        assert id(p) in groups["no_decay"]


# -- baselines ---------------------------------------------------------------------------------------------------------
def test_zero_shot_trains_nothing_and_finetune_trains_everything() -> None:
    zero = create_model("clipseg-tiny", "zero_shot", {"learnable_upsampler": True})
    assert zero.trainable_parameter_count() == 0 and zero.head is None and zero.param_groups(0.1) == []
    fine = create_model("clipseg-tiny", "finetune", {})
    assert fine.trainable_parameter_count() == fine.total_parameter_count()
    fine.train()
    assert all(m.training for m in fine.modules())
    fine(**batch(fine)).mean().backward()
    assert fine.clipseg.clip.vision_model.embeddings.patch_embedding.weight.grad.abs().sum() > 0
    assert "every weight" in fine.describe_prompts()[0]


# -- Lightning: frozen parts stay in eval mode through fit ----------------------------------------------------------
@pytest.mark.parametrize("strategy", ["vpt", "shared_attn"])
def test_frozen_modules_stay_in_eval_mode_through_fit(strategy: str) -> None:
    model = tiny(strategy, 2)
    assert_frozen_through_fit(model, model.clipseg, batch(model))


# -- full-size counts (docs/science.md §3.3) ---------------------------------------------------------------------------
REFERENCE_COUNTS = [
    ("coop", {}, 2_048, 20_480),
    ("cocoop", {"intermediate_dim": 64}, 68_160, 681_600),
    ("vpt", {}, 3_072, 30_720),
    ("maple", {"intermediate_dim": 64}, 85_568, 855_680),
    ("shared_separate", {"shared_dim": 64}, 83_456, 834_560),
    ("shared_separate", {"shared_dim": 32}, 42_368, 423_680),
    ("shared_attn", {"ffn_dim": 1536}, 10_503_936, 105_039_360),
    ("shared_attn", {"ffn_dim": 1280}, 9_848_320, 98_483_200),
    ("shared_attn", {"ffn_dim": 1420}, 10_206_860, 102_068_600),
]


@pytest.fixture(scope="module")
def full_base() -> CLIPSegPromptedSegmenter:
    return build_clipseg("zero_shot", {}, random_init=True)


def test_full_size_trainable_counts_match_the_reference(full_base: CLIPSegPromptedSegmenter) -> None:
    base, tok = full_base.clipseg, full_base.tokenizer
    for strategy, params, d1, d10 in REFERENCE_COUNTS:
        for depth, expected in ((1, d1), (10, d10)):
            for upsampler, extra in ((False, 0), (True, 1_602)):
                if upsampler and strategy == "shared_attn" and depth == 10:
                    continue  # 105 M parameters: checked once without the head
                model = wrap_clipseg(
                    base, tok, "clipseg", strategy,
                    {"prompt_depth": depth, "learnable_upsampler": upsampler, **params},
                )  # fmt: skip
                got = model.trainable_parameter_count()
                assert got == expected + extra, (strategy, params, depth, upsampler, got)
                del model
    lora = wrap_clipseg(base, tok, "clipseg", "maple", {"prompt_depth": 1, "intermediate_dim": 64, "use_lora": True})
    assert lora.trainable_parameter_count() == 2_048 + 512 * 64 + 768 * 64 + 2 * 768
    assert full_base.trainable_parameter_count() == 0


# -- describe and validation -------------------------------------------------------------------------------------------
def test_describe_command_counts_and_placement(capsys: pytest.CaptureFixture[str]) -> None:
    from vlsm_batch.cli import main

    assert (
        main(["describe", "clipseg-tiny", "vpt", "--set", "prompt_depth=4", "--set", "learnable_upsampler=true"]) == 0
    )
    out = capsys.readouterr().out
    assert "learner.context" in out and "head.conv" in out
    assert f"{3 * 4 * 32 + 16 * 25 + 1 + 1:,}" in out  # 3 visual rows (tiny runs 3 vision layers) + head
    assert "no vision layer above 3" in out and "dropped before the reshape" in out
    assert main(["describe", "clipseg-tiny", "cocoop", "--set", "foo=1"]) != 0
    assert "does not take 'foo'" in capsys.readouterr().err


def test_parse_settings_checks_kinds_and_ranges() -> None:
    from vlsm_batch.cli.models import parse_settings
    from vlsm_batch.errors import VlsmBatchError

    assert parse_settings("maple", ["intermediate_dim=null", "lr=1", "context_init=a photo"]) == {
        "intermediate_dim": None,
        "lr": 1.0,
        "context_init": "a photo",
    }
    with pytest.raises(VlsmBatchError, match="num_heads must be one of"):
        parse_settings("shared_attn", ["num_heads=3"])


def test_validator_checks_num_heads_against_the_joint_width(tmp_path: Any) -> None:
    from vlsm_batch.errors import SpecError
    from vlsm_batch.spec import load_spec

    text = (
        "study: t\nmodels: [clipseg, clipseg-tiny]\ndatasets: [synthetic]\nstrategies: [shared_attn]\n"
        "search: {method: random, trials: 2, space: {num_heads: {choice: [16, 20]}}}\n"
    )
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(
        SpecError, match=r"num_heads 20 does not divide the joint width of clipseg-tiny \(joint width 64\)"
    ):
        load_spec(path)


def test_zero_shot_trial_evaluates_without_training(tmp_path: Any) -> None:
    import json

    from vlsm_batch.datasets.synthetic import ensure_synthetic
    from vlsm_batch.metrics import METRIC_KEYS
    from vlsm_batch.training.entry import train_trial

    ensure_synthetic(tmp_path / "data")
    trial = tmp_path / "trials" / "000000000000"
    trial.mkdir(parents=True)
    config = {
        "trial_id": "000000000000", "study": "t", "model": "clipseg-tiny", "dataset": "synthetic",
        "strategy": "zero_shot", "seed": 0, "params": {}, "train": {},
        "objective": {"metric": "val/dice", "mode": "max"}, "data_root": str(tmp_path / "data"),
        "weights": None, "num_workers": 0,
    }  # fmt: skip
    (trial / "config.json").write_text(json.dumps(config))
    metrics = train_trial(trial)
    assert set(METRIC_KEYS) <= set(metrics)
    assert metrics["trainable_params"] == 0 and metrics["epochs"] == 0 and metrics["best_epoch"] is None
    assert metrics["n_val"] > 0 and metrics["n_test"] > 0 and 0 <= metrics["test/dice"] <= 1
    assert not (trial / "checkpoints" / "last.ckpt").exists()


# -- one declaration per strategy ---------------------------------------------------------------------------------
def test_every_catalog_entry_names_a_learner_for_its_towers() -> None:
    from vlsm_batch.strategies import STRATEGIES as CATALOG
    from vlsm_batch.strategies.impl import learner_class

    for name in CATALOG:
        info = get_strategy(name)
        cls = learner_class(info)
        if info.towers:
            assert cls is not None and cls.towers == info.towers, name
        else:
            assert cls is None and info.learner is None, name


def test_the_strategy_catalog_does_not_import_the_model_catalog() -> None:
    import subprocess
    import sys

    code = (
        "import sys, vlsm_batch.strategies, vlsm_batch.strategies.impl, vlsm_batch.strategies.multimodal; "
        "print(sorted(m for m in sys.modules if m.startswith('vlsm_batch.models')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_model_relative_bounds_are_declared_not_special_cased() -> None:
    from vlsm_batch.models import get_model_info

    depth, heads = get_strategy("maple").param("prompt_depth"), get_strategy("shared_attn").param("num_heads")
    assert depth is not None and depth.model_bound is not None and heads is not None and heads.model_bound is not None
    tiny_model, cris = get_model_info("clipseg-tiny"), get_model_info("cris")
    assert depth.model_bound.problem("prompt_depth", 5, [tiny_model, cris]) == (
        "prompt_depth 5 is deeper than clipseg-tiny (max_prompt_depth 4) allows"
    )
    assert depth.model_bound.problem("prompt_depth", 4, [tiny_model]) is None
    assert heads.model_bound.problem("num_heads", 5, [tiny_model, cris]) == (
        "num_heads 5 does not divide the joint width of clipseg-tiny (joint width 64)"
    )  # cris has no joint width: not constrained
    assert heads.model_bound.problem("num_heads", 16, [tiny_model]) is None
