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


TINY = [
    ("coop", PARAMS),
    ("cocoop", {**PARAMS, "intermediate_dim": 16}),
    ("cocoop", {**PARAMS, "intermediate_dim": 16, "use_lora": True, "learnable_upsampler": True}),
    ("detr_vpt", {**PARAMS, "learnable_upsampler": True}),
    ("zero_shot", {}),
    ("finetune", {}),
]


@pytest.mark.parametrize(("strategy", "params"), TINY)
def test_sam3_tiny_trainable_parameters_match_the_built_model(strategy: str, params: dict) -> None:
    """Every SAM 3 strategy's trainable count exactly (finetune: text tower, projection, DETR encoder, mask decoder);
    the total within 2 % (the weights the semantic path never runs are counted from the config, not built)."""
    from vlsm_batch.models.factory import create_model

    model = create_model("sam3-tiny", strategy, params, random_init=True)
    mem = estimate.trial_memory("sam3-tiny", strategy, params, {"batch_size": 1})
    trainable = mem.parts["trainable_and_adamw"] // estimate.OPTIMIZER_BYTES
    assert trainable == model.trainable_parameter_count()
    total = model.total_parameter_count()
    assert abs(trainable + mem.parts["frozen_weights"] // 4 - total) <= 0.02 * total


def test_sam3_tiny_finetune_flops_match_torch_flop_counter() -> None:
    """Finetune runs the image pass itself (not shared) and backpropagates through text, DETR encoder and mask
    decoder only: forward within 2 %, forward + backward within 6 % of torch's counter."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from vlsm_batch.models.factory import create_model

    model = create_model("sam3-tiny", "finetune", {}, random_init=True)
    size = estimate.ARCHITECTURES["sam3-tiny"].image
    ids = torch.randint(1, 40000, (1, estimate.TEXT_TOKENS))
    ids[:, -1] = 49407
    model.train()
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as forward:
        logits = model(torch.randn(1, 3, size, size), ids, torch.ones_like(ids))
    loss = dice_ce_loss(logits, torch.rand_like(logits).round())
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as backward:
        loss.backward()
    f = estimate.trial_flops("sam3-tiny", "finetune", {}, batch=1)
    assert f.shared == 0
    assert f.eval == pytest.approx(forward.get_total_flops(), rel=0.02)
    assert f.train == pytest.approx(forward.get_total_flops() + backward.get_total_flops(), rel=0.06)


PLAN_SPEC = """\
study: s
output_dir: {tmp}/runs
data_root: {tmp}/data
seeds: [0]
models: [clipseg-tiny, sam3-tiny, sam3]
datasets: [synthetic]
strategies: [coop, cocoop, vpt, detr_vpt]
baselines: [zero_shot, finetune, decoder_finetune]
search:
  method: sobol
  trials: 8
  seed: 0
  objective: {{metric: val/dice, mode: max}}
  space:
    lr: {{log_uniform: [3.0e-3, 3.0e-2]}}
    prompt_depth: {{int: [1, 4]}}
  per_strategy:
    detr_vpt: {{prompt_depth: {{int: [1, 3]}}}}
train: {{max_epochs: 2, batch_size: 4, precision: bf16-mixed, num_context: 4, context_init: null}}
resources: {{executor: local, pack: 4}}
"""


def test_plan_sizes_sam3_packs_from_the_cli(tmp_path) -> None:
    """``vlsm-batch plan`` on a study with both SAM 3 models (and CLIPSeg, and the strategies SAM 3 skips) exits 0
    with a pack row per SAM 3 cell: prompt strategies in packs of 4 sharing the image pass, finetune alone."""
    import json
    import subprocess
    import sys

    spec = tmp_path / "study.yaml"
    spec.write_text(PLAN_SPEC.format(tmp=tmp_path))
    text = subprocess.run(
        [sys.executable, "-m", "vlsm_batch", "plan", str(spec)], capture_output=True, text=True, timeout=300
    )
    assert text.returncode == 0, text.stderr
    assert "sam3-tiny" in text.stdout and "device-h packed" in text.stdout
    proc = subprocess.run(
        [sys.executable, "-m", "vlsm_batch", "plan", str(spec), "--json"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    cells = {(c["model"], c["strategy"]): c for c in json.loads(proc.stdout)["packs"]["cells"]}
    for model in ("sam3-tiny", "sam3"):
        for strategy in ("coop", "cocoop", "detr_vpt"):
            c = cells[(model, strategy)]
            assert (c["packs"], c["per_pack"]) == (2, 4)
            # member_gib is the cell's largest trial; the pack holds four (prompt depths differ)
            assert c["shared_gib"] + c["member_gib"] < c["peak_gib"] <= c["shared_gib"] + 4 * c["member_gib"] + 0.01
            assert c["hours_packed"] < c["hours_unpacked"]
        assert cells[(model, "finetune")]["per_pack"] == 1
        assert (model, "vpt") not in cells and (model, "decoder_finetune") not in cells  # skipped with a reason
    big, tiny = cells[("sam3", "coop")], cells[("sam3-tiny", "coop")]
    assert big["shared_gib"] > 3 and big["member_gib"] > 100 * tiny["member_gib"]  # fp32 frozen weights; 1008 px maps
