"""CRIS's spatial attention pool (issue 17): C5 against the formula written with plain ``torch.nn.functional`` on the
module's own weights, and checks that no mean/class token takes part (position row 0 unused, one key on a 1x1 map)."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("open_clip")

from torch.nn import functional as F  # noqa: E402

from vlsm_batch.models.cris import CRISNet, build_net  # noqa: E402


def random_net(grid: int | None = None) -> CRISNet:
    """Tiny random-init CRIS in float64 and eval mode, with non-trivial ``connect`` BatchNorm statistics; ``grid``
    replaces the pool's 2x2 position grid by a random one of that side."""
    net = build_net("tiny", 0.0).double().eval()
    pool = net.backbone.visual.attnpool
    gen = torch.Generator().manual_seed(17)
    with torch.no_grad():
        if grid is not None:
            width = pool.positional_embedding.shape[1]
            pool.positional_embedding = torch.nn.Parameter(
                torch.randn(grid * grid + 1, width, generator=gen, dtype=torch.float64) / math.sqrt(width)
            )
        bn = pool.connect[1]
        bn.running_mean.normal_(0.0, 0.5, generator=gen)
        bn.running_var.uniform_(0.5, 2.0, generator=gen)
        bn.weight.normal_(1.0, 0.3, generator=gen)
        bn.bias.normal_(0.0, 0.3, generator=gen)
    return net


def c5_and_layer4(net: CRISNet, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The project's C5 and the layer4 map it was pooled from (caught by a hook, not recomputed)."""
    seen: list[torch.Tensor] = []
    hook = net.backbone.visual.layer4.register_forward_hook(lambda mod, args, out: seen.append(out))
    with torch.no_grad():
        c5 = net.encode_image(pixels)[2]
    hook.remove()
    return c5, seen[0]


@torch.no_grad()
def reference_pool(net: CRISNet, x: torch.Tensor) -> torch.Tensor:
    """CRIS's pool for ONE image ``x`` (C, H, W), from the formula: tokens + own position rows -> q, k, v ->
    per-head softmax(q k^T / sqrt(d)) v -> c_proj, + BN(conv1x1(x)), ReLU."""
    pool = net.backbone.visual.attnpool
    c, h, w = x.shape
    grid = pool.positional_embedding[1:]  # row 0 (the class position) is not used by CRIS
    side = math.isqrt(grid.shape[0])
    if (side, side) != (h, w):
        image = grid.t().reshape(1, c, side, side)
        grid = F.interpolate(image, size=(h, w), mode="bicubic", align_corners=False).reshape(c, h * w).t()
    tokens = x.reshape(c, h * w).t() + grid  # (HW, C)
    heads = pool.num_heads
    dim = c // heads

    def split(proj: torch.nn.Linear) -> torch.Tensor:  # (heads, HW, dim)
        return F.linear(tokens, proj.weight, proj.bias).reshape(h * w, heads, dim).transpose(0, 1)

    q, k, v = split(pool.q_proj), split(pool.k_proj), split(pool.v_proj)
    attn = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(dim), dim=-1)
    mixed = (attn @ v).transpose(0, 1).reshape(h * w, c)
    out = F.linear(mixed, pool.c_proj.weight, pool.c_proj.bias).t().reshape(-1, h, w)
    conv, bn = pool.connect
    residual = F.batch_norm(
        F.conv2d(x[None], conv.weight), bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps
    )[0]
    return F.relu(out + residual)


@pytest.mark.parametrize(
    ("size", "grid"),
    [(64, None), (128, 4), (96, None)],
    ids=["2x2-native", "4x4-native", "2x2-resized-to-3x3"],
)
def test_c5_equals_the_formula_per_image(size: int, grid: int | None) -> None:
    net = random_net(grid)
    pixels = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    c5, layer4 = c5_and_layer4(net, pixels)
    assert c5.shape == (3, 64, size // 32, size // 32)
    expected = torch.stack([reference_pool(net, image) for image in layer4])  # one image at a time
    assert torch.allclose(c5, expected, rtol=0.0, atol=1e-11), (c5 - expected).abs().max()
    assert c5.abs().max() > 1e-3  # not a degenerate all-zero map
    alone, _ = c5_and_layer4(net, pixels[1:2])
    assert torch.allclose(alone, c5[1:2], rtol=0.0, atol=1e-11)  # batch mates do not matter


def test_position_row_zero_takes_no_part() -> None:
    """The old pool added row 0 to a prepended mean token that every position attended to."""
    net = random_net()
    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    before, _ = c5_and_layer4(net, pixels)
    with torch.no_grad():
        net.backbone.visual.attnpool.positional_embedding[0] += 10.0
    after, _ = c5_and_layer4(net, pixels)
    assert torch.equal(before, after)


def test_a_single_position_attends_only_to_itself() -> None:
    """On a 1x1 map there is one key, so softmax is 1 and q/k do not matter: C5 = relu(c_proj(v_proj(x + p)) + res).
    With an extra mean token there would be two keys and q/k would change the output."""
    net = random_net()
    pool = net.backbone.visual.attnpool
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    c5, layer4 = c5_and_layer4(net, pixels)
    assert layer4.shape[-2:] == (1, 1)
    expected = torch.stack([reference_pool(net, image) for image in layer4])
    assert torch.allclose(c5, expected, rtol=0.0, atol=1e-11)
    with torch.no_grad():
        pool.q_proj.weight.mul_(-3.0)
        pool.k_proj.weight.mul_(5.0)
        pool.k_proj.bias.add_(1.0)
    changed, _ = c5_and_layer4(net, pixels)
    assert torch.allclose(changed, c5, rtol=0.0, atol=1e-12)
