"""Memory and device-time estimates from architecture numbers: ``plan``'s pack table and ``pack: auto``'s N.

Plain arithmetic, no torch: ``plan`` runs on a login node, and the training side calls :func:`auto_pack_size` with
the device's real free memory. Every number comes from the configs the builders use (``models.configs``, read into
:data:`ARCHITECTURES`). ``tests/test_pack_plan.py`` builds the random-init models and checks the formulas
against them: parameter counts (exact), forward and backward FLOPs (torch's FLOP counter, within 2 % and 6 %), and
the bytes autograd keeps for backward (within 5 % on the full-size models, in fp32 and under bf16 autocast).

Memory of a pack (:func:`pack_memory`) = shared + the sum over members, where

* **shared** (once per pack): the frozen weights (fp32: Lightning's mixed precision keeps fp32 weights), the
  frozen image forward of the strategies whose prompts do not enter the image tower (no gradient: one layer's
  working set at a time plus the extract-layer outputs the decoder reads, for the whole batch), the dataset cache
  on the device (uint8 images and bit-packed masks of every split) and :data:`RUNTIME_BYTES` (CUDA context,
  allocator slack, kernels' workspaces);
* **per member**: its trainable parameters x 16 bytes (fp32 weight, gradient, two AdamW moments), the activations
  it keeps for backward (batch x elements per image x bytes per element: 4 for ``precision: "32"``, 2.5 under
  mixed precision), with mixed precision the 16-bit weight copies its backward reads, and one backward working
  set (the largest layer's activations again, for their gradients). A text-prompt member keeps its text tower's
  and decoder's activations; a visual-prompt member also keeps the image tower's (in a fused forward each member
  needs its own for its backward); finetune keeps everything.

Per transformer layer of width w, MLP width m and T tokens, with fused attention (no T x T scores kept), autograd
keeps T (6w + a m) elements when the gradient passes through frozen weights and T (8w + b m) when the weights train
(the layer's inputs, LayerNorm inputs, q/k/v/output; a, b = 2, 3 for QuickGELU, 1, 1 for ReLU). A convolution
keeps its input, a BatchNorm its input, a ReLU its output.

Device time (:func:`trial_flops`, :func:`run_flops`, :meth:`Device.seconds`): FLOPs per image = forward of every
stage that runs + backward of the stages the gradient passes through (1x their forward through frozen weights, 2x
where weights train; activation x activation products such as attention scores 2x), times (train images x
max_epochs + val images x max_epochs + val + test once at the end). The frozen image forward of coop, cocoop,
decoder_finetune, zero_shot (and SAM 3's detr_vpt) is counted once per pack, not per member. Divided by a stated
throughput (peak x utilisation), plus a start-up time per process. Adaptive (tpe) trials are estimated with the
catalog defaults of the values not asked yet; max_epochs is an upper bound (early stopping and pruning end trials
sooner).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from ..models import configs
from ..strategies import get_strategy
from .packing import AUTO_MAX

GiB = 2**30
MiB = 2**20
AUTO_MARGIN = 0.15  # pack: auto leaves this fraction of the free memory unused (fragmentation, estimate error)
RUNTIME_BYTES = 512 * MiB  # CUDA context, caching allocator slack, cuBLAS/cuDNN workspaces (per process)
TEXT_TOKENS = 20  # tokens of a dataset prompt with BOS/EOS (padded to the batch's longest): an assumption
OPTIMIZER_BYTES = 16  # per trainable parameter: fp32 weight + gradient + AdamW exp_avg + exp_avg_sq
LOSS_MAPS = 3  # full-resolution (S x S) maps the loss and the logits keep per image
HEAD_MAPS = 2  # the learnable upsampler keeps its upsampled map and its replicate-padded copy (r x S x S each)
HEAD_BLEND_MAPS = 4  # ... and its 1-channel output and blend with the frozen logits (S x S each)

# (weight bytes, bytes per activation element) per precision of the spec. Under autocast the matmul outputs are
# 16-bit but LayerNorm runs in fp32 and the residual stream stays fp32: autograd's saved tensors measured 2.4-2.6
# bytes per element on CLIPSeg (CPU bf16 autocast), so 2.5. Weights stay fp32 (Lightning's mixed precision).
PRECISION_BYTES: dict[str, tuple[int, float]] = {"32": (4, 4.0), "bf16-mixed": (4, 2.5), "16-mixed": (4, 2.5)}
MIXED = frozenset({"bf16-mixed", "16-mixed"})
CAST_BYTES = 2  # autocast's 16-bit copy of each weight a matmul on the gradient path keeps for backward
# A100 SXM dense peaks (TFLOP/s): bf16/fp16 tensor cores, and fp32 (PyTorch's default matmuls, no TF32)
DEFAULT_TFLOPS = {"32": 19.5, "bf16-mixed": 312.0, "16-mixed": 312.0}
DEFAULT_UTILIZATION = 0.35
DEFAULT_STARTUP_S = 30.0  # per process: imports, model build and weight load, data load (15-37 s measured)


# ---------------------------------------------------------------------------------------------- building blocks
@dataclass(frozen=True)
class Tower:
    """A CLIP-style transformer: pre-LayerNorm attention + MLP per layer, biases everywhere."""

    width: int
    layers: int
    mlp: int
    act: str = "quick_gelu"  # "quick_gelu" | "gelu" | "relu"

    @property
    def layer_params(self) -> int:
        w, m = self.width, self.mlp
        return 4 * w * w + 2 * w * m + 9 * w + m  # q, k, v, o + fc1, fc2 + two LayerNorms

    def linear_flops(self, tokens: float, layers: int | None = None) -> float:
        w, m = self.width, self.mlp
        return (self.layers if layers is None else layers) * 2 * tokens * (4 * w * w + 2 * w * m)

    def attn_flops(self, tokens: float, layers: int | None = None) -> float:
        return (self.layers if layers is None else layers) * 4 * tokens * tokens * self.width  # QK^T and AV

    def saved(self, tokens: float, trained: bool, layers: int | None = None) -> float:
        """Elements autograd keeps for backward (fused attention)."""
        frozen_m, trained_m = {"relu": (1, 1), "gelu": (1, 2)}.get(self.act, (2, 3))  # QuickGELU keeps 2
        per_token = 8 * self.width + trained_m * self.mlp if trained else 6 * self.width + frozen_m * self.mlp
        return (self.layers if layers is None else layers) * tokens * per_token

    def working(self, tokens: float) -> float:
        """Elements live at once in a no-grad pass of one layer (residual, q/k/v, MLP hidden and activation)."""
        return tokens * (2 * self.width + 2 * self.mlp)


@dataclass(frozen=True)
class Conv:
    """A 2-D convolution (optionally + BatchNorm [+ ReLU]) producing ``cout`` x ``hw`` elements."""

    cin: int
    cout: int
    k: int
    hw: int  # output positions
    hw_in: int  # input positions
    bn: bool = True
    bias: bool = False
    relu: bool = True

    @property
    def params(self) -> int:
        norm = 2 * self.cout if self.bn else 0
        return self.cin * self.cout * self.k * self.k + norm + (self.cout if self.bias else 0)

    @property
    def flops(self) -> float:
        return 2.0 * self.cin * self.cout * self.k * self.k * self.hw

    def saved(self, input_is_new: bool = True) -> float:
        """Input (unless it is the previous ReLU's output, already kept), BatchNorm input, ReLU output."""
        out = self.cout * self.hw
        return (self.cin * self.hw_in if input_is_new else 0) + out * (int(self.bn) + int(self.relu))


def linear(cin: int, cout: int, bias: bool = True) -> int:
    return cin * cout + (cout if bias else 0)


def projection_params(cin: int, cout: int, hidden: int | None, lora: bool, final_bias: bool, norm: bool) -> int:
    """``strategies.projections.make_projection``'s parameters."""
    if hidden is None:
        return linear(cin, cout)
    last_bias = final_bias and not norm
    if lora:
        rank = min(hidden, cout)
        total = cin * rank + (linear(rank, cout, last_bias) if hidden <= cout else 0)
    else:
        total = linear(cin, hidden) + linear(hidden, cout, last_bias)
    return total + ((cout * (2 if final_bias else 1)) if norm else 0)


@dataclass(frozen=True)
class Stage:
    """One stage of a forward pass, per image: what it weighs, costs and keeps."""

    params: int
    flops: float  # forward
    attn: float = 0.0  # the part of ``flops`` that multiplies two activations (2x in backward even when frozen)
    saved: float = 0.0  # elements kept for backward when the gradient passes through its frozen weights
    saved_trained: float = 0.0  # ... when its weights train
    working: float = 0.0  # elements live at once in a no-grad pass (largest layer)
    kept: float = 0.0  # elements of its outputs the next stage reads (kept for the whole step)
    no_input_grad: float = 0.0  # forward FLOPs whose inputs never need a gradient (frozen inputs)
    matmul_params: int = 0  # weights of the matmuls and convolutions it runs: autocast keeps a 16-bit copy each

    def cast_params(self) -> int:
        return self.matmul_params or self.params

    def backward(self, trained: bool) -> float:
        if trained:
            return 2 * self.flops
        return self.flops - self.no_input_grad + self.attn


# ------------------------------------------------------------------------------------------------ architectures
@dataclass(frozen=True)
class CLIPSegArch:
    """``models.clipseg.clipseg_config`` / ``clipseg_tiny_config`` as numbers."""

    image: int
    text: Tower
    vision: Tower
    patch: int
    config_image: int  # the position table's resolution (interpolated to ``image``)
    vocab: int
    positions: int
    projection: int
    reduce: int
    extract: tuple[int, ...]
    decoder_mlp: int

    @property
    def decoder(self) -> Tower:
        return Tower(self.reduce, len(self.extract), self.decoder_mlp, "relu")


@dataclass(frozen=True)
class CRISArch:
    """``models.cris.build_net`` as numbers: open_clip ModifiedResNet + text transformer, FPN neck, decoder, proj."""

    image: int
    rn_width: int
    rn_layers: tuple[int, int, int, int]
    embed: int  # attention-pool output and text projection width
    text: Tower
    vocab: int
    positions: int
    fpn_in: tuple[int, int, int]
    fpn_out: tuple[int, int, int]
    state: int
    dec_ffn: int
    dec_layers: int = 3


@dataclass(frozen=True)
class Sam3Arch:
    """``models.sam3.sam3_config`` as numbers: PE ViT + FPN neck, CLIP text tower, DETR encoder, mask decoder
    (the DETR decoder and the other heads are weights only: the semantic-mask path never runs them)."""

    image: int
    vit: Tower
    patch: int
    window: int
    global_layers: int  # how many ViT layers attend globally (the rest within windows)
    position_image: int
    text: Tower
    vocab: int
    positions: int
    clip_projection: int  # CLIP's pooled text projection (in the weights, not run)
    fusion: Tower  # DETR encoder: width, layers, FFN
    heads: int
    decoder_layers: int
    queries: int
    geometry_layers: int


def _tower(t: configs.Tower, act: str = "quick_gelu") -> Tower:
    return Tower(t.width, t.layers, t.mlp, act)


def _arch(a: configs.CLIPSegArch | configs.CRISArch | configs.Sam3Arch) -> Arch:
    """The cost model's view of the builders' config (``models.configs``: the one place the numbers live)."""
    if isinstance(a, configs.Sam3Arch):
        return Sam3Arch(
            image=a.image_size, vit=_tower(a.vit, "gelu"), patch=a.patch_size, window=a.window_size,
            global_layers=len(a.global_layers), position_image=a.position_image_size, text=_tower(a.text, "gelu"),
            vocab=a.vocab_size, positions=a.context_length, clip_projection=a.text_projection_dim,
            fusion=_tower(a.fusion, "relu"), heads=a.fusion.heads, decoder_layers=a.decoder_layers, queries=a.queries,
            geometry_layers=a.geometry_layers,
        )  # fmt: skip
    if isinstance(a, configs.CLIPSegArch):
        return CLIPSegArch(
            image=a.image_size, text=_tower(a.text), vision=_tower(a.vision), patch=a.patch_size,
            config_image=a.position_image_size, vocab=a.vocab_size, positions=a.context_length,
            projection=a.projection_dim, reduce=a.reduce_dim, extract=a.extract_layers, decoder_mlp=a.decoder_mlp,
        )  # fmt: skip
    return CRISArch(
        image=a.image_size, rn_width=a.rn_width, rn_layers=a.rn_layers, embed=a.embed_dim, text=_tower(a.text),
        vocab=a.vocab_size, positions=a.context_length, fpn_in=a.fpn_in, fpn_out=a.fpn_out, state=a.state_dim,
        dec_ffn=a.decoder_ffn, dec_layers=a.decoder_layers,
    )  # fmt: skip


Arch = CLIPSegArch | CRISArch | Sam3Arch
ARCHITECTURES: dict[str, Arch] = {name: _arch(a) for name, a in configs.ARCHITECTURES.items()}


@dataclass(frozen=True)
class Stages:
    """A model's stages for one trial configuration (per image)."""

    image: Stage
    text: Stage
    decoder: Stage
    head: Stage  # learnable upsampler (zero when off)
    fixed_params: int  # weights outside the stages (CLIP's logit scale)
    loss_elements: float  # full-resolution maps the logits and the loss keep per image


def _text_stage(tower: Tower, vocab: int, positions: int, projection: int, tokens: int) -> Stage:
    params = vocab * tower.width + positions * tower.width + tower.layers * tower.layer_params + 2 * tower.width
    params += tower.width * projection  # text projection, no bias
    flops = tower.linear_flops(tokens) + tower.attn_flops(tokens) + 2 * tower.width * projection
    return Stage(
        params=params,
        flops=flops,
        attn=tower.attn_flops(tokens),
        saved=tower.saved(tokens, False),
        saved_trained=tower.saved(tokens, True),
        working=tower.working(tokens),
        matmul_params=tower.layers * tower.layer_params + tower.width * projection,
    )


def clipseg_stages(arch: CLIPSegArch, n_text: int, n_vision: int, pooled: bool, upsampler: bool) -> Stages:
    """CLIPSeg per image: the vision tower runs to the deepest extract layer (all layers for CoCoOp's pooled pass)."""
    v, s = arch.vision, arch.image
    grid = (s // arch.patch) ** 2
    tokens_v = grid + 1 + n_vision
    run = v.layers if pooled else max(arch.extract) + 1
    positions = (arch.config_image // arch.patch) ** 2 + 1
    patch_flops = 2.0 * 3 * arch.patch**2 * v.width * grid
    embeddings = 3 * arch.patch**2 * v.width + v.width + positions * v.width  # patch conv, class, positions
    image = Stage(
        params=embeddings + v.layers * v.layer_params + 4 * v.width + v.width * arch.projection,
        flops=patch_flops + v.linear_flops(tokens_v, run) + v.attn_flops(tokens_v, run),
        attn=v.attn_flops(tokens_v, run),
        saved=v.saved(tokens_v, False, run) + 2 * tokens_v * v.width,  # + embeddings and pre-LayerNorm input
        saved_trained=v.saved(tokens_v, True, run) + 3 * s * s + 2 * tokens_v * v.width,
        working=v.working(tokens_v) + tokens_v * v.width,
        kept=len(arch.extract) * tokens_v * v.width,
        no_input_grad=patch_flops,
        matmul_params=3 * arch.patch**2 * v.width + run * v.layer_params,
    )
    text = _text_stage(arch.text, arch.vocab, arch.positions, arch.projection, TEXT_TOKENS + n_text)
    d, r, e = arch.decoder, arch.reduce, len(arch.extract)
    reduces = e * 2.0 * tokens_v * v.width * r
    transposed = 2.0 * r * arch.patch**2 * grid
    film_and_reduces = 2 * linear(arch.projection, r) + e * linear(v.width, r)
    decoder = Stage(
        params=film_and_reduces + d.layers * d.layer_params + r * arch.patch**2 + 1,
        flops=reduces + d.linear_flops(tokens_v) + d.attn_flops(tokens_v) + transposed,
        attn=d.attn_flops(tokens_v),
        saved=d.saved(tokens_v, False) + 2 * tokens_v * r + r * grid,  # + FiLM product, transposed-conv input
        saved_trained=d.saved(tokens_v, True) + (e + 2) * tokens_v * r + r * grid,
        working=d.working(tokens_v) + tokens_v * r,
        no_input_grad=reduces,  # the image activations need no gradient unless visual prompts train
    )
    head = Stage(0, 0.0)
    if upsampler:
        head = Stage(
            params=25 * r + 2,
            flops=2.0 * 25 * r * s * s,
            saved=(HEAD_MAPS * r + HEAD_BLEND_MAPS) * s * s,
            saved_trained=(HEAD_MAPS * r + HEAD_BLEND_MAPS) * s * s,
            working=2 * r * s * s,
        )
    return Stages(image, text, decoder, head, fixed_params=1, loss_elements=LOSS_MAPS * s * s)


def resnet_convs(arch: CRISArch) -> list[tuple[Conv, bool]]:
    """open_clip's ModifiedResNet as (conv, its input is a new tensor) in forward order: 3-conv stem + avg pool,
    bottlenecks with the stride as an average pool after conv2 and an avg-pool + 1x1 conv downsample."""
    s, w = arch.image, arch.rn_width
    convs: list[tuple[Conv, bool]] = []
    h = (s // 2) ** 2
    convs += [(Conv(3, w // 2, 3, h, s * s), True), (Conv(w // 2, w // 2, 3, h, h), False)]
    convs.append((Conv(w // 2, w, 3, h, h), False))
    hw = (s // 4) ** 2
    inplanes = w
    for stage, blocks in enumerate(arch.rn_layers):
        planes = w * 2**stage
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            out_hw = hw // (stride * stride)
            convs.append((Conv(inplanes, planes, 1, hw, hw), stage == block == 0))  # else: the last ReLU's
            convs.append((Conv(planes, planes, 3, hw, hw), False))
            convs.append((Conv(planes, 4 * planes, 1, out_hw, out_hw), stride > 1))  # after the stride's pool
            if stride > 1 or inplanes != 4 * planes:
                convs.append((Conv(inplanes, 4 * planes, 1, out_hw, out_hw, relu=False), True))
            inplanes, hw = 4 * planes, out_hw
    return convs


def cris_stages(arch: CRISArch, n_text: int, upsampler: bool) -> Stages:
    """CRIS per image: RN50 (C3, C4, C5 with the spatial attention pool), text tower, FPN neck, decoder, projector."""
    s = arch.image
    convs = resnet_convs(arch)
    c = 32 * arch.rn_width  # layer4 channels = the attention pool's width
    hw5, hw4, hw3 = (s // 32) ** 2, (s // 16) ** 2, (s // 8) ** 2
    pool_attn = 4.0 * hw5 * hw5 * c  # the spatial attention pool's QK^T and AV over the hw5 tokens
    pool_params = (hw5 + 1) * c + 3 * linear(c, c) + linear(c, arch.embed) + c * arch.state + 2 * arch.state
    pool_flops = 2.0 * hw5 * (3 * c * c + c * arch.embed + c * arch.state) + pool_attn
    largest = max(cv.cout * cv.hw + cv.cin * cv.hw_in for cv, _ in convs)
    image = Stage(
        params=sum(cv.params for cv, _ in convs) + pool_params,
        flops=sum(cv.flops for cv, _ in convs) + pool_flops,
        attn=pool_attn,
        saved_trained=sum(cv.saved(new) for cv, new in convs) + hw5 * (6 * c + 3 * arch.state),
        working=largest,
        kept=arch.fpn_in[0] * hw3 + arch.fpn_in[1] * hw4 + arch.fpn_in[2] * hw5,
        no_input_grad=sum(cv.flops for cv, _ in convs[:1]),
    )
    text = _text_stage(arch.text, arch.vocab, arch.positions, arch.embed, TEXT_TOKENS + n_text)
    c3, c4, c5 = arch.fpn_in
    o3, o4, o5 = arch.fpn_out
    d, f, heads_in = o4, arch.dec_ffn, o4 // 2
    neck = [
        Conv(c5, o5, 1, hw5, hw5), Conv(c4, o4, 3, hw4, hw4), Conv(c3, o3, 3, hw3, hw3),  # image-side projections
        Conv(o5 + o4, o4, 1, hw4, hw4), Conv(o3 + o4, o4, 1, hw4, hw4), Conv(o5, o4, 3, hw5, hw5),
        Conv(o4, o4, 3, hw4, hw4), Conv(o4, o4, 3, hw4, hw4), Conv(3 * o4, o4, 1, hw4, hw4),
        Conv(o4 + 2, o4, 3, hw4, hw4), Conv(o4, o4, 3, hw4, hw4),
    ]  # fmt: skip
    image_side = sum(cv.flops for cv in neck[:3])
    fresh_inputs = (True, True, False, False, False, True, True, False)  # concatenations are new tensors
    neck_saved = 3 * o5 * hw5 + sum(cv.saved(new) for cv, new in zip(neck[3:], fresh_inputs, strict=True))
    neck_params = linear(arch.state, o5, bias=False) + 2 * o5 + 2 * o5 + sum(cv.params for cv in neck)
    words = TEXT_TOKENS + n_text
    dec_layer_params = 8 * d * d + 2 * d * f + 19 * d + 3 * f
    dec_linear = 2.0 * (hw4 * (6 * d * d + 2 * d * f) + words * 2 * d * d)
    dec_attn = 4.0 * hw4 * hw4 * d + 4.0 * hw4 * words * d
    proj = [
        Conv(2 * heads_in, 2 * heads_in, 3, 4 * hw4, 4 * hw4), Conv(2 * heads_in, heads_in, 3, 16 * hw4, 16 * hw4),
        Conv(heads_in, heads_in, 1, 16 * hw4, 16 * hw4, bn=False, bias=True, relu=False),
    ]  # fmt: skip
    dynamic = 2.0 * heads_in * 9 * 16 * hw4  # per-sample 3x3 kernel from the sentence state
    proj_params = sum(cv.params for cv in proj) + linear(arch.state, 9 * heads_in + 1)
    proj_saved = sum(cv.saved(new) for cv, new in zip(proj, (True, True, False), strict=True)) + heads_in * 16 * hw4
    conv_flops = sum(cv.flops for cv in neck) + sum(cv.flops for cv in proj) + dynamic
    # per decoder layer and pixel token: frozen 11 d + f (norm inputs, q/k/v/out of both attentions, ReLU);
    # training adds the Linear inputs and dropout masks
    frozen_rest, trained_rest = hw4 * d + proj_saved, sum(cv.saved() for cv in neck[:3]) + hw4 * d + proj_saved
    decoder = Stage(
        params=neck_params + arch.dec_layers * dec_layer_params + 2 * d + proj_params,
        flops=conv_flops + arch.dec_layers * (dec_linear + dec_attn),
        attn=arch.dec_layers * dec_attn + dynamic,
        saved=neck_saved + arch.dec_layers * hw4 * (11 * d + f) + frozen_rest,
        saved_trained=neck_saved + arch.dec_layers * hw4 * (17 * d + 2 * f) + trained_rest,
        working=max(cv.cout * cv.hw + cv.cin * cv.hw_in for cv in proj),
        no_input_grad=image_side,
    )
    head = Stage(0, 0.0)
    if upsampler:
        head = Stage(
            params=d * 64 + 25 * 64 + 2,
            flops=2.0 * d * 64 * hw4 + 2.0 * 25 * 64 * s * s,
            saved=(HEAD_MAPS * 64 + HEAD_BLEND_MAPS) * s * s + d * hw4,
            saved_trained=(HEAD_MAPS * 64 + HEAD_BLEND_MAPS) * s * s + d * hw4,
            working=2 * 64 * s * s,
        )
    return Stages(image, text, decoder, head, fixed_params=1, loss_elements=LOSS_MAPS * s * s)  # + logit scale


def _attention_params(width: int) -> int:
    return 4 * linear(width, width)  # q, k, v, o with biases


def sam3_stages(arch: Sam3Arch, n_text: int, n_fusion: int, upsampler: bool) -> Stages:
    """SAM 3 per image, as ``models.sam3`` runs it: the frozen image pass (ViT with windowed and global layers,
    FPN neck: 4 levels), the text tower on every token with SAM 3's projection, and as "decoder" the DETR encoder
    (+ ``n_fusion`` prompt tokens) and the mask decoder's semantic path (prompt cross-attention, pixel decoder over
    the x2 and x4 levels, 1-channel projection)."""
    s, p, v, f = arch.image, arch.patch, arch.vit, arch.fusion.width
    g = s // p
    t = g * g
    windows = -(-g // arch.window)
    padded = windows * windows * arch.window**2  # windowed layers attend over the grid padded to whole windows
    n_glob, n_win = arch.global_layers, v.layers - arch.global_layers
    w, m = v.width, v.mlp
    patch_flops = 2.0 * 3 * p * p * w * t
    vit_linear = n_glob * 2.0 * t * (4 * w * w + 2 * w * m) + n_win * 2.0 * (padded * 4 * w * w + t * 2 * w * m)
    vit_attn = n_glob * 4.0 * t * t * w + n_win * 4.0 * padded * arch.window**2 * w
    levels = [(4 * g) ** 2, (2 * g) ** 2, g * g, (g // 2) ** 2]  # x4, x2, x1, x0.5
    neck_flops = 2.0 * w * (w // 2) * levels[1] + 2.0 * (w // 2) * (w // 4) * levels[0]  # x4's two transposed convs
    neck_flops += 2.0 * w * (w // 2) * levels[1]  # x2's transposed conv
    neck_params = 2 * (w * (w // 2) * 4 + w // 2) + (w // 2) * (w // 4) * 4 + w // 4  # the transposed convs
    for cin, hw in zip((w // 4, w // 2, w, w), levels, strict=True):
        neck_flops += 2.0 * (cin * f + 9 * f * f) * hw  # proj1 (1x1) and proj2 (3x3)
        neck_params += linear(cin, f) + 9 * f * f + f
    positions = (arch.position_image // p) ** 2
    image = Stage(
        params=3 * p * p * w + positions * w + 2 * w + v.layers * v.layer_params + neck_params,
        flops=patch_flops + vit_linear + vit_attn + neck_flops,
        attn=vit_attn,
        working=v.working(t) + padded * w,
        kept=2 * f * sum(levels[:3]) + w * t,  # three FPN levels + their sine positions, the ViT output
        no_input_grad=patch_flops,
    )
    tx, words = arch.text, TEXT_TOKENS + n_text
    text_params = arch.vocab * tx.width + arch.positions * tx.width + tx.layers * tx.layer_params + 2 * tx.width
    text = Stage(
        params=text_params + linear(tx.width, f),
        flops=tx.linear_flops(words) + tx.attn_flops(words) + 2.0 * words * tx.width * f,
        attn=tx.attn_flops(words),
        saved=tx.saved(words, False) + 2 * words * tx.width,  # + final LayerNorm input, embeddings
        saved_trained=tx.saved(words, True) + 3 * words * tx.width,
        working=tx.working(words),
        matmul_params=tx.layers * tx.layer_params + linear(tx.width, f),
    )
    d, tv = arch.fusion, t + n_fusion
    enc_layer = 2 * _attention_params(f) + linear(f, d.mlp) + linear(d.mlp, f) + 6 * f
    enc_linear = 2.0 * (tv * (4 * f * f + 2 * f * f + 2 * f * d.mlp) + words * 2 * f * f)
    enc_attn = 4.0 * tv * tv * f + 4.0 * tv * words * f
    cross_linear = 2.0 * (t * 2 * f * f + words * 2 * f * f)
    cross_attn = 4.0 * t * words * f
    pixel_hw = levels[0] + levels[1]
    pixel_flops = 2.0 * 9 * f * f * pixel_hw + 2.0 * f * levels[0]  # two 3x3 convs, the semantic 1x1
    mask_params = _attention_params(f) + 2 * f + 3 * (9 * f * f + f) + 3 * 2 * f + linear(f, f) + linear(f, 1)
    mask_params += 3 * linear(f, f)  # the instance mask embedder (weights only)
    decoder = Stage(
        params=d.layers * enc_layer + mask_params,
        flops=d.layers * (enc_linear + enc_attn) + cross_linear + cross_attn + pixel_flops,
        attn=d.layers * enc_attn + cross_attn,
        # per encoder layer and image token: 3 LayerNorm inputs, q/k/v/out of self-attention, q/out of
        # cross-attention, the ReLU (9 f + m; without fusion prompts the first self-attention sees no input that
        # needs a gradient and keeps nothing); mask decoder: its cross-attention (3 f per token), conv inputs,
        # GroupNorm inputs and ReLU outputs of the pixel decoder (3 f per position). Measured on sam3 at 168 px.
        saved=d.layers * (tv * (9 * f + d.mlp) + 2 * words * f)
        - (0 if n_fusion else 5 * t * f)
        + 3 * t * f
        + 3 * f * pixel_hw,
        saved_trained=d.layers * (tv * (8 * f + 2 * d.mlp) + 4 * words * f) + 4 * t * f + 3 * f * pixel_hw,
        working=f * levels[0] * 3,
        matmul_params=d.layers * enc_layer + mask_params,
    )
    head = Stage(0, 0.0)
    if upsampler:  # CRIS's head shape on the x4 pixel embedding
        head = Stage(
            params=f * 64 + 25 * 64 + 2,
            flops=2.0 * f * 64 * levels[0] + 2.0 * 25 * 64 * s * s,
            saved=(HEAD_MAPS * 64 + HEAD_BLEND_MAPS) * s * s + f * levels[0],
            saved_trained=(HEAD_MAPS * 64 + HEAD_BLEND_MAPS) * s * s + f * levels[0],
            working=2 * 64 * s * s,
        )
    return Stages(image, text, decoder, head, fixed_params=sam3_off_path_params(arch), loss_elements=LOSS_MAPS * s * s)


def sam3_off_path_params(arch: Sam3Arch) -> int:
    """Weights of SAM 3 the semantic path never runs (always frozen): DETR decoder with its queries and box and
    presence heads, geometry (exemplar) encoder, dot-product scoring, CLIP's pooled text projection."""
    f, ffn = arch.fusion.width, arch.fusion.mlp
    layer = 3 * _attention_params(f) + linear(f, ffn) + linear(ffn, f) + 8 * f
    decoder = arch.decoder_layers * layer + arch.queries * (f + 4) + 8 * f * f + 2 * f * 4 * f
    geometry = arch.geometry_layers * layer + 12 * f * f
    scoring = 2 * linear(f, f) + 3 * linear(f, ffn // 4) + 2 * f
    clip_projection = arch.text.width * arch.clip_projection  # CLIP's pooled text projection
    return decoder + geometry + scoring + clip_projection


# ------------------------------------------------------------------------------------------- strategies and trials
@dataclass(frozen=True)
class Role:
    """Which stages of a strategy train, which pass a gradient through frozen weights, and what a pack shares."""

    trains: bool = True
    image_grad: bool = False  # visual prompts: the image tower needs its activations for backward
    text_grad: bool = False  # text prompts
    decoder_grad: bool = True
    trained: frozenset[str] = frozenset()  # stages whose weights train ("image", "text", "decoder")
    shares_image: bool = False  # the frozen image forward is the same for every member: once per pack


def known(model: str) -> bool:
    """Whether the estimate has architecture numbers for a catalog model."""
    return model in ARCHITECTURES


def strategy_role(strategy: str, model: str | None = None) -> Role:
    """The role of a catalog strategy (by its towers; baselines by name, an unknown one as full fine-tuning).
    SAM 3's finetune keeps its image encoder frozen (``models.sam3``)."""
    if strategy == "zero_shot":
        return Role(trains=False, decoder_grad=False, shares_image=True)
    if strategy == "decoder_finetune":
        return Role(decoder_grad=False, trained=frozenset({"decoder"}), shares_image=True)
    info = get_strategy(strategy)
    if info.baseline or not info.towers:
        if model is not None and isinstance(ARCHITECTURES.get(model), Sam3Arch):
            return Role(text_grad=True, trained=frozenset({"text", "decoder"}))
        return Role(trained=frozenset({"image", "text", "decoder"}))
    vision = "vision" in info.towers
    return Role(image_grad=vision, text_grad="text" in info.towers, shares_image=not vision)


def _image_feature(arch: Arch) -> int:
    """Width of the image feature CoCoOp's meta-net reads."""
    if isinstance(arch, CLIPSegArch):
        return arch.projection
    return arch.vit.width if isinstance(arch, Sam3Arch) else arch.state


def learner_params(arch: Arch, strategy: str, p: Mapping[str, Any]) -> int:
    """Trainable prompt parameters (``strategies/*.py``'s shapes), without the head."""
    if strategy == "detr_vpt" and isinstance(arch, Sam3Arch):
        return int(p["prompt_depth"]) * int(p["num_context"]) * arch.fusion.width
    if strategy not in ("coop", "cocoop", "vpt", "maple", "shared_separate", "shared_attn"):
        return 0
    d, n = int(p["prompt_depth"]), int(p["num_context"])
    dt = arch.text.width
    dv = arch.vision.width if isinstance(arch, CLIPSegArch) else 0
    rows = min(d, max(arch.extract) + 1) if isinstance(arch, CLIPSegArch) else 0  # vision rows that run
    hidden = None if p.get("intermediate_dim") is None else int(p["intermediate_dim"])
    lora, shared = bool(p.get("use_lora", False)), bool(p.get("shared_projection", False))

    def stack(count: int, one: int) -> int:
        return (1 if shared else count) * one

    if strategy == "coop":
        return d * n * dt
    if strategy == "cocoop":
        feature = _image_feature(arch)
        return d * n * dt + stack(d, projection_params(feature, dt, hidden, lora, final_bias=False, norm=True))
    if strategy == "vpt":
        return rows * n * dv
    if strategy == "maple":
        return d * n * dt + stack(rows, projection_params(dt, dv, hidden, lora, final_bias=True, norm=True))
    if strategy == "shared_separate":
        sd = int(p["shared_dim"])
        to_text = stack(d, projection_params(sd, dt, hidden, lora, final_bias=True, norm=True))
        return d * n * sd + to_text + stack(rows, projection_params(sd, dv, hidden, lora, final_bias=True, norm=True))
    joint, ffn = dt + dv, int(p["ffn_dim"])  # shared_attn: one transformer encoder layer per depth
    return d * n * joint + stack(d, 4 * joint * joint + 2 * joint * ffn + 9 * joint + ffn)


def learner_saved(arch: Arch, strategy: str, p: Mapping[str, Any]) -> float:
    """Elements a prompt learner keeps for backward per step (not per image): Shared-Attention's joint layers on
    depth x n tokens; the other learners' are below 0.1 % of a step's and not counted."""
    if strategy != "shared_attn" or not isinstance(arch, CLIPSegArch):
        return 0.0
    joint = arch.text.width + arch.vision.width
    return int(p["prompt_depth"]) * int(p["num_context"]) * (10 * joint + 4 * int(p["ffn_dim"]))


def projection_macs(cin: int, cout: int, hidden: int | None, lora: bool) -> int:
    """Multiply-adds of one ``make_projection`` applied to one vector."""
    if hidden is None:
        return cin * cout
    if lora:
        rank = min(hidden, cout)
        return cin * rank + (rank * cout if hidden <= cout else 0)
    return cin * hidden + hidden * cout


def learner_flops(arch: Arch, strategy: str, p: Mapping[str, Any]) -> tuple[float, float]:
    """Forward FLOPs of a prompt learner: (per forward pass, per image). CoCoOp's meta-net runs per image; the
    projections and joint layers of the multimodal learners once per forward, on depth x n tokens."""
    if strategy not in ("cocoop", "maple", "shared_separate", "shared_attn"):
        return 0.0, 0.0
    d, n, dt = int(p["prompt_depth"]), int(p["num_context"]), arch.text.width
    hidden = None if p.get("intermediate_dim") is None else int(p["intermediate_dim"])
    lora = bool(p.get("use_lora", False))
    if strategy == "cocoop":
        return 0.0, 2.0 * d * projection_macs(_image_feature(arch), dt, hidden, lora)
    assert isinstance(arch, CLIPSegArch)
    dv, rows = arch.vision.width, min(d, max(arch.extract) + 1)
    if strategy == "maple":
        return 2.0 * rows * n * projection_macs(dt, dv, hidden, lora), 0.0
    if strategy == "shared_separate":
        sd = int(p["shared_dim"])
        macs = d * n * projection_macs(sd, dt, hidden, lora) + rows * n * projection_macs(sd, dv, hidden, lora)
        return 2.0 * macs, 0.0
    joint, ffn = dt + dv, int(p["ffn_dim"])
    keys = n if p.get("attend_across_tokens", True) else 1
    return d * (2.0 * n * (4 * joint * joint + 2 * joint * ffn) + 4.0 * n * keys * joint), 0.0


def resolved(strategy: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The strategy's parameters with catalog defaults (adaptive trials carry only their fixed ones)."""
    info = get_strategy(strategy)
    return {q.name: params.get(q.name, q.default) for q in info.params}


def model_stages(model: str, strategy: str, params: Mapping[str, Any]) -> Stages:
    arch = ARCHITECTURES[model]
    info = get_strategy(strategy)
    p = resolved(strategy, params)
    n = int(p.get("num_context", 0)) if info.towers else 0
    n_text = n if "text" in info.towers else 0
    upsampler = bool(p.get("learnable_upsampler", False))
    if isinstance(arch, Sam3Arch):
        return sam3_stages(arch, n_text, n if "fusion" in info.towers else 0, upsampler)
    if isinstance(arch, CLIPSegArch):
        n_vision = n if "vision" in info.towers else 0
        return clipseg_stages(arch, n_text, n_vision, pooled=strategy == "cocoop", upsampler=upsampler)
    return cris_stages(arch, n_text, upsampler)


# ------------------------------------------------------------------------------------------------------- memory
@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of one trial on a device: ``shared`` once per pack, ``per_member`` for each trial in it."""

    shared: int
    per_member: int
    parts: dict[str, int] = field(default_factory=dict)  # named terms of both sums, for plan --json and tests
    activation_elements: float = 0.0  # per image, kept for backward (what the saved-tensor test measures)

    @property
    def alone(self) -> int:
        return self.shared + self.per_member


def precision_bytes(train: Mapping[str, Any]) -> tuple[int, float]:
    return PRECISION_BYTES.get(str(train.get("precision", "32")), (4, 4.0))


def data_cache_bytes(image_size: int, samples: int) -> int:
    """``training.data``'s device cache: uint8 images and bit-packed masks of every split."""
    return samples * (3 * image_size * image_size + math.ceil(image_size * image_size / 8))


def trial_memory(
    model: str, strategy: str, params: Mapping[str, Any], train: Mapping[str, Any], samples: int = 0
) -> MemoryEstimate:
    """Peak device memory of a trial's training step (see the module docstring for the formula).

    ``samples``: images of all splits the data cache holds on the device (0: not counted).
    """
    return _trial_memory(model, strategy, _key(params), _key(train), samples)


def _key(mapping: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((k, v if not isinstance(v, (dict, list)) else repr(v)) for k, v in mapping.items()))


@lru_cache(maxsize=4096)
def _trial_memory(
    model: str, strategy: str, params: tuple[tuple[str, Any], ...], train: tuple[tuple[str, Any], ...], samples: int
) -> MemoryEstimate:
    p, t = resolved(strategy, dict(params)), dict(train)
    st = model_stages(model, strategy, p)
    role = strategy_role(strategy, model)
    arch = ARCHITECTURES[model]
    weight_b, act_b = precision_bytes(t)
    batch = int(t.get("batch_size", 1))
    stages = {"image": st.image, "text": st.text, "decoder": st.decoder}
    everything = set(role.trained) == set(stages)  # then the logit scale trains too
    trained = sum(stages[s].params for s in role.trained) + learner_params(arch, strategy, p) + st.head.params
    trained += st.fixed_params if everything else 0
    frozen = sum(x.params for x in stages.values()) + st.fixed_params - sum(stages[s].params for s in role.trained)
    frozen -= st.fixed_params if everything else 0
    grad = {"image": role.image_grad, "text": role.text_grad, "decoder": role.decoder_grad}
    saved, working = st.loss_elements if role.trains else 0.0, 0.0
    nograd = 0.0
    for name, stage in stages.items():
        if name in role.trained:
            saved += stage.saved_trained
            working = max(working, stage.working)
        elif grad[name] and role.trains:
            saved += stage.saved
            working = max(working, stage.working)
        elif name != "image" or not role.shares_image:
            nograd = max(nograd, stage.working + stage.kept)
    if role.trains and st.head.params:
        saved += st.head.saved_trained
        working = max(working, st.head.working)
    image_nograd = st.image.working + st.image.kept if role.shares_image else 0.0
    learner = learner_saved(arch, strategy, p) if role.trains else 0.0
    mixed = str(t.get("precision", "32")) in MIXED
    on_path = [x for n, x in stages.items() if n in role.trained or (grad[n] and role.trains)]
    on_path += [st.head] if role.trains else []
    casts = sum(x.cast_params() for x in on_path) * CAST_BYTES if mixed else 0
    parts = {
        "runtime": RUNTIME_BYTES,
        "frozen_weights": frozen * weight_b,
        "shared_image_forward": int(batch * image_nograd * act_b),
        "data_cache": data_cache_bytes(arch.image, samples),
        "trainable_and_adamw": trained * OPTIMIZER_BYTES if role.trains else 0,
        "activations": int((batch * saved + learner) * act_b),
        "backward_working_set": int(batch * working * act_b),
        "member_forward": int(batch * nograd * act_b),  # no-grad stages of its own (text of vpt, zero-shot)
        "weight_casts": casts,  # mixed precision: 16-bit weight copies its backward reads
    }
    shared = sum(parts[k] for k in ("runtime", "frozen_weights", "shared_image_forward", "data_cache"))
    own = ("trainable_and_adamw", "activations", "backward_working_set", "member_forward", "weight_casts")
    per_member = sum(parts[k] for k in own)
    return MemoryEstimate(shared, per_member, parts, saved + learner / batch)


def pack_memory(members: Sequence[MemoryEstimate]) -> int:
    """Peak bytes of a pack: what its members share once (the largest share) plus each member's own."""
    if not members:
        return 0
    return max(m.shared for m in members) + sum(m.per_member for m in members)


def auto_pack_size(
    per_member: int, shared: int, free_bytes: int, margin: float = AUTO_MARGIN, cap: int = AUTO_MAX
) -> int:
    """``pack: auto``'s N: the most members with ``shared + N * per_member <= (1 - margin) * free_bytes``.

    The margin (default 15 %) covers allocator fragmentation and the estimate's error; the run splits a pack in two
    on an out-of-memory error anyway. At least 1 (a trial that does not fit alone still tries, and fails as it
    would unpacked), at most ``cap``.
    """
    budget = (1.0 - margin) * free_bytes - shared
    if per_member <= 0:
        return cap
    return max(1, min(cap, int(budget // per_member)))


# ------------------------------------------------------------------------------------------------ device time
@dataclass(frozen=True)
class StepFlops:
    """FLOPs per image of one trial: its own training step and evaluation, and the pack-shared image forward."""

    train: float  # forward + backward of what the member computes itself (0 for zero-shot)
    eval: float  # forward of what the member computes itself
    shared: float  # the frozen image forward a pack computes once for all members (0: each member its own)


def trial_flops(model: str, strategy: str, params: Mapping[str, Any], batch: int = 1) -> StepFlops:
    """Per-image FLOPs (multiply-add = 2) of a trial at ``batch`` images per step (the prompt learners of the
    multimodal strategies run once per step); see the module docstring for what backward counts."""
    return _trial_flops(model, strategy, _key(params), max(1, int(batch)))


@lru_cache(maxsize=4096)
def _trial_flops(model: str, strategy: str, params: tuple[tuple[str, Any], ...], batch: int) -> StepFlops:
    p = resolved(strategy, dict(params))
    st = model_stages(model, strategy, p)
    role = strategy_role(strategy, model)
    per_forward, per_image = learner_flops(ARCHITECTURES[model], strategy, p)
    learner = per_image + per_forward / batch
    grad = {"image": role.image_grad, "text": role.text_grad, "decoder": role.decoder_grad}
    own = {"text": st.text, "decoder": st.decoder, "head": st.head}
    if not role.shares_image:
        own["image"] = st.image
    forward = sum(x.flops for x in own.values()) + learner
    backward = 2 * learner  # its weights train
    if role.trains:
        for name, stage in own.items():
            if name in role.trained or name == "head":
                backward += stage.backward(trained=True)
            elif grad.get(name):
                backward += stage.backward(trained=False)
    return StepFlops(
        train=forward + backward if role.trains else 0.0,
        eval=forward,
        shared=st.image.flops if role.shares_image else 0.0,
    )


@dataclass(frozen=True)
class SplitSizes:
    train: int
    val: int
    test: int

    @property
    def total(self) -> int:
        return self.train + self.val + self.test


def run_flops(members: Sequence[StepFlops], sizes: SplitSizes, epochs: int) -> float:
    """FLOPs of one process training ``members`` together for ``epochs`` (0: evaluation only): every epoch a pass
    over train (forward + backward) and val (forward), then val and test once with the best checkpoint."""
    trained_images = sizes.train * epochs
    evaluated = sizes.val * epochs + sizes.val + sizes.test
    own = sum(m.train * trained_images + m.eval * evaluated for m in members)
    shared = max((m.shared for m in members), default=0.0) * (trained_images + evaluated)
    return own + shared


@dataclass(frozen=True)
class Device:
    """The stated device a plan's estimate assumes."""

    tflops: float  # dense peak for the study's precision
    utilization: float  # fraction of the peak a training step reaches
    startup_s: float  # per process
    memory_bytes: int  # free memory pack: auto fills

    def seconds(self, flops: float, processes: int) -> float:
        return flops / (self.tflops * 1e12 * self.utilization) + processes * self.startup_s


def default_device(precision: str, memory_gb: float = 80.0, tflops: float | None = None) -> Device:
    """An A100 (80 GB): 312 TFLOP/s dense bf16/fp16, 19.5 fp32 without TF32, at 35 % utilisation."""
    peak = tflops if tflops is not None else DEFAULT_TFLOPS.get(precision, DEFAULT_TFLOPS["32"])
    return Device(peak, DEFAULT_UTILIZATION, DEFAULT_STARTUP_S, int(memory_gb * GiB))
