"""A trial trained in a pack ends as it ends alone: same history, best epoch, metrics and weights (real tiny models,
generated data, the real Lightning solo path on one side and ``training.pack`` on the other)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pack_helpers import twin_studies

from vlsm_batch.models import packed
from vlsm_batch.models.factory import create_model
from vlsm_batch.training import pack as pack_mod
from vlsm_batch.training.entry import read_history, train_trial
from vlsm_batch.training.loss import dice_ce_loss
from vlsm_batch.training.pack import CollectEnds, MemberEnd, train_pack


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pack-data")


def _weights(trial: Path, name: str = "last.ckpt") -> dict[str, torch.Tensor]:
    return torch.load(trial / "checkpoints" / name, weights_only=True)["state_dict"]


def _max_weight_gap(a: Path, b: Path) -> float:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    return max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa)


def _compare(solo: list[Path], packed_dirs: list[Path], ends: dict[str, MemberEnd], tol: float, weights: float) -> None:
    for s, p in zip(solo, packed_dirs, strict=True):
        end = ends[p.name]
        assert end.kind == "done", end.message
        ms, mp = json.loads((s / "metrics.json").read_text()), end.metrics
        assert mp == json.loads((p / "metrics.json").read_text())
        assert mp["best_epoch"] == ms["best_epoch"] and mp["epochs"] == ms["epochs"]
        for key in ("val/dice", "val/iou", "val/loss", "test/dice", "test/iou"):
            assert abs(mp[key] - ms[key]) <= tol, (p.name, key, ms[key], mp[key])
        hs, hp = read_history(s / "history.csv"), read_history(p / "history.csv")
        assert [r["epoch"] for r in hs] == [r["epoch"] for r in hp]
        for rs, rp in zip(hs, hp, strict=True):
            for key in ("train/loss", "val/loss", "val/dice", "lr"):
                assert abs(float(rs[key]) - float(rp[key])) <= tol, (p.name, rs["epoch"], key)
        assert _max_weight_gap(s, p) <= weights


def _solo(dirs: list[Path]) -> None:
    for d in dirs:
        train_trial(d)


@pytest.mark.parametrize(
    ("model", "strategy"),
    [
        ("clipseg-tiny", "coop"),
        ("clipseg-tiny", "cocoop"),
        ("cris-tiny", "coop"),
        ("sam3-tiny", "coop"),
        ("sam3-tiny", "cocoop"),
        ("sam3-tiny", "detr_vpt"),
    ],
)
def test_text_side_pack_is_exact(tmp_path: Path, data_root: Path, model: str, strategy: str) -> None:
    """CoOp/CoCoOp share one image forward per batch: the pack reproduces each solo trial to the last bit of
    float arithmetic (prompt depths and learning rates differ between members)."""
    solo, packed_dirs = twin_studies(tmp_path, data_root, model=model, strategy=strategy, trials=3, epochs=2)
    _solo(solo)
    ends = train_pack(packed_dirs)
    _compare(solo, packed_dirs, ends, tol=1e-6, weights=1e-6)


@pytest.mark.parametrize(("fuse", "tol", "weights"), [("1", 1e-4, 1e-3), ("0", 1e-6, 1e-6)], ids=["fused", "by-member"])
def test_visual_pack_matches_solo(
    tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch, fuse: str, tol: float, weights: float
) -> None:
    """VPT in one fused forward of all members (the GPU path) equals solo within float round-off after a short
    fit; member by member (the CPU path, ``pack.fuse_visual``) it equals solo to the last bit."""
    monkeypatch.setenv(pack_mod.FUSE_ENV, fuse)
    assert pack_mod.fuse_visual(torch.device("cpu")) is (fuse == "1")
    solo, packed_dirs = twin_studies(tmp_path, data_root, strategy="vpt", trials=3, epochs=2, lr=(1e-3, 3e-3))
    _solo(solo)
    ends = train_pack(packed_dirs)
    _compare(solo, packed_dirs, ends, tol=tol, weights=weights)


def test_visual_members_fuse_on_gpu_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(pack_mod.FUSE_ENV, raising=False)
    assert pack_mod.fuse_visual(torch.device("cuda")) and not pack_mod.fuse_visual(torch.device("cpu"))


def _visual_members(strategy: str) -> tuple[list, list]:
    """Three solo models and three pack members (depths 3, 1, 2) with equal weights."""
    build = [{"prompt_depth": d, "num_context": 4, "dropout": 0.0} for d in (3, 1, 2)]
    solo_models = [create_model("clipseg-tiny", strategy, p, random_init=True) for p in build]
    base = create_model("clipseg-tiny", strategy, build[0], random_init=True)
    members = [base] + [packed.member_model(base, strategy, p) for p in build[1:]]
    for s, m in zip(solo_models, members, strict=True):
        m.load_state_dict(s.state_dict())
        s.train(), m.train()
    return solo_models, members


def _inputs(model: object) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    pixels = torch.randn(2, 3, 64, 64)
    tokens = model.tokenize(["a polyp", "a big round polyp in the colon"])  # type: ignore[attr-defined]
    return pixels, tokens["input_ids"], tokens["attention_mask"], (torch.rand(2, 1, 64, 64) > 0.5).float()


@pytest.mark.parametrize("strategy", ["vpt", "maple", "shared_attn", "shared_separate"])
def test_fused_forward_and_gradients_match_solo(strategy: str) -> None:
    """The fused forward of members with different depths gives each one its solo logits, and the backward of the
    summed loss gives each member its solo gradients, within float round-off. Not bit for bit on every CPU: a
    GEMM with K times the rows may be blocked differently by the BLAS (bit-equal on an earlier CI machine, 3e-6
    on logits of scale 10 on an AMD EPYC one)."""
    solo_models, members = _visual_members(strategy)
    pixels, ids, mask, target = _inputs(members[0])
    solo_logits = [m(pixels, ids, mask) for m in solo_models]
    fused = packed.fused_logits(members, [packed.member_prompts(m) for m in members], pixels, ids, mask)
    for a, b in zip(solo_logits, fused, strict=True):
        scale = max(1.0, float(a.detach().abs().max()))
        assert float((a - b).detach().abs().max()) <= 1e-6 * scale
    for logits in solo_logits:
        dice_ce_loss(logits, target).backward()
    sum(dice_ce_loss(x, target) for x in fused).backward()
    for s, m in zip(solo_models, members, strict=True):
        grads = {n: p.grad for n, p in m.named_parameters() if p.requires_grad}
        for name, p in s.named_parameters():
            if p.requires_grad:
                gap = float((p.grad - grads[name]).abs().max())
                assert gap <= 2e-4 * max(1e-3, float(p.grad.abs().max())), (name, gap)  # fp32 sums, reordered


def test_fused_two_steps_match_solo() -> None:
    """After two AdamW steps on the summed loss each VPT member's logits are within 1e-5 (relative to the logits'
    scale) of two solo steps.

    Not bit-exact: the fused backward rounds some rows differently (gradients differ by ~1e-9), and AdamW's first
    steps move each weight by about lr times g / (|g| + eps) whatever the gradient's size, so a gradient component
    near 0 can move by a sizeable share of lr: the gap grows with lr and with the number of such weights (MaPLe's
    couplings). A real fit stays within 1e-4 on its metrics (test_visual_pack_matches_solo)."""
    solo_models, members = _visual_members("vpt")
    pixels, ids, mask, target = _inputs(members[0])
    opt_solo = [torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=2e-3) for m in solo_models]
    opt_pack = [torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=2e-3) for m in members]
    for _ in range(2):
        for model, opt in zip(solo_models, opt_solo, strict=True):
            dice_ce_loss(model(pixels, ids, mask), target).backward()
            opt.step()
            opt.zero_grad()
        prompts = [packed.member_prompts(m) for m in members]
        sum(dice_ce_loss(x, target) for x in packed.fused_logits(members, prompts, pixels, ids, mask)).backward()
        for opt in opt_pack:
            opt.step()
            opt.zero_grad()
    with torch.no_grad():
        for s, m in zip(solo_models, members, strict=True):
            s.eval(), m.eval()
            alone, fused = s(pixels, ids, mask), m(pixels, ids, mask)
            scale = max(1.0, float(alone.abs().max()))  # fp32 round-off is relative: logits here reach ~8
            assert float((alone - fused).abs().max()) <= 1e-5 * scale


def test_member_stops_early_alone(tmp_path: Path, data_root: Path) -> None:
    """Early stopping per member (patience 1, min_epochs 1): members stop at their own epochs, as they do alone,
    and the pack goes on without them."""
    solo, packed_dirs = twin_studies(tmp_path, data_root, trials=4, epochs=5, patience=1, lr=(3e-2, 0.5))
    _solo(solo)
    epochs = [json.loads((d / "metrics.json").read_text())["epochs"] for d in solo]
    assert len(set(epochs)) > 1, f"the test needs members that stop at different epochs: {epochs}"
    ends = train_pack(packed_dirs)
    _compare(solo, packed_dirs, ends, tol=1e-6, weights=1e-6)


class _Events(CollectEnds):
    """Ends collected; ``stop`` maps a trial id to (epochs after which it is cancelled) for stop_reason."""

    def __init__(self, pack_dirs: list[Path], stop: dict[str, int] | None = None, interrupt_after: int | None = None):
        super().__init__()
        self.stop, self.interrupt_after = stop or {}, interrupt_after
        self.dirs = pack_dirs

    def _epochs(self, root: Path) -> int:
        return len(read_history(root / "history.csv"))

    def stop_reason(self, trial_root: Path) -> str | None:
        if self.interrupt_after is not None and all(self._epochs(d) >= self.interrupt_after for d in self.dirs):
            raise KeyboardInterrupt
        limit = self.stop.get(Path(trial_root).name)
        if limit is not None and self._epochs(trial_root) >= limit:
            return "cancelled with vlsm-batch cancel"
        return None


def test_diverging_member_fails_alone_and_cancel_stops_one(tmp_path: Path, data_root: Path) -> None:
    """One member's loss goes to NaN (absurd lr): it fails alone; one member is cancelled after its first epoch:
    it ends cancelled with its checkpoint; the others finish as they would alone."""
    solo, packed_dirs = twin_studies(tmp_path, data_root, trials=4, epochs=3)
    bad, cancelled = packed_dirs[0], packed_dirs[1]
    config = json.loads((bad / "config.json").read_text())
    config["params"]["lr"] = 1e30
    (bad / "config.json").write_text(json.dumps(config))
    _solo(solo[2:])
    events = _Events(packed_dirs, stop={cancelled.name: 1})
    train_pack(packed_dirs, events)
    assert events.ends[bad.name].kind == "failed"
    assert "train/loss is nan" in events.ends[bad.name].message or "inf" in events.ends[bad.name].message
    assert events.ends[cancelled.name].kind == "cancelled"
    assert (cancelled / "checkpoints" / "last.ckpt").is_file() and len(read_history(cancelled / "history.csv")) == 1
    _compare(solo[2:], packed_dirs[2:], events.ends, tol=1e-6, weights=1e-6)


def test_interrupted_pack_resumes_every_member(tmp_path: Path, data_root: Path) -> None:
    """A pack stopped (Ctrl-C) after epoch 1 raises; the next attempt resumes each member from its own last
    checkpoint and ends exactly where an uninterrupted run ends."""
    solo, packed_dirs = twin_studies(tmp_path, data_root, trials=3, epochs=3)
    _solo(solo)
    with pytest.raises(KeyboardInterrupt):
        train_pack(packed_dirs, _Events(packed_dirs, interrupt_after=1))
    assert all(not (d / "metrics.json").exists() for d in packed_dirs)
    ends = train_pack(packed_dirs)
    _compare(solo, packed_dirs, ends, tol=1e-6, weights=1e-6)
    # a pack checkpoint given to the solo entry point continues in the pack loop, alone
    last = json.loads((packed_dirs[0] / "metrics.json").read_text())
    assert train_trial(packed_dirs[0])["val/dice"] == pytest.approx(last["val/dice"])


def test_out_of_memory_splits_the_pack(tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Out of memory with more than one member in a step: the pack rolls back to the epoch start, splits in two
    and goes on; no member fails for it and every result is the solo one."""
    solo, packed_dirs = twin_studies(tmp_path, data_root, trials=4, epochs=2)
    _solo(solo)
    real_step = pack_mod.Pack._step
    sizes: list[int] = []

    def small_device(self: pack_mod.Pack, members: list, batch: dict) -> None:
        sizes.append(len(members))
        if len(members) > 1 and min(m.global_step for m in members) >= 3:  # mid-epoch, after some steps
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        real_step(self, members, batch)

    monkeypatch.setattr(pack_mod.Pack, "_step", small_device)
    ends = train_pack(packed_dirs)
    assert max(sizes) == 4 and 1 in sizes
    _compare(solo, packed_dirs, ends, tol=1e-6, weights=1e-6)


