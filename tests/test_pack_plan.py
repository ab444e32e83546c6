"""``plan`` with ``resources.pack``: packs, array size, peak memory and device-hours, and the estimate's formulas
checked against the real random-init models (parameter counts, torch's FLOP counter, autograd's saved tensors)."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vlsm_batch.cli import main
from vlsm_batch.jobs import estimate
from vlsm_batch.jobs.estimate import GiB, MemoryEstimate, auto_pack_size, pack_memory, trial_flops, trial_memory
from vlsm_batch.jobs.packing import group_packs
from vlsm_batch.jobs.store import DONE, import_record
from vlsm_batch.jobs.study import write_study
from vlsm_batch.spec import load_spec
from vlsm_batch.trials import expand

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = (REPO / "specs" / "quickstart.yaml").read_text()


def quickstart(tmp_path: Path, pack: object = 4, extra: str = "", seeds: str = "[0]") -> Path:
    """The quickstart spec (8 CoOp trials on clipseg-tiny) into ``tmp_path``, with ``resources.pack``."""
    text = QUICKSTART.replace("output_dir: ${VLSM_RUNS:-runs}/quickstart", f"output_dir: {tmp_path / 'runs'}")
    text = text.replace("data_root: ${VLSM_DATA:-data}", f"data_root: {tmp_path / 'data'}")
    text = text.replace("seeds: [0]", f"seeds: {seeds}")
    text = re.sub(r"(?m)^  pack: .*\n", "", text)  # whatever the quickstart itself sets
    text = text.replace("  local: {max_parallel: 2}", f"  local: {{max_parallel: 2}}\n  pack: {pack}")
    assert f"  pack: {pack}\n" in text, "the quickstart spec no longer has resources.local"
    path = tmp_path / "study.yaml"
    path.write_text(text + extra)
    return path


def plan_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert main(["plan", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


# ------------------------------------------------------------------------------------------------------ plan
def test_quickstart_pack_4_is_two_packs_of_four_with_memory_and_hours(tmp_path, capsys):
    spec = quickstart(tmp_path, pack=4)
    assert main(["plan", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "packs (resources.pack: 4): 8 trials to run in 2 array tasks" in out
    table = out.split("packs (resources.pack: 4)")[1].splitlines()
    assert table[1].split()[3:6] == ["to", "run", "packs"]
    row = next(line.split() for line in table if line.startswith("  clipseg-tiny"))
    assert row[3:6] == ["8", "2", "4"]  # to run, packs, per pack
    assert "array size 2 (one task per pack)" in out
    assert "device-hours" in out and "packed" in out and "unpacked" in out
    assert "estimate: assumes 19.5 TFLOP/s dense peak for precision 32" in out and "max_epochs" in out

    packs = plan_json(capsys, str(spec))["packs"]
    assert packs["pack"] == 4 and packs["totals"]["array_size"] == 2 and packs["totals"]["to_run"] == 8
    (cell,) = packs["cells"]
    assert (cell["packs"], cell["per_pack"], cell["to_run"]) == (2, 4, 8)
    assert 0 < cell["member_gib"] < cell["shared_gib"] < cell["peak_gib"]  # tiny members, shared runtime + weights
    assert cell["peak_gib"] == pytest.approx(cell["shared_gib"] + 4 * cell["member_gib"], abs=0.01)
    # packing shares the start-up and the frozen image forward: 2 processes instead of 8
    assert 0 < cell["hours_packed"] < cell["hours_unpacked"]
    assert packs["assumptions"]["device_tflops"] == 19.5 and packs["assumptions"]["utilization"] == 0.35
    assert packs["assumptions"]["text"].startswith("estimate: assumes")


def test_device_hours_follow_the_stated_throughput_and_start_up(tmp_path, capsys):
    spec = str(quickstart(tmp_path, pack=4))
    base = plan_json(capsys, spec, "--startup-s", "0")["packs"]["cells"][0]
    fast = plan_json(capsys, spec, "--startup-s", "0", "--device-tflops", "39")["packs"]["cells"][0]
    assert fast["hours_unpacked"] == pytest.approx(base["hours_unpacked"] / 2, rel=0.02)
    # start-up: 8 processes unpacked, 2 packed, 30 s each (--startup-s 30 minus --startup-s 0)
    slow = plan_json(capsys, spec, "--startup-s", "30")["packs"]["cells"][0]
    assert slow["hours_unpacked"] - base["hours_unpacked"] == pytest.approx(8 * 30 / 3600, abs=2e-3)
    assert slow["hours_packed"] - base["hours_packed"] == pytest.approx(2 * 30 / 3600, abs=2e-3)


def test_plan_sbatch_array_is_the_pack_count(tmp_path, capsys):
    assert main(["plan", str(quickstart(tmp_path, pack=4)), "--sbatch", "--max-array-size", "11"]) == 0
    out = capsys.readouterr().out
    assert "#SBATCH --array=0-1%" in out  # 2 tasks, not 8


def test_pack_auto_chooses_n_for_the_stated_device_memory(tmp_path, capsys):
    spec = quickstart(tmp_path, pack="auto")
    trial = expand(load_spec(spec)).trials[0]
    mem = trial_memory(trial.model, trial.strategy, trial.params, trial.train, samples=48 + 16 + 16)
    free_gib = (mem.shared + 3.5 * mem.per_member) / (1 - estimate.AUTO_MARGIN) / GiB  # room for 3 members
    packs = plan_json(capsys, str(spec), "--device-memory-gb", f"{free_gib:.6f}")["packs"]
    (cell,) = packs["cells"]
    assert cell["auto_n"] == 3 and cell["per_pack"] == 3
    assert packs["totals"]["array_size"] == 1  # one task of up to 16 trials, trained 3 at a time
    assert cell["peak_gib"] == pytest.approx((mem.shared + 3 * mem.per_member) / GiB, abs=0.01)
    assert main(["plan", str(spec), "--device-memory-gb", f"{free_gib:.6f}"]) == 0
    out = capsys.readouterr().out
    assert "pack: auto trains N trials at once per task, N = 3 for" in out
    assert "the run picks N again from the free memory of its own device" in out
    roomy = plan_json(capsys, str(spec))["packs"]["cells"][0]  # 80 GiB: all 8 at once
    assert (roomy["auto_n"], roomy["per_pack"]) == (16, 8)


def test_finetune_stays_alone_and_seeds_make_separate_packs(tmp_path, capsys):
    spec = quickstart(tmp_path, pack=16, seeds="[0, 1]", extra="baselines: [finetune]\n")
    packs = plan_json(capsys, str(spec))["packs"]
    cells = {c["strategy"]: c for c in packs["cells"]}
    assert (cells["coop"]["to_run"], cells["coop"]["packs"], cells["coop"]["per_pack"]) == (16, 2, 8)  # by seed
    assert (cells["finetune"]["to_run"], cells["finetune"]["packs"], cells["finetune"]["per_pack"]) == (2, 2, 1)
    assert packs["totals"]["array_size"] == 4
    trials = expand(load_spec(spec)).trials
    for group in group_packs(trials, 16):
        assert len({t.seed for t in group}) == 1 and len({t.strategy for t in group}) == 1
    # finetune trains every weight: no frozen weights to share, 16 bytes per weight of its own
    assert cells["finetune"]["member_gib"] > cells["coop"]["member_gib"]


def test_only_trials_still_to_run_are_packed(tmp_path, capsys):
    spec_path = quickstart(tmp_path, pack=4)
    spec = load_spec(spec_path)
    trials = expand(spec).trials
    layout = write_study(spec, trials)
    for t in trials[:5]:
        import_record(layout.trial(t.trial_id), DONE)
    packs = plan_json(capsys, str(spec_path))["packs"]
    assert packs["totals"]["to_run"] == 3 and packs["totals"]["array_size"] == 1
    for t in trials[5:]:
        import_record(layout.trial(t.trial_id), DONE)
    assert main(["plan", str(spec_path)]) == 0
    assert "0 trials to run in 0 array tasks" in capsys.readouterr().out


def test_estimate_and_plan_import_no_torch(tmp_path):
    code = (
        "import sys\nfrom vlsm_batch.jobs import estimate, plan\n"
        "estimate.trial_memory('clipseg', 'vpt', {}, {'batch_size': 32})\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr


# ---------------------------------------------------------------------------------------------- arithmetic
def test_auto_pack_size_arithmetic():
    # (1 - 0.15) * 80 = 68 GiB; minus 4 shared = 64; 64 // 10 = 6 members
    assert auto_pack_size(10 * GiB, 4 * GiB, 80 * GiB) == 6
    assert auto_pack_size(10 * GiB, 4 * GiB, 80 * GiB, margin=0.0) == 7  # 76 // 10
    assert auto_pack_size(1 * GiB, 0, 80 * GiB) == 16  # capped at AUTO_MAX
    assert auto_pack_size(1 * GiB, 0, 80 * GiB, cap=4) == 4
    assert auto_pack_size(100 * GiB, 4 * GiB, 80 * GiB) == 1  # never 0: alone it tries, as it would unpacked
    assert auto_pack_size(0, 4 * GiB, 80 * GiB) == 16


def test_pack_memory_is_shared_once_plus_each_member():
    a, b = MemoryEstimate(shared=5, per_member=2), MemoryEstimate(shared=6, per_member=3)
    assert pack_memory([a, b, b]) == 6 + 2 + 3 + 3
    assert pack_memory([]) == 0


def test_text_prompts_share_the_image_forward_visual_prompts_do_not():
    train = {"batch_size": 32, "precision": "16-mixed"}
    coop, vpt = trial_memory("clipseg", "coop", {}, train), trial_memory("clipseg", "vpt", {}, train)
    assert coop.parts["shared_image_forward"] > 0 and vpt.parts["shared_image_forward"] == 0
    assert vpt.per_member > 2 * coop.per_member  # each VPT member keeps its own 10 ViT layers for backward
    assert coop.parts["frozen_weights"] == vpt.parts["frozen_weights"] == pytest.approx(4 * 150.69e6, rel=0.01)
    fine = trial_memory("clipseg", "finetune", {}, train)
    assert fine.parts["frozen_weights"] < 16 and fine.parts["trainable_and_adamw"] == 16 * 150_693_890
    # mixed precision: 2.5 bytes per activation element instead of 4, plus 16-bit copies of the weights on the
    # gradient path (the 10 ViT layers that run, ~71 M weights, for VPT)
    fp32 = trial_memory("clipseg", "vpt", {}, {"batch_size": 32, "precision": "32"})
    assert fp32.parts["activations"] == pytest.approx(4 / 2.5 * vpt.parts["activations"], rel=1e-6)
    assert fp32.parts["weight_casts"] == 0 and vpt.parts["weight_casts"] == pytest.approx(2 * 71.9e6, rel=0.02)
    # the frozen image forward is counted once per pack: 87-93 % of a CoOp step's FLOPs
    f = trial_flops("clipseg", "coop", {"num_context": 4})
    assert f.shared / (f.shared + f.train) > 0.85 and trial_flops("clipseg", "vpt", {}).shared == 0


# ------------------------------------------------------------- formulas against the real random-init models
PROMPTS = {"prompt_depth": 3, "num_context": 4, "context_init": None, "learnable_upsampler": True}
REAL = [
    ("clipseg-tiny", "coop", {}),
    ("clipseg-tiny", "cocoop", {"intermediate_dim": 16, "use_lora": True}),
    ("clipseg-tiny", "vpt", {}),
    ("clipseg-tiny", "maple", {"intermediate_dim": 24}),
    ("clipseg-tiny", "shared_separate", {"shared_dim": 16, "shared_projection": True}),
    ("clipseg-tiny", "shared_attn", {"ffn_dim": 128, "num_heads": 4}),
    ("clipseg-tiny", "finetune", {}),
    ("cris-tiny", "coop", {}),
    ("cris-tiny", "cocoop", {"intermediate_dim": 32}),
    ("cris-tiny", "finetune", {}),
    ("sam3-tiny", "coop", {}),
    ("sam3-tiny", "cocoop", {"intermediate_dim": 16}),
    ("sam3-tiny", "detr_vpt", {}),
    ("clipseg", "coop", {}),
    ("clipseg", "vpt", {}),
    ("cris", "coop", {}),
]
# The full-size models run their forward at a smaller input (the estimate is evaluated at the same size) so the
# checks stay fast on a CPU; the formulas do not depend on the resolution beyond the token and pixel counts.
CHECK_SIZE = {"clipseg": 128, "cris": 128}


@pytest.fixture(scope="module")
def built():
    """Each REAL model once (the full-size ones take a few seconds to build on CPU)."""
    from vlsm_batch.models.factory import create_model

    cache: dict[tuple[str, str], object] = {}

    def get(model: str, strategy: str, extra: dict):
        key = (model, strategy)
        if key not in cache:
            params = {} if strategy == "finetune" else {**PROMPTS, **extra}
            cache[key] = (create_model(model, strategy, params, random_init=True), params)
        return cache[key]

    return get


@pytest.fixture
def at_check_size(monkeypatch):
    """The estimate's architectures at :data:`CHECK_SIZE` (caches cleared before and after)."""

    def resize(name: str) -> int:
        arch = estimate.ARCHITECTURES[name]
        size = CHECK_SIZE.get(name, arch.image)
        monkeypatch.setitem(estimate.ARCHITECTURES, name, dataclasses.replace(arch, image=size))
        estimate._trial_flops.cache_clear()
        estimate._trial_memory.cache_clear()
        return size

    yield resize
    estimate._trial_flops.cache_clear()
    estimate._trial_memory.cache_clear()


