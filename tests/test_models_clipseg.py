"""Model side: CLIPSeg + CoOp on the tiny model, the offline tokenizer, and one full-size random build."""

from __future__ import annotations

import time

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from vlsm_batch.errors import VlsmBatchError  # noqa: E402
from vlsm_batch.models.clipseg import CLIPSegPromptedSegmenter, build_clipseg, wrap_clipseg  # noqa: E402
from vlsm_batch.models.factory import create_model  # noqa: E402
from vlsm_batch.models.prompted import PromptedSegmenter, cap_tokens  # noqa: E402
from vlsm_batch.models.tokenizer import (  # noqa: E402
    BOS_ID,
    EOS_ID,
    TokenizerUnavailableError,
    check_tokenizer,
    offline_clip_tokenizer,
)
from vlsm_batch.strategies.impl import PromptConfigError  # noqa: E402

PROMPTS = ["a polyp", "a small benign tumour in the left breast, seen on ultrasound"]


def tiny(depth: int = 2, **params: object) -> CLIPSegPromptedSegmenter:
    return create_model("clipseg-tiny", "coop", {"prompt_depth": depth, **params})


def batch(model: PromptedSegmenter, prompts: list[str] = PROMPTS, seed: int = 1) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    pixels = torch.randn(len(prompts), 3, model.image_size, model.image_size, generator=gen)
    return {"pixel_values": pixels, **model.tokenize(prompts)}


# -- tokenizer ---------------------------------------------------------------------------------------------------
def test_offline_tokenizer_matches_open_clip() -> None:
    open_clip_tokenizer = pytest.importorskip("open_clip.tokenizer")
    reference = open_clip_tokenizer.SimpleTokenizer()
    tok = offline_clip_tokenizer()
    assert len(tok) == 49408 and tok.bos_token_id == BOS_ID and tok.eos_token_id == EOS_ID
    texts = ["a photo of a cat.", "Left  Ventricle, ENDOcardium!", "polyp #3 at 12 o'clock", "café naïve—ok?"]
    for text in texts:
        assert tok(text)["input_ids"] == [BOS_ID, *reference.encode(text), EOS_ID], text


def test_stub_tokenizer_is_refused() -> None:
    from transformers import CLIPTokenizer

    with pytest.raises(TokenizerUnavailableError, match="weights:"):
        check_tokenizer(CLIPTokenizer(), "CIDAS/clipseg-rd64")  # what transformers 5 returns offline


def test_tokenize_appends_stop_pads_and_caps() -> None:
    model = tiny(num_context=4)
    out = model.tokenize(["a cat", "two big dogs."])
    ids, mask = out["input_ids"], out["attention_mask"]
    assert ids.shape == mask.shape and ids.dtype == torch.long
    dot = model.tokenizer(".", add_special_tokens=False)["input_ids"][0]
    assert ids[0, :5].tolist() == [
        BOS_ID,
        *model.tokenizer("a cat", add_special_tokens=False)["input_ids"],
        dot,
        EOS_ID,
    ]
    assert mask[0].tolist() == [1, 1, 1, 1, 1, 0]
    long_ids = model.tokenize([" ".join(["word"] * 120)])["input_ids"]
    assert long_ids.shape[1] == 77 - 4 and long_ids[0, -1].item() == EOS_ID


