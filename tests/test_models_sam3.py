"""SAM 3 (docs/science.md §9) on sam3-tiny: the wrapper reproduces ``Sam3Model``'s semantic output, each strategy
trains exactly its parameters and its prompts enter where the registry says, a short fit lowers the loss, and the
real-weights loading code reads a ``save_pretrained`` folder (model, processor config, tokenizer) strictly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from fit_helpers import assert_frozen_through_fit  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from vlsm_batch.errors import VlsmBatchError  # noqa: E402
from vlsm_batch.models.configs import SAM3_TINY  # noqa: E402
from vlsm_batch.models.factory import create_model  # noqa: E402
from vlsm_batch.models.prompted import ModelLoadError  # noqa: E402
from vlsm_batch.models.sam3 import Sam3PromptedSegmenter, _pretrained_model, _processor_facts  # noqa: E402
from vlsm_batch.strategies.impl import PromptConfigError  # noqa: E402
from vlsm_batch.training.loss import dice_ce_loss  # noqa: E402

PROMPTS = ["polyp", "a small benign tumour in the left breast, seen on ultrasound"]
SIZE = SAM3_TINY.image_size
TEXT, FUSION = SAM3_TINY.text.width, SAM3_TINY.fusion.width


def tiny(strategy: str = "coop", depth: int = 2, **params: Any) -> Sam3PromptedSegmenter:
    extra = {"intermediate_dim": 8} if strategy == "cocoop" else {}
    model = create_model("sam3-tiny", strategy, {"prompt_depth": depth, **extra, **params})
    assert isinstance(model, Sam3PromptedSegmenter)
    return model


def batch(model: Sam3PromptedSegmenter, prompts: list[str] = PROMPTS, seed: int = 1) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    pixels = torch.randn(len(prompts), 3, model.image_size, model.image_size, generator=gen)
    return {"pixel_values": pixels, **model.tokenize(prompts)}


# -- fidelity to transformers' Sam3Model ---------------------------------------------------------------------------
def test_zero_shot_is_sam3_models_semantic_output() -> None:
    """No prompts: our stage-by-stage forward equals ``Sam3Model.forward(...).semantic_seg``, resized bilinearly
    to the input as ``post_process_semantic_segmentation`` does."""
    model = create_model("sam3-tiny", "zero_shot", {}).eval()
    x = batch(model)
    with torch.no_grad():
        ours = model(**x)
        out = model.sam3(**x)
        text = model.sam3.get_text_features(input_ids=x["input_ids"], attention_mask=x["attention_mask"])
        features, mask = model.encode_text(x["input_ids"], x["attention_mask"])
    ref = F.interpolate(out.semantic_seg, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    assert ours.shape == (2, 1, SIZE, SIZE)
    assert torch.allclose(ours, ref, atol=1e-6, rtol=0)
    assert torch.allclose(features, text.pooler_output, atol=1e-6) and torch.equal(mask, x["attention_mask"].bool())


def test_tokenizer_keeps_noun_phrases_and_fits_32_positions() -> None:
    model = tiny("coop", 1, num_context=8, context_init=None)
    ids = model.tokenize(["polyp", "word " * 60])["input_ids"]
    assert ids.shape[1] == 32 - 8  # room left for the 8 prompt tokens in SAM 3's 32 text positions
    plain = model.tokenizer("polyp")["input_ids"]
    assert ids[0, : len(plain)].tolist() == plain  # no "." appended (SAM 3 takes noun phrases)


def test_input_size_and_normalisation_come_from_the_processor() -> None:
    from transformers import Sam3ImageProcessor

    model = tiny("coop", 1)
    processor = Sam3ImageProcessor()
    assert model.image_size == SIZE
    assert model.image_mean == tuple(processor.image_mean) and model.image_std == tuple(processor.image_std)


# -- what trains and where prompts enter ---------------------------------------------------------------------------
def _trainable(model: Sam3PromptedSegmenter) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_trainable_parameter_counts() -> None:
    coop = tiny("coop", 3, num_context=5, context_init=None)
    assert coop.trainable_parameter_count() == 3 * 5 * TEXT and _trainable(coop) == {"learner.context"}
    vpt = tiny("detr_vpt", 2, num_context=6)
    assert vpt.trainable_parameter_count() == 2 * 6 * FUSION and _trainable(vpt) == {"learner.context"}
    cocoop = tiny("cocoop", 2)
    meta = sum(p.numel() for p in cocoop.learner.meta_net.parameters())
    assert cocoop.trainable_parameter_count() == 2 * 4 * TEXT + meta
    assert all(n.startswith("learner.") for n in _trainable(cocoop))
    head = tiny("coop", 1, learnable_upsampler=True)
    # 1x1 conv to 64 (no bias), 5x5 conv to 1 channel + bias, the blend ratio r
    assert head.trainable_parameter_count() == 4 * TEXT + FUSION * 64 + 64 * 25 + 1 + 1
    assert create_model("sam3-tiny", "zero_shot", {}).trainable_parameter_count() == 0
    fine = create_model("sam3-tiny", "finetune", {})
    sam3 = fine.sam3
    parts = (sam3.text_encoder.text_model, sam3.text_projection, sam3.detr_encoder, sam3.mask_decoder)
    assert fine.trainable_parameter_count() == sum(p.numel() for part in parts for p in part.parameters())
    assert not any(p.requires_grad for p in sam3.vision_encoder.parameters())
    assert not any(p.requires_grad for p in sam3.detr_decoder.parameters())


@pytest.mark.parametrize("strategy", ["coop", "cocoop", "detr_vpt", "finetune"])
def test_gradient_reaches_exactly_the_trainable_parameters(strategy: str) -> None:
    model = tiny(strategy, 2) if strategy != "finetune" else create_model("sam3-tiny", "finetune", {})
    model.train()
    assert not any(m.training for m in model.sam3.vision_encoder.modules())  # the ViT stays in eval mode
    model(**batch(model)).square().mean().backward()
    for name, param in model.named_parameters():
        if not param.requires_grad:
            assert param.grad is None, name
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    reached = [n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert trained and set(reached) <= set(trained)
    assert any(n.startswith("learner.") or n.startswith("sam3.") for n in reached)
    if strategy != "finetune":
        assert set(reached) == set(trained)


def _stage_outputs(model: Sam3PromptedSegmenter, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Image pass, prompt features, DETR encoder output and logits of one forward."""
    out: dict[str, torch.Tensor] = {}
    hooks = [
        model.sam3.vision_encoder.register_forward_hook(
            lambda m, a, o: out.__setitem__("image", o.fpn_hidden_states[2])
        ),
        model.sam3.text_projection.register_forward_hook(lambda m, a, o: out.__setitem__("text", o)),
        model.sam3.detr_encoder.layers[-1].register_forward_hook(lambda m, a, o: out.__setitem__("fusion", o)),
    ]
    with torch.no_grad():
        out["logits"] = model(**x)
    for h in hooks:
        h.remove()
    return out


