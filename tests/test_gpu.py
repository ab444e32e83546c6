"""On a CUDA device the fused VPT forward of a pack gives each member its solo logits and gradients.

Marked ``gpu``: it skips (and says why) on a machine without CUDA; the CPU equality is test_pack_exact's.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from vlsm_batch.models import packed  # noqa: E402
from vlsm_batch.models.factory import create_model  # noqa: E402
from vlsm_batch.training.loss import dice_ce_loss  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_fused_vpt_step_on_cuda_matches_solo() -> None:
    dev = torch.device("cuda")
    torch.backends.cudnn.deterministic = True
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    build = [{"prompt_depth": d, "num_context": 4, "dropout": 0.0} for d in (3, 1, 2)]
    solo = [create_model("clipseg-tiny", "vpt", p, random_init=True) for p in build]
    base = create_model("clipseg-tiny", "vpt", build[0], random_init=True)
    members = [base] + [packed.member_model(base, "vpt", p) for p in build[1:]]
    for s, m in zip(solo, members, strict=True):
        m.load_state_dict(s.state_dict())
    for model in (*solo, base):
        model.to(dev).train()
    assert all(p.is_cuda for m in members for p in m.parameters())
    torch.manual_seed(0)
    pixels = torch.randn(2, 3, 64, 64, device=dev)
    tokens = base.tokenize(["a polyp", "a big round polyp in the colon"])
    ids, mask = tokens["input_ids"].to(dev), tokens["attention_mask"].to(dev)
    target = (torch.rand(2, 1, 64, 64, device=dev) > 0.5).float()

    solo_logits = [m(pixels, ids, mask) for m in solo]
    fused = packed.fused_logits(members, [packed.member_prompts(m) for m in members], pixels, ids, mask)
    for a, b in zip(solo_logits, fused, strict=True):
        scale = max(1.0, float(a.abs().max()))
        assert float((a - b).detach().abs().max()) <= 1e-5 * scale
    for logits in solo_logits:
        dice_ce_loss(logits, target).backward()
    sum(dice_ce_loss(x, target) for x in fused).backward()
    for s, m in zip(solo, members, strict=True):
        grads = {n: p.grad for n, p in m.named_parameters() if p.requires_grad}
        checked = 0
        for name, p in s.named_parameters():
            if p.requires_grad:
                gap = float((p.grad - grads[name]).abs().max())
                assert gap <= 1e-4 * max(1e-3, float(p.grad.abs().max())), (name, gap)
                checked += 1
        assert checked > 0


def test_sam3_coop_pack_in_bf16_on_cuda_matches_solo() -> None:
    """SAM 3's frozen image pass in bf16 autocast, once for the pack: each CoOp member's logits equal its solo
    forward under the same autocast (the shared pass is the same computation, so only reduction order differs)."""
    dev = torch.device("cuda")
    build = [{"prompt_depth": d, "num_context": 4} for d in (3, 1, 2)]
    base = create_model("sam3-tiny", "coop", build[0], random_init=True).to(dev).eval()
    members = [base] + [packed.member_model(base, "coop", p).to(dev).eval() for p in build[1:]]
    torch.manual_seed(0)
    pixels = torch.randn(2, 3, base.image_size, base.image_size, device=dev)
    tokens = base.tokenize(["polyp", "benign tumour"])
    ids, mask = tokens["input_ids"].to(dev), tokens["attention_mask"].to(dev)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        shared, features = packed.shared_image(base, pixels)
        assert shared.fpn[0].dtype == torch.bfloat16
        for m in members:
            alone = m(pixels, ids, mask).float()
            together = packed.logits_from_shared(
                m, shared, packed.member_prompts(m, features), pixels, ids, mask
            ).float()
            assert float((alone - together).abs().max()) <= 1e-2 * max(1.0, float(alone.abs().max()))