def test_cap_tokens_keeps_eos() -> None:
    ids = torch.tensor([[BOS_ID, 5, 6, 7, 8, EOS_ID], [BOS_ID, 5, EOS_ID, EOS_ID, EOS_ID, EOS_ID]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    capped, capped_mask = cap_tokens(ids, mask, 4)
    assert capped.tolist() == [[BOS_ID, 5, 6, EOS_ID], [BOS_ID, 5, EOS_ID, EOS_ID]]
    assert capped_mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]


# -- trainability --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("upsampler", [False, True])
def test_only_prompts_train_and_all_get_gradient(upsampler: bool) -> None:
    depth = 3
    model = tiny(depth, learnable_upsampler=upsampler)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    expected = {"learner.context"} | (
        {"head.conv.weight", "head.conv.bias", "head.residual_ratio"} if upsampler else set()
    )
    assert trainable == expected
    assert model.learner.context.shape == (depth, 4, 32)  # exactly depth rows: nothing for deeper layers
    model.train()
    model(**batch(model)).square().mean().backward()
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
        else:
            assert param.grad is None, name
    per_row = model.learner.context.grad.abs().sum(dim=(1, 2))
    assert (per_row > 0).all(), per_row


def test_every_context_row_changes_the_output() -> None:
    model = tiny(4).eval()
    inputs = batch(model)
    with torch.no_grad():
        base = model(**inputs)
        saved = model.learner.context.clone()
        for k in range(model.learner.depth):
            model.learner.context[k] += 0.5
            assert not torch.allclose(model(**inputs), base), f"row {k} has no effect"
            model.learner.context.copy_(saved)
        assert torch.equal(model(**inputs), base)


def test_deep_prompts_do_not_overwrite_layer_outputs() -> None:
    """A layer's output tensor keeps its own prompt-slot values (the original overwrote them in place)."""
    model = tiny(3).eval()
    kept: list[torch.Tensor] = []
    hook = model.clipseg.clip.text_model.encoder.layers[0].register_forward_hook(lambda m, i, o: kept.append(o))
    with torch.no_grad():
        model(**batch(model))
    hook.remove()
    out = kept[0][0] if isinstance(kept[0], tuple) else kept[0]
    assert not torch.allclose(out[:, 1:5], model.learner.context[1].expand_as(out[:, 1:5]))


def test_frozen_modules_stay_in_eval_mode() -> None:
    model = tiny(2, learnable_upsampler=True)
    model.train()
    assert model.training and model.learner.training and model.head.training
    assert all(not m.training for m in model.clipseg.modules())
    model.eval()
    assert not any(m.training for m in model.modules())


def test_param_groups_decay_only_conv_and_linear_weights() -> None:
    model = tiny(2, learnable_upsampler=True)
    groups = {g["name"]: g for g in model.param_groups(0.01)}
    assert [id(p) for p in groups["decay"]["params"]] == [id(model.head.conv.weight)]
    assert groups["decay"]["weight_decay"] == 0.01 and groups["no_decay"]["weight_decay"] == 0.0
    no_decay = {id(p) for p in groups["no_decay"]["params"]}
    assert no_decay == {id(model.learner.context), id(model.head.conv.bias), id(model.head.residual_ratio)}
    plain = tiny(1)
    (only,) = plain.param_groups(0.1)  # CoOp alone: nothing to decay
    assert only["name"] == "no_decay" and only["params"] == [plain.learner.context]


# -- construction ------------------------------------------------------------------------------------------------
def test_context_init_words_fill_row_zero() -> None:
    model = tiny(2, context_init="a photo of a")
    ids = model.tokenizer("a photo of a", add_special_tokens=False)["input_ids"]
    table = model.clipseg.clip.text_model.embeddings.token_embedding.weight
    assert torch.equal(model.learner.context[0].detach(), table[ids])
    assert model.learner.context[1].std().item() == pytest.approx(0.02, rel=0.3)


def test_num_context_must_match_init_words() -> None:
    with pytest.raises(PromptConfigError, match="num_context"):
        tiny(1, num_context=5)  # default context_init "a photo of a" is 4 tokens
    assert tiny(1, num_context=5, context_init=None).learner.context.shape == (1, 5, 32)
    assert tiny(1, num_context=2, context_init="a photo").learner.context.shape == (1, 2, 32)


def test_depth_outside_the_text_tower_is_refused() -> None:
    with pytest.raises(PromptConfigError, match="prompt_depth 5"):
        tiny(5)


def test_unimplemented_model(monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from vlsm_batch.models import factory, get_model_info

    info = dataclasses.replace(get_model_info("clipseg-tiny"), implemented=False)
    monkeypatch.setattr(factory, "get_model_info", lambda name: info)
    with pytest.raises(VlsmBatchError, match="not implemented"):
        create_model("clipseg-tiny", "coop", {})


def test_tiny_build_is_seeded_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a, b = create_model("clipseg-tiny", "zero_shot", {}), create_model("clipseg-tiny", "zero_shot", {})
    assert torch.equal(torch.get_rng_state(), state)
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(pa, pb), name
    assert a.trainable_parameter_count() == 0 and a.param_groups(0.1) == []


def test_describe_prompts() -> None:
    lines = tiny(2, learnable_upsampler=True).describe_prompts()
    assert len(lines) == 2 and "after BOS" in lines[0] and "layers 1..2" in lines[0] and "upsampler" in lines[1]
    assert "no prompts" in create_model("clipseg-tiny", "zero_shot", {}).describe_prompts()[0]


def test_bf16_autocast_step() -> None:
    model = tiny(2, learnable_upsampler=True).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(**batch(model))
    assert logits.shape == (2, 1, 64, 64)
    logits.float().mean().backward()
    assert torch.isfinite(model.learner.context.grad).all() and model.learner.context.dtype == torch.float32


# -- equivalence with the stock transformers model --------------------------------------------------------------------
def test_prompt_free_path_matches_transformers_tiny() -> None:
    model = create_model("clipseg-tiny", "zero_shot", {})
    inputs = batch(model)
    with torch.no_grad():
        ours = model(**inputs)
        stock = model.clipseg(**inputs).logits
    assert ours.shape == (2, 1, 64, 64)
    torch.testing.assert_close(ours.squeeze(1), stock, atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def full_zero_shot() -> CLIPSegPromptedSegmenter:
    start = time.perf_counter()
    model = build_clipseg("zero_shot", {}, random_init=True)
    model.build_seconds = time.perf_counter() - start  # type: ignore[attr-defined]
    return model


def test_full_size_trainable_counts(full_zero_shot: CLIPSegPromptedSegmenter) -> None:
    """docs/science.md §3.3: CoOp d·4·512, upsampler 64·25 + 1 + 1."""
    base, tok = full_zero_shot.clipseg, full_zero_shot.tokenizer
    assert full_zero_shot.total_parameter_count() == 150_693_890  # CLIP ViT-B/16 149.62 M + decoder 1.07 M
    assert full_zero_shot.trainable_parameter_count() == 0
    counts = {
        (d, up): wrap_clipseg(
            base, tok, "clipseg", "coop", {"prompt_depth": d, "learnable_upsampler": up}
        ).trainable_parameter_count()
        for d in (1, 10)
        for up in (False, True)
    }
    assert counts == {(1, False): 2_048, (10, False): 20_480, (1, True): 3_650, (10, True): 22_082}
    assert full_zero_shot.build_seconds < 60  # type: ignore[attr-defined]


def test_prompt_free_path_matches_transformers_interpolated(full_zero_shot: CLIPSegPromptedSegmenter) -> None:
    """Position embeddings resized from 14x14 exactly as transformers does (160 px: the same code path as
    352 px at a fifth of the cost)."""
    pixels = torch.randn(1, 3, 160, 160, generator=torch.Generator().manual_seed(3))
    inputs = {"pixel_values": pixels, **full_zero_shot.tokenize(["a polyp"])}
    with torch.no_grad():
        ours = full_zero_shot(**inputs)
        stock = full_zero_shot.clipseg(**inputs).logits
    assert ours.shape == (1, 1, 160, 160)
    torch.testing.assert_close(ours.squeeze(1), stock.view(1, 160, 160), atol=1e-5, rtol=1e-5)
