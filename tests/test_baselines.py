"""The two fine-tuning baselines say what they train: ``finetune`` every weight, ``decoder_finetune`` only CLIPSeg's
decoder (what the original's E2E trained through transformers' no_grad encoders, docs/science.md §4.4), refused on CRIS
everywhere; plus the multi-tensor AdamW every trial uses."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from helpers import make_spec  # noqa: E402

from vlsm_batch.cli import main  # noqa: E402
from vlsm_batch.errors import SpecError  # noqa: E402
from vlsm_batch.models.factory import create_model  # noqa: E402
from vlsm_batch.spec import load_spec  # noqa: E402
from vlsm_batch.strategies import BASELINES, get_strategy  # noqa: E402
from vlsm_batch.strategies.impl import StrategyNotImplementedError  # noqa: E402
from vlsm_batch.trials import expand  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PROMPTS = ["a polyp", "a small benign tumour in the left breast"]
CRIS_REASON = "the original's CRIS end-to-end baseline trained every weight"


def inputs(model: Any, seed: int = 1) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    pixels = torch.randn(len(PROMPTS), 3, model.image_size, model.image_size, generator=gen)
    return {"pixel_values": pixels, **model.tokenize(PROMPTS)}


def target(model: Any) -> torch.Tensor:
    gen = torch.Generator().manual_seed(2)
    return (torch.rand(len(PROMPTS), 1, model.image_size, model.image_size, generator=gen) > 0.5).float()


# -- what each baseline trains --------------------------------------------------------------------------------------
def test_decoder_finetune_trains_exactly_the_decoder() -> None:
    from vlsm_batch.training.loss import dice_ce_loss
    from vlsm_batch.training.optim import make_adamw

    model = create_model("clipseg-tiny", "decoder_finetune", {})
    assert model.trains_decoder and not create_model("clipseg-tiny", "zero_shot", {}).trains_decoder
    decoder = model.clipseg.decoder
    assert model.trainable_parameter_count() == sum(p.numel() for p in decoder.parameters()) > 0
    for name, param in model.named_parameters():
        assert param.requires_grad == name.startswith("clipseg.decoder."), name
    parts = {name.split(".")[0] for name, _ in decoder.named_parameters()}
    assert {"film_mul", "film_add", "reduces", "layers", "transposed_convolution"} <= parts
    model.train()
    assert not any(m.training for m in model.clipseg.clip.modules())  # encoders stay in eval mode
    assert all(m.training for m in decoder.modules())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = make_adamw(model.param_groups(1e-3), 1e-2, 1e-3, "cpu")
    dice_ce_loss(model(**inputs(model)), target(model)).backward()
    for name, param in model.named_parameters():
        if name.startswith("clipseg.decoder."):
            assert param.grad is not None and param.grad.abs().sum() > 0, name
        else:
            assert param.grad is None, name  # encoders ran without gradient
    optimizer.step()
    after = model.state_dict()
    for name, _ in model.named_parameters():
        changed = not torch.equal(after[name], before[name])
        assert changed == name.startswith("clipseg.decoder."), name  # weight decay never touched a frozen weight


def test_decoder_finetune_is_the_originals_e2e_step() -> None:
    """The original's E2E (transformers' forward, every weight set trainable) gives gradients to the decoder only,
    and the same gradients as decoder_finetune: the finding, and that the baseline reproduces it."""
    from vlsm_batch.training.loss import dice_ce_loss

    ours = create_model("clipseg-tiny", "decoder_finetune", {}).train()
    original = create_model("clipseg-tiny", "zero_shot", {}).clipseg  # the same seeded weights
    original.requires_grad_(True).train()
    x, y = inputs(ours), target(ours)
    dice_ce_loss(ours(**x), y).backward()
    logits = original(input_ids=x["input_ids"], pixel_values=x["pixel_values"], attention_mask=x["attention_mask"])
    dice_ce_loss(logits.logits.unsqueeze(1), y).backward()  # transformers squeezes the channel
    grads = {n: p.grad for n, p in original.named_parameters() if p.grad is not None}
    assert set(grads) == {n for n, _ in original.named_parameters() if n.startswith("decoder.")}
    mine = dict(ours.clipseg.named_parameters())
    for name, grad in grads.items():
        torch.testing.assert_close(mine[name].grad, grad, rtol=1e-4, atol=1e-6, msg=name)


def test_finetune_trains_every_weight() -> None:
    model = create_model("clipseg-tiny", "finetune", {})
    assert model.trainable_parameter_count() == model.total_parameter_count()
    model.train()
    model(**inputs(model)).square().mean().backward()
    # every weight the forward reads gets a gradient; the rest (top vision layer, visual projection, ...) are read
    # by no segmentation path, here or in the original, and describe says so
    unused = set(model.unused_parameter_names())
    assert "clipseg.clip.visual_projection.weight" in unused and len(unused) < 30
    assert {n for n, p in model.named_parameters() if p.grad is None} == unused
    assert model.clipseg.clip.text_model.embeddings.token_embedding.weight.grad.abs().sum() > 0
    assert model.clipseg.clip.vision_model.embeddings.patch_embedding.weight.grad.abs().sum() > 0


def test_catalog_names_and_defaults() -> None:
    assert BASELINES == ("zero_shot", "finetune", "decoder_finetune")
    info = get_strategy("decoder_finetune")
    assert info.baseline and info.trains and info.implemented_for == frozenset({"clipseg"})
    assert {p.name: p.default for p in info.params} == {"lr": 2e-4, "weight_decay": 1e-3}
    assert info.display == "decoder-only fine-tune (what the original's CLIPSeg E2E trained)"
    assert get_strategy("finetune").display == "full fine-tune (all weights)"
    assert info.loop_settings({"max_epochs": 100, "min_epochs": 10}) == {"max_epochs": 40, "min_epochs": 10}
    assert info.loop_settings({"max_epochs": 2, "min_epochs": 1}) == {"max_epochs": 2, "min_epochs": 1}
    assert info.loop_settings({"max_epochs": 60, "min_epochs": 50}) == {"max_epochs": 40, "min_epochs": 40}


# -- CRIS: refused everywhere, with the reason --------------------------------------------------------------------
def test_cris_refuses_decoder_finetune_when_built() -> None:
    with pytest.raises(StrategyNotImplementedError, match=CRIS_REASON):
        create_model("cris-tiny", "decoder_finetune", {})
    fine = create_model("cris-tiny", "finetune", {})  # CRIS's faithful E2E baseline: every weight
    assert fine.trainable_parameter_count() == fine.total_parameter_count()


def test_describe_shows_counts_and_refuses_cris(capsys: pytest.CaptureFixture[str]) -> None:
    decoder = sum(p.numel() for p in create_model("clipseg-tiny", "zero_shot", {}).clipseg.decoder.parameters())
    total = create_model("clipseg-tiny", "zero_shot", {}).total_parameter_count()
    assert main(["describe", "clipseg-tiny", "decoder_finetune"]) == 0
    out = capsys.readouterr().out
    assert "decoder-only fine-tune" in out and "frozen parameters:" in out
    assert re.search(rf"clipseg\.decoder\s+{decoder:,}\n", out)
    assert re.search(rf"total\s+{decoder:,}\s+of {total:,}", out)
    assert re.search(rf"clipseg\.clip\s+{total - decoder:,}\n", out.split("frozen parameters:")[1])
    assert main(["describe", "clipseg-tiny", "finetune"]) == 0
    assert re.search(rf"total\s+{total:,}\s+of {total:,} \(100\.0000%\)", capsys.readouterr().out)
    assert main(["describe", "cris-tiny", "decoder_finetune"]) != 0
    assert CRIS_REASON in capsys.readouterr().err


def _write(tmp_path: Path, models: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(
        f"study: t\nmodels: [{models}]\ndatasets: [synthetic]\nbaselines: [finetune, decoder_finetune]\n"
        "train: {max_epochs: 50, min_epochs: 5}\n"
    )
    return path


def test_validate_and_plan_skip_decoder_finetune_on_cris(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = load_spec(_write(tmp_path, "clipseg-tiny, cris-tiny"))
    assert any(n.startswith("decoder_finetune skipped for cris-tiny: " + CRIS_REASON) for n in spec.notes)
    assert any("decoder_finetune trains 5-40 epochs" in n for n in spec.notes)
    cells = {(c.model, c.strategy): c for c in expand(spec).cells}
    assert CRIS_REASON in (cells["cris-tiny", "decoder_finetune"].skipped or "")
    assert not cells["cris-tiny", "decoder_finetune"].trials
    assert cells["cris-tiny", "finetune"].trials and not cells["cris-tiny", "finetune"].skipped
    (trial,) = cells["clipseg-tiny", "decoder_finetune"].trials
    assert (trial.train["max_epochs"], trial.train["min_epochs"]) == (40, 5)  # the original's E2E budget
    assert cells["clipseg-tiny", "finetune"].trials[0].train["max_epochs"] == 50
    assert main(["plan", str(tmp_path / "s.yaml")]) == 0
    assert f"decoder_finetune on cris-tiny (1 datasets): {CRIS_REASON}" in capsys.readouterr().out
    with pytest.raises(SpecError, match="decoder_finetune cannot run on any listed model: " + CRIS_REASON):
        load_spec(_write(tmp_path, "cris-tiny"))


def test_full_benchmark_validates_and_expands_both_baselines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cris = tmp_path / "cris_best_single.pth"
    cris.write_bytes(b"")  # validate needs the local CRIS checkpoint to exist
    monkeypatch.setenv("CRIS_WEIGHTS", str(cris))
    monkeypatch.setenv("VLSM_RUNS", str(tmp_path / "runs"))
    spec = load_spec(REPO / "specs" / "full_benchmark.yaml")
    assert {"finetune", "decoder_finetune"} <= set(spec.baselines)
    cells = expand(spec).cells
    for model, strategy, trials in (("clipseg", "finetune", 10), ("clipseg", "decoder_finetune", 10)):
        mine = [c for c in cells if c.model == model and c.strategy == strategy]
        assert sum(len(c.trials) for c in mine) == trials and not any(c.skipped or c.unsupported for c in mine)
    decoder = [t for c in cells if c.strategy == "decoder_finetune" for t in c.trials]
    assert all(t.params == {"lr": 2e-4, "weight_decay": 1e-3} for t in decoder)
    assert all((t.train["max_epochs"], t.train["min_epochs"]) == (40, 10) for t in decoder)
    assert all(c.skipped for c in cells if c.model == "cris" and c.strategy == "decoder_finetune")
    assert sum(len(c.trials) for c in cells if c.model == "cris" and c.strategy == "finetune") == 10


def test_decoder_finetune_trial_ids_do_not_collide_with_finetune(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, strategies=(), baselines=("finetune", "decoder_finetune"))
    trials = expand(spec).trials
    assert [t.strategy for t in trials] == ["finetune", "decoder_finetune"]
    assert len({t.trial_id for t in trials}) == 2


# -- the optimizer ----------------------------------------------------------------------------------------------------
def _trained(kind: str, steps: int = 4) -> tuple[list[torch.Tensor], torch.optim.Optimizer]:
    from vlsm_batch.training.optim import make_adamw

    model = create_model("clipseg-tiny", "decoder_finetune", {})
    groups = model.param_groups(1e-2)
    if kind == "make_adamw":
        optimizer = make_adamw(groups, 2e-4, 1e-2, "cpu")
    else:  # today's call, per-tensor loop or foreach explicitly
        optimizer = torch.optim.AdamW(groups, lr=2e-4, weight_decay=1e-2, foreach=kind == "foreach")
    x, y = inputs(model), target(model)
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.binary_cross_entropy_with_logits(model(**x), y).backward()
        optimizer.step()
    return [p.detach().clone() for p in model.parameters() if p.requires_grad], optimizer


def test_make_adamw_is_multi_tensor_with_the_same_math() -> None:
    from vlsm_batch.training.optim import make_adamw

    single, reference = _trained("per-tensor")
    multi, _ = _trained("foreach")
    assert max((a - b).abs().max().item() for a, b in zip(multi, single, strict=True)) <= 1e-6
    fused_params, made = _trained("make_adamw")
    assert all(g["fused"] is True for g in made.param_groups)  # CPU has the fused kernel (torch >= 2.4)
    assert not any(g["foreach"] or g["fused"] for g in reference.param_groups)
    assert [(g["lr"], g["weight_decay"]) for g in made.param_groups] == [(2e-4, 1e-2), (2e-4, 0.0)]
    # Through the model, Adam's normalised step turns 1-ulp differences of the fused kernel into slightly different
    # gradients (a near-zero component can move by a share of lr either way; how many depends on the CPU's vector
    # width: 5e-5 after 4 steps on an AMD EPYC), so compare it there against the step budget (a different update rule
    # would move weights by about lr per step), and tightly on the same gradients below.
    assert max((a - b).abs().max().item() for a, b in zip(fused_params, single, strict=True)) <= 0.25 * 2e-4 * 4
    gen = torch.Generator().manual_seed(0)
    start = [torch.randn(300, generator=gen) for _ in range(3)]
    grads = [[torch.randn(300, generator=gen) * s for s in (1.0, 1e-4, 1e-8)] for _ in range(5)]
    finals = []
    for build in (
        lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=1e-2),
        lambda ps: make_adamw([{"params": ps}], 1e-2, 1e-2, "cpu"),
    ):
        params = [torch.nn.Parameter(t.clone()) for t in start]
        optimizer = build(params)
        for step in grads:
            for param, grad in zip(params, step, strict=True):
                param.grad = grad.clone()
            optimizer.step()
        finals.append(params)
    assert max((a - b).abs().max().item() for a, b in zip(*finals, strict=True)) <= 1e-6


def test_make_adamw_falls_back_to_foreach() -> None:
    from vlsm_batch.training.optim import implementation, make_adamw

    cpu = [torch.nn.Parameter(torch.zeros(2))]
    assert implementation(cpu, "cpu") == {"fused": True}
    assert implementation(cpu, "cuda") == {"foreach": True}  # not on the device the trainer named
    assert implementation([torch.nn.Parameter(torch.zeros(2, device="meta"))], "meta") == {"foreach": True}
    assert implementation([torch.zeros(2, dtype=torch.int64)], "cpu") == {"foreach": True}
    assert make_adamw([{"params": cpu}], 1e-3, 0.0, "cuda").param_groups[0]["foreach"] is True
    if torch.cuda.is_available():
        assert implementation([torch.nn.Parameter(torch.zeros(2, device="cuda"))], "cuda") == {"fused": True}


def test_training_module_uses_make_adamw() -> None:
    from vlsm_batch.training.data import BatchTransform
    from vlsm_batch.training.module import SegmentationModule

    model = create_model("clipseg-tiny", "decoder_finetune", {})
    module = SegmentationModule(model, BatchTransform(model.image_mean, model.image_std), lr=2e-4, weight_decay=1e-3)
    optimizer = module.configure_optimizers()
    assert isinstance(optimizer, torch.optim.AdamW) and all(g["fused"] for g in optimizer.param_groups)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [1e-3, 0.0]
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == model.trainable_parameter_count()