@pytest.mark.parametrize(("strategy", "path"), [("coop", "text"), ("detr_vpt", "fusion")])
def test_a_prompt_changes_the_output_only_through_its_path(strategy: str, path: str) -> None:
    """Changing a CoOp row changes the prompt features and what follows, never the image pass; changing a
    DETR-encoder row changes the encoder output and the mask, never the image pass or the text features."""
    model = tiny(strategy, 2).eval()
    x = batch(model)
    base = _stage_outputs(model, x)
    gen = torch.Generator().manual_seed(0)
    for k in range(2):
        # a random shift: a constant one would vanish in the next LayerNorm
        shift = 0.5 * torch.randn(model.learner.context[k].shape, generator=gen)
        with torch.no_grad():
            model.learner.context[k] += shift
        changed = _stage_outputs(model, x)
        with torch.no_grad():
            model.learner.context[k] -= shift
        assert torch.equal(changed["image"], base["image"]), k
        assert not torch.allclose(changed["fusion"], base["fusion"]), k
        assert not torch.allclose(changed["logits"], base["logits"]), k
        same_text = torch.equal(changed["text"], base["text"])
        assert same_text == (path == "fusion"), k


def test_fusion_rows_enter_their_encoder_layers() -> None:
    """Row k is appended at the input of DETR encoder layer k+1 (fresh, not carried), nothing above the depth;
    the image tokens keep their sine positions and the prompt slots get none."""
    model = tiny("detr_vpt", 2, num_context=3).eval()
    x = batch(model)
    seen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    layers = model.sam3.detr_encoder.layers
    hooks = [
        layer.register_forward_pre_hook(
            lambda mod, args, kw, i=i: seen.__setitem__(i, (args[0], kw["vision_pos_encoding"])), with_kwargs=True
        )
        for i, layer in enumerate(layers)
    ]
    with torch.no_grad():
        model(**x)
    for h in hooks:
        h.remove()
    ctx = model.learner.context
    grid = SAM3_TINY.grid**2
    for k in range(2):
        hidden, pos = seen[k]
        assert hidden.shape[1] == grid + 3 and torch.equal(hidden[:, grid:], ctx[k].expand(2, -1, -1)), k
        assert torch.equal(pos[:, grid:], torch.zeros_like(pos[:, grid:])) and pos[:, :grid].abs().sum() > 0
    above = seen[2][0]
    assert not torch.allclose(above[:, grid:], ctx[1].expand(2, -1, -1))  # layer 3 gets layer 2's output


def test_cocoop_conditions_on_the_mean_vit_state() -> None:
    model = tiny("cocoop", 1).eval()
    x = batch(model)
    got: list[torch.Tensor] = []
    model.learner.register_forward_pre_hook(lambda mod, args: got.append(args[0]))
    with torch.no_grad():
        model(**x)
        vit = model.sam3.get_vision_features(pixel_values=x["pixel_values"]).last_hidden_state
    assert got[0].shape == (2, SAM3_TINY.vit.width) and torch.allclose(got[0], vit.mean(dim=1))