def _inputs(size: int, batch: int):
    import torch

    ids = torch.randint(1, 40000, (batch, estimate.TEXT_TOKENS))
    ids[:, -1] = 49407  # EOS, the largest id
    return torch.randn(batch, 3, size, size), ids, torch.ones_like(ids)


@pytest.mark.parametrize(("name", "strategy", "extra"), REAL)
def test_parameter_counts_match_the_built_models(built, name, strategy, extra):
    model, params = built(name, strategy, extra)
    mem = trial_memory(name, strategy, params, {"batch_size": 1})
    trainable = mem.parts["trainable_and_adamw"] // estimate.OPTIMIZER_BYTES
    frozen = mem.parts["frozen_weights"] // 4
    assert trainable == model.trainable_parameter_count()  # prompt and head shapes: exact
    total = model.total_parameter_count()
    assert abs(trainable + frozen - total) <= 0.05 * total, (trainable + frozen, total)


@pytest.mark.parametrize(("name", "strategy", "extra"), REAL)
def test_flops_match_torch_flop_counter(built, at_check_size, name, strategy, extra):
    """Forward and backward FLOPs of one image against torch's counter (math attention, so it sees the scores)."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from vlsm_batch.training.loss import dice_ce_loss

    model, params = built(name, strategy, extra)
    size = at_check_size(name)
    model.train()
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as forward:
        logits = model(*_inputs(size, 1))
    loss = dice_ce_loss(logits, torch.rand_like(logits).round())
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as backward:
        loss.backward()
    model.zero_grad(set_to_none=True)
    f = trial_flops(name, strategy, params, batch=1)
    measured = forward.get_total_flops() + backward.get_total_flops()
    assert f.eval + f.shared == pytest.approx(forward.get_total_flops(), rel=0.02)
    assert f.train + f.shared == pytest.approx(measured, rel=0.06)


@pytest.mark.parametrize(("name", "strategy", "extra"), REAL)
def test_activations_match_autograd_saved_tensors(built, at_check_size, name, strategy, extra):
    """The elements a member keeps for backward against the storages autograd saves (weights excluded).

    CRIS finetune trains with dropout 0.2 in its decoder attention: CUDA's fused attention applies it without
    keeping the T x T weights, CPU's has no such kernel, so the measurement sets that dropout to 0 (what a GPU
    keeps); the nn.Dropout masks elsewhere stay.
    """
    import torch

    from vlsm_batch.training.loss import dice_ce_loss

    model, params = built(name, strategy, extra)
    size = at_check_size(name)
    model.train()
    batch = 1 if name in CHECK_SIZE else 2
    for module in model.modules():
        if isinstance(module, torch.nn.MultiheadAttention):
            module.dropout = 0.0
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits = model(*_inputs(size, batch))
        dice_ce_loss(logits, torch.rand_like(logits).round())
    measured = sum(saved.values()) / 4 / batch  # fp32 elements per image
    est = trial_memory(name, strategy, params, {"batch_size": batch}).activation_elements
    tolerance = 0.05 if name in CHECK_SIZE else 0.10  # tiny models: small terms weigh more
    assert est == pytest.approx(measured, rel=tolerance)


@pytest.mark.parametrize(("name", "strategy", "extra"), [r for r in REAL if r[0] == "clipseg" or r[1] == "finetune"])
def test_mixed_precision_bytes_match_autocast(built, at_check_size, name, strategy, extra):
    """Under bf16 autocast (CPU's, as Lightning's mixed precision runs on CUDA) the bytes autograd keeps, 16-bit
    weight copies included, against the estimate's activations (2.5 bytes per element) + weight casts."""
    import torch

    from vlsm_batch.training.loss import dice_ce_loss

    model, params = built(name, strategy, extra)
    size = at_check_size(name)
    model.train()
    batch = 2
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(*_inputs(size, batch))
        dice_ce_loss(logits, torch.rand_like(logits).round())
    parts = trial_memory(name, strategy, params, {"batch_size": batch, "precision": "bf16-mixed"}).parts
    assert parts["activations"] + parts["weight_casts"] == pytest.approx(sum(saved.values()), rel=0.10)


def test_a_strategys_batch_size_override_changes_its_cells_estimate(tmp_path, capsys):
    plain = plan_json(capsys, str(quickstart(tmp_path, pack=4)))["packs"]
    (base,) = plain["cells"]
    big = quickstart(tmp_path, pack=4, extra="per_strategy:\n  coop: {train: {batch_size: 64}}\n")
    (cell,) = plan_json(capsys, str(big))["packs"]["cells"]
    assert cell["member_gib"] > base["member_gib"]  # 64 images' activations per member, not the study's batch
    assert cell["peak_gib"] > base["peak_gib"]
