"""``jobs.estimate``'s SAM 3 cost model against the full facebook/sam3 architecture (random weights, its ViT built
for 168 px so a CPU runs it in seconds; the formulas depend on the size only through token and pixel counts):
parameters exact, FLOPs against torch's counter, activations against autograd's saved tensors. Also what a pack
shares, and the image pass against CLIPSeg's at the real sizes."""

from __future__ import annotations

import dataclasses

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from vlsm_batch.jobs import estimate  # noqa: E402
from vlsm_batch.models import configs  # noqa: E402
from vlsm_batch.training.loss import dice_ce_loss  # noqa: E402

SIZE = 168
PARAMS = {"prompt_depth": 3, "num_context": 4, "context_init": None, "intermediate_dim": 64}


@pytest.fixture(scope="module")
def frozen():
    from vlsm_batch.models.sam3 import _random_model

    return _random_model(dataclasses.replace(configs.SAM3, image_size=SIZE))


@pytest.fixture
def small(monkeypatch):
    monkeypatch.setitem(estimate.ARCHITECTURES, "sam3", dataclasses.replace(estimate.ARCHITECTURES["sam3"], image=SIZE))
    estimate._trial_flops.cache_clear()
    estimate._trial_memory.cache_clear()
    yield
    estimate._trial_flops.cache_clear()
    estimate._trial_memory.cache_clear()


def _wrap(model, strategy: str):
    from vlsm_batch.models.sam3 import wrap_sam3
    from vlsm_batch.models.tokenizer import offline_clip_tokenizer

    params = {} if strategy == "finetune" else PARAMS
    return wrap_sam3(model, offline_clip_tokenizer(), "sam3", strategy, params, (0.5,) * 3, (0.5,) * 3), params


def _inputs():
    ids = torch.randint(1, 40000, (1, estimate.TEXT_TOKENS))
    ids[:, -1] = 49407
    return torch.randn(1, 3, SIZE, SIZE), ids, torch.ones_like(ids)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["coop", "detr_vpt", "finetune"])  # cocoop: sam3-tiny in test_pack_plan
def test_full_size_sam3_formulas_match_the_built_model(frozen, small, strategy: str) -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    model, params = _wrap(frozen, strategy)
    mem = estimate.trial_memory("sam3", strategy, params, {"batch_size": 1})
    trainable = mem.parts["trainable_and_adamw"] // estimate.OPTIMIZER_BYTES
    assert trainable == model.trainable_parameter_count()
    total = model.total_parameter_count()
    assert abs(trainable + mem.parts["frozen_weights"] // 4 - total) <= 0.01 * total
    model.train()
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as forward:
        logits = model(*_inputs())
    loss = dice_ce_loss(logits, torch.rand_like(logits).round())
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as backward:
        loss.backward()
    model.zero_grad(set_to_none=True)
    f = estimate.trial_flops("sam3", strategy, params, batch=1)
    assert f.eval + f.shared == pytest.approx(forward.get_total_flops(), rel=0.02)
    assert f.train + f.shared == pytest.approx(forward.get_total_flops() + backward.get_total_flops(), rel=0.06)
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.untyped_storage().data_ptr() not in weights:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits = model(*_inputs())
        dice_ce_loss(logits, torch.rand_like(logits).round())
    assert mem.activation_elements == pytest.approx(sum(saved.values()) / 4, rel=0.05)
    if strategy == "finetune":  # it trained the shared object's weights: later cases need a frozen one
        frozen.requires_grad_(False)


def test_packs_share_sam3s_image_pass_except_finetune() -> None:
    for strategy in ("coop", "cocoop", "detr_vpt", "zero_shot"):
        assert estimate.trial_flops("sam3", strategy, PARAMS).shared > 0, strategy
    fine = estimate.trial_flops("sam3", "finetune", {})
    assert fine.shared == 0 and fine.eval > estimate.trial_flops("sam3", "coop", PARAMS).eval


def test_sam3s_image_pass_dominates_and_is_tens_of_clipsegs() -> None:
    sam3 = estimate.trial_flops("sam3", "coop", PARAMS)
    clipseg = estimate.trial_flops("clipseg", "coop", PARAMS)
    assert 30 < sam3.shared / clipseg.shared < 120  # the "about 60x CLIPSeg's image FLOPs"
    assert sam3.shared > 5 * sam3.train  # prompt tuning's own work is small next to the frozen image pass