def test_padding_does_not_change_a_sample() -> None:
    model = tiny("coop", 2).eval()
    together = model(**batch(model))[:1]
    alone = model(**{k: v[:1] for k, v in batch(model, PROMPTS[:1]).items()})
    assert torch.allclose(together.detach(), alone.detach(), atol=1e-5)


def test_refusals_name_the_reason() -> None:
    with pytest.raises(VlsmBatchError, match="windows"):
        tiny("vpt", 1)
    with pytest.raises(VlsmBatchError, match="use finetune"):
        create_model("sam3-tiny", "decoder_finetune", {})
    with pytest.raises(VlsmBatchError, match="fusion encoder"):
        create_model("clipseg-tiny", "detr_vpt", {})
    with pytest.raises(PromptConfigError, match="prompt_depth 4"):
        tiny("detr_vpt", SAM3_TINY.fusion.layers + 1)
    with pytest.raises(PromptConfigError, match="prompt_depth 5"):
        tiny("coop", SAM3_TINY.text.layers + 1)


# -- training --------------------------------------------------------------------------------------------------------
def _target(size: int, n: int) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disc = ((yy - size / 2) ** 2 + (xx - size / 3) ** 2 < (size / 4) ** 2).float()
    return disc.expand(n, 1, size, size).clone()


@pytest.mark.parametrize(
    ("strategy", "lr", "gain"), [("coop", 5e-2, 0.0), ("detr_vpt", 5e-2, 0.0), ("finetune", 1e-3, 0.1)]
)
def test_a_short_fit_lowers_the_loss(strategy: str, lr: float, gain: float) -> None:
    """AdamW on the trainable parameters only, 15 steps on one batch: the loss goes down (prompts move a frozen
    random-init network only a little, fine-tuning much more: ``gain`` is the relative drop required)."""
    model = tiny(strategy, 2) if strategy != "finetune" else create_model("sam3-tiny", "finetune", {})
    model.train()
    x, target = batch(model), _target(SIZE, 2)
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    losses = []
    for _ in range(15):
        loss = dice_ce_loss(model(**x), target)
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < (1 - gain) * losses[0], losses


@pytest.mark.parametrize("strategy", ["coop", "detr_vpt"])
def test_prompts_can_reach_a_realisable_target(strategy: str) -> None:
    """The frozen random-init network's logits move little with prompts, so the real loss can only drop a little;
    a target the prompts can reach (the logits of the same model under other prompts) shows that they steer it:
    20 AdamW steps close most of the gap."""
    model = tiny(strategy, 2).train()
    x = batch(model)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        start = model.learner.context.clone()
        model.learner.context += 0.5 * torch.randn(start.shape, generator=gen)
        target = model(**x)
        model.learner.context.copy_(start)
    optim = torch.optim.AdamW([model.learner.context], lr=5e-2, weight_decay=0.0)
    losses = []
    for _ in range(20):
        loss = (model(**x) - target).square().mean()
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize("strategy", ["coop", "detr_vpt"])
def test_frozen_model_stays_in_eval_mode_and_unchanged_through_fit(strategy: str) -> None:
    model = tiny(strategy, 2, learnable_upsampler=True)
    assert_frozen_through_fit(model, model.sam3, batch(model))


def test_bf16_autocast_step() -> None:
    model = tiny("detr_vpt", 1).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(**batch(model))
    logits.float().mean().backward()
    assert model.learner.context.grad is not None


# -- real weights: the loading code on a save_pretrained folder of the tiny architecture ----------------------------
@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import Sam3ImageProcessor

    folder = tmp_path_factory.mktemp("sam3-weights")
    model = create_model("sam3-tiny", "zero_shot", {})
    model.sam3.save_pretrained(folder)
    Sam3ImageProcessor(size={"height": SIZE, "width": SIZE}).save_pretrained(folder)
    model.tokenizer.save_pretrained(folder)
    return folder


def test_pretrained_folder_loads_strictly_with_its_processor(saved: Path) -> None:
    loaded = _pretrained_model(str(saved))
    reference = create_model("sam3-tiny", "zero_shot", {}).sam3
    for (name, a), (_, b) in zip(loaded.state_dict().items(), reference.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    size, mean, std = _processor_facts(str(saved), SAM3_TINY)
    assert size == SIZE and mean == (0.5, 0.5, 0.5) and std == (0.5, 0.5, 0.5)
    with pytest.raises(ModelLoadError, match="built for 1008"):
        from vlsm_batch.models.configs import SAM3

        _processor_facts(str(saved), SAM3)


def test_incomplete_weights_are_refused(saved: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    broken.mkdir()
    for f in saved.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    state = load_file(str(broken / "model.safetensors"))
    state = {k: v for k, v in state.items() if not k.startswith("mask_decoder.")}
    save_file(state, str(broken / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match="missing weight"):
        _pretrained_model(str(broken))


def test_missing_gated_weights_say_how_to_get_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="gated"):
        _pretrained_model(str(tmp_path / "nowhere"))
