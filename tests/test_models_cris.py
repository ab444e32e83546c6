"""CRIS (docs/science.md §4.2): CoOp / CoCoOp / baselines on cris-tiny, eval mode through fit, checkpoint loading, and
the full-size trainable counts of docs/science.md §3.3 on one random-init build."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("open_clip")


from fit_helpers import assert_frozen_through_fit  # noqa: E402

from vlsm_batch.errors import VlsmBatchError  # noqa: E402
from vlsm_batch.models.checkpoints import CheckpointMismatchError  # noqa: E402
from vlsm_batch.models.cris import (  # noqa: E402
    RN50_ENV,
    CRISPromptedSegmenter,
    build_cris,
    build_net,
    load_cris_weights,
    wrap_cris,
)
from vlsm_batch.models.factory import create_model  # noqa: E402
from vlsm_batch.models.prompted import ModelLoadError  # noqa: E402
from vlsm_batch.models.tokenizer import offline_clip_tokenizer  # noqa: E402
from vlsm_batch.strategies.impl import PromptConfigError  # noqa: E402

PROMPTS = ["a polyp", "a small benign tumour in the left breast, seen on ultrasound"]
TINY_PARAMS: dict[str, dict[str, Any]] = {"cocoop": {"intermediate_dim": 8}}


def tiny(strategy: str = "coop", depth: int = 2, **params: Any) -> CRISPromptedSegmenter:
    return create_model("cris-tiny", strategy, {"prompt_depth": depth, **TINY_PARAMS.get(strategy, {}), **params})


def batch(model: CRISPromptedSegmenter, prompts: list[str] = PROMPTS, seed: int = 1) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    pixels = torch.randn(len(prompts), 3, model.image_size, model.image_size, generator=gen)
    return {"pixel_values": pixels, **model.tokenize(prompts)}


# -- trainability ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["coop", "cocoop"])
def test_only_prompts_and_head_train_and_all_get_gradient(strategy: str) -> None:
    model = tiny(strategy, 3, learnable_upsampler=True)
    for name, param in model.named_parameters():
        assert param.requires_grad == name.startswith(("learner.", "head.")), name
    model.train()
    assert not any(m.training for m in model.cris.modules())  # frozen BatchNorm/dropout stay in eval mode
    assert model.learner.training and model.head.training
    logits = model(**batch(model))
    assert logits.shape == (2, 1, 64, 64)
    logits.square().mean().backward()
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
        else:
            assert param.grad is None, name


def test_every_context_row_changes_the_output_and_enters_its_layer() -> None:
    model = tiny("coop", 3).eval()
    x = batch(model)
    seen: dict[int, torch.Tensor] = {}
    blocks = model.cris.backbone.transformer.resblocks
    hooks = [
        block.register_forward_pre_hook(lambda mod, args, kw, i=i: seen.__setitem__(i, args[0]), with_kwargs=True)
        for i, block in enumerate(blocks)
    ]
    with torch.no_grad():
        base = model(**x)
    for h in hooks:
        h.remove()
    ctx, n = model.learner.context, model.num_context
    positions = model.cris.backbone.positional_embedding
    assert torch.allclose(seen[0][:, 1 : 1 + n], (ctx[0] + positions[1 : 1 + n]).expand(2, -1, -1))
    for k in (1, 2):  # layers 2 and 3 get fresh rows 1 and 2 (CLIPSeg's depth semantics, not CRIS's off-by-one)
        assert torch.equal(seen[k][:, 1 : 1 + n], ctx[k].expand(2, -1, -1)), k
    assert not torch.allclose(seen[3][:, 1 : 1 + n], ctx[2].expand(2, -1, -1))  # nothing fresh above depth
    for k in range(3):
        with torch.no_grad():
            model.learner.context[k] += 0.5
            changed = model(**x)
            model.learner.context[k] -= 0.5
        assert not torch.allclose(changed, base), k


def test_padding_does_not_change_a_sample() -> None:
    model = tiny("coop", 2).eval()
    x = batch(model)
    alone = {k: v[:1] for k, v in batch(model, PROMPTS[:1]).items()}
    with torch.no_grad():
        together, single = model(**x)[:1], model(**alone)
    assert torch.allclose(together, single, atol=1e-5)


def test_cocoop_conditions_on_the_pooled_c5_map() -> None:
    model = tiny("cocoop", 1).eval()
    x = batch(model)
    got: list[torch.Tensor] = []
    model.learner.register_forward_pre_hook(lambda mod, args: got.append(args[0]))
    with torch.no_grad():
        model(**x)
        c5 = model.cris.encode_image(x["pixel_values"])[2]
    assert got[0].shape == (2, c5.shape[1]) and torch.allclose(got[0], c5.mean(dim=(2, 3)))


def test_depth_and_tower_checks() -> None:
    with pytest.raises(PromptConfigError, match="prompt_depth 5"):
        tiny("coop", 5)
    with pytest.raises(VlsmBatchError):
        tiny("vpt", 1)


def test_zero_shot_and_finetune() -> None:
    zero = create_model("cris-tiny", "zero_shot", {"learnable_upsampler": True})
    assert zero.trainable_parameter_count() == 0 and zero.head is None
    fine = create_model("cris-tiny", "finetune", {})
    assert fine.trainable_parameter_count() == fine.total_parameter_count()
    dropouts = [m.p for m in fine.cris.decoder.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts and set(dropouts) == {0.2}  # docs/science.md §4.4
    assert {m.p for m in zero.cris.decoder.modules() if isinstance(m, torch.nn.Dropout)} == {0.0}
    fine.train()
    assert all(m.training for m in fine.modules())
    fine(**batch(fine)).mean().backward()
    assert fine.cris.backbone.visual.conv1.weight.grad.abs().sum() > 0
    assert fine.cris.backbone.token_embedding.weight.grad.abs().sum() > 0
    assert "every weight" in fine.describe_prompts()[0]
    fine(**batch(fine, PROMPTS[:1])).mean().backward()  # a last training batch of one sample (BatchNorm1d)


def test_bf16_autocast_step() -> None:
    model = tiny("coop", 1, learnable_upsampler=True).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(**batch(model))
    logits.float().mean().backward()
    assert model.learner.context.grad is not None


def test_describe_prompts() -> None:
    lines = tiny("cocoop", 2, learnable_upsampler=True).describe_prompts()
    assert "layers 1..2" in lines[0] and "1x1 conv to 64" in lines[-1]


# -- Lightning: frozen modules (BatchNorm included) stay in eval mode through fit ----------------------------------
@pytest.mark.parametrize("strategy", ["coop", "cocoop"])
def test_frozen_modules_stay_in_eval_mode_through_fit(strategy: str) -> None:
    model = tiny(strategy, 2, learnable_upsampler=True)
    assert_frozen_through_fit(model, model.cris, batch(model))


# -- checkpoints ---------------------------------------------------------------------------------------------------
def _perturbed_state() -> dict[str, torch.Tensor]:
    net = build_net("tiny", 0.0)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01)
    return {k: v.clone() for k, v in net.state_dict().items()}


def test_original_layout_checkpoint_loads_strictly(tmp_path: Path) -> None:
    state = _perturbed_state()
    # DataParallel (module.) as saved by CRIS, and a Lightning-style model. prefix nested under "state_dict"
    for prefix in ("module.", "model.", "model.module."):
        path = tmp_path / f"{prefix.strip('.')}.pth"
        torch.save({"epoch": 3, "state_dict": {prefix + k: v for k, v in state.items()}}, path)
        model = create_model("cris-tiny", "coop", {}, weights=str(path))
        for k, v in model.cris.state_dict().items():
            assert torch.equal(v, state[k]), (prefix, k)


def test_backbone_from_a_clip_rn50_file_and_position_grid_resize(tmp_path: Path, monkeypatch: Any) -> None:
    state = _perturbed_state()
    rest = {k: v for k, v in state.items() if not k.startswith("backbone.")}
    backbone = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
    key = "visual.attnpool.positional_embedding"
    backbone[key] = torch.randn(50, backbone[key].shape[1])  # OpenAI's 7x7 grid + class token
    backbone["input_resolution"] = torch.tensor(224)  # metadata entries of OpenAI files are dropped
    torch.save(backbone, tmp_path / "RN50.pt")
    torch.save(rest, tmp_path / "cris.pth")
    monkeypatch.delenv(RN50_ENV, raising=False)
    net = build_net("tiny", 0.0)
    load_cris_weights(net, tmp_path / "cris.pth")  # sibling RN50.pt
    assert net.backbone.visual.attnpool.positional_embedding.shape == (5, backbone[key].shape[1])
    assert torch.equal(net.backbone.visual.conv1.weight, backbone["visual.conv1.weight"])
    (tmp_path / "RN50.pt").rename(tmp_path / "clip.pt")
    with pytest.raises(CheckpointMismatchError, match=RN50_ENV):
        load_cris_weights(build_net("tiny", 0.0), tmp_path / "cris.pth")
    monkeypatch.setenv(RN50_ENV, str(tmp_path / "clip.pt"))
    load_cris_weights(build_net("tiny", 0.0), tmp_path / "cris.pth")


def test_corrupted_checkpoint_fails_with_a_key_diff(tmp_path: Path) -> None:
    state = _perturbed_state()
    del state["neck.txt_proj.0.weight"]
    state["decoder.layers.9.bogus"] = torch.zeros(3)
    state["proj.txt.bias"] = torch.zeros(7)
    path = tmp_path / "bad.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, path)
    with pytest.raises(CheckpointMismatchError) as err:
        create_model("cris-tiny", "coop", {}, weights=str(path))
    msg = str(err.value)
    assert "missing keys (1): neck.txt_proj.0.weight" in msg
    assert "unexpected keys (1): decoder.layers.9.bogus" in msg
    assert "shape mismatches (1): proj.txt.bias (7,)" in msg
    assert isinstance(err.value, VlsmBatchError)
    with pytest.raises(ModelLoadError, match="does not exist"):
        create_model("cris-tiny", "coop", {}, weights=str(tmp_path / "nope.pth"))


def test_full_cris_needs_a_local_checkpoint() -> None:
    with pytest.raises(ModelLoadError, match="weights:"):
        build_cris("coop", {})


# -- full size (docs/science.md §3.3) ----------------------------------------------------------------------------------
def test_full_size_trainable_counts() -> None:
    net = build_net("full", 0.0)
    tok = offline_clip_tokenizer()

    def count(strategy: str, **params: Any) -> int:
        return wrap_cris(net, tok, "cris", strategy, params).trainable_parameter_count()

    for depth in (1, 10):
        assert count("coop", prompt_depth=depth) == depth * 4 * 512
    assert count("cocoop", prompt_depth=1, intermediate_dim=64) == 100_928
    assert count("cocoop", prompt_depth=10, intermediate_dim=64) == 1_009_280
    assert count("coop", prompt_depth=1, learnable_upsampler=True) == 2_048 + 34_370
    model = wrap_cris(net, tok, "cris", "zero_shot", {})
    assert model.image_size == 416 and model.max_text_tokens == 77
    assert net.backbone.visual.attnpool.positional_embedding.shape == (13 * 13 + 1, 2048)
    assert net.proj.txt.out_features == 2_305 and net.neck.coordconv[1][0].out_channels == 512