def test_too_little_memory_trains_in_groups(tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The start-up probe measures what one member adds; with room for two, a pack of four trains two at a time."""
    _, packed_dirs = twin_studies(tmp_path, data_root, trials=4, epochs=1)
    seen: list[int] = []
    real_probe = pack_mod.probe_member_bytes

    def probe(pack: pack_mod.Pack, member: pack_mod.Member) -> int:
        measured = real_probe(pack, member)
        seen.append(measured)
        return measured

    monkeypatch.setattr(pack_mod, "probe_member_bytes", probe)
    monkeypatch.setattr(pack_mod, "free_memory_bytes", lambda device: int(2.5 * seen[0] / (1 - pack_mod.MEMORY_MARGIN)))
    groups: list[int] = []
    real_group = pack_mod.Pack._train_group
    monkeypatch.setattr(pack_mod.Pack, "_train_group", lambda self, g: (groups.append(len(g)), real_group(self, g)))
    ends = train_pack(packed_dirs)
    assert seen[0] > 0 and groups == [2, 2]
    assert all(e.kind == "done" for e in ends.values())


def test_the_run_sizes_packs_with_the_rule_plan_predicts_with() -> None:
    from vlsm_batch.jobs.estimate import AUTO_MARGIN, auto_pack_size

    assert pack_mod.MEMORY_MARGIN == AUTO_MARGIN
    assert auto_pack_size(10, 0, 100, cap=16) == 8  # floor(0.85 * 100 / 10)
