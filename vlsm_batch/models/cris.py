"""CRIS (CLIP RN50 + FPN neck + vision-language decoder + projector, docs/science.md §4.2) with prompt learners.

The backbone is open_clip's RN50 (QuickGELU, as OpenAI's weights need) built for 416 px; its attention pool is run
*spatially*, as CRIS's ``AttentionPool2d`` does: the 13 x 13 layer4 tokens, each plus its own row of the position
table (rows 1.., the grid resized to the feature map), are the queries, keys and values of one multi-head attention
with CLIP's q/k/v projections and ``c_proj``; there is no mean (class) token and position row 0 is unused (CRIS
comments CLIP's mean token out). CRIS's 1x1 conv + BN ``connect`` residual and a ReLU follow, which gives C5
(1024 x 13 x 13). C3 = layer2, C4 = layer3. The text tower is run here too so that prompt tokens can enter:

* prompt tokens after BOS, positions added after insertion, causal + key-padding mask over L + n tokens;
* depth semantics as for CLIPSeg: fresh tokens at the input of text layers 1..d (``context[k]`` enters layer k+1,
  written into a new tensor). **The original CRIS wrapper is off by one** (row 0 fed layers 1 and 2, fresh rows
  up to layer d+1, docs/science.md §2.4 / §8.11); here a depth means the same on both models;
* word features ``ln_final(x)`` (B, L+n, 512) feed the decoder's cross-attention with n "not padded" entries
  prepended to the padding mask; the sentence state is ``ln_final(x)[argmax(ids) + n] @ text_projection``.

Frozen parts (backbone, neck, decoder, projector) stay in eval mode during fit (BatchNorm statistics never
move); the image pass runs without gradient, neck/decoder/projector with gradient so it reaches the prompts.
CoCoOp conditions on the global average of the C5 map (1024-d). The frozen logits (stride 4) are resized to the
input size bicubically (``align_corners=True``) as in TuneVLSeg; the head of docs/science.md §4.3 reads the decoder map.

``finetune`` trains every weight with decoder dropout 0.2 (docs/science.md §4.4): the original CRIS E2E baseline ran its
own code, with no encoder under ``no_grad``, so it did train every weight and ``finetune`` is its faithful
baseline; ``decoder_finetune`` (CLIPSeg's decoder-only E2E) does not apply here and is refused with that reason.
Prompt strategies and zero-shot use dropout 0 as the prompt-tuning configs did.

Weights (``weights:`` in the spec): a local CRIS checkpoint (``.pth``/``.pt``/``.ckpt``; a plain state dict or one
nested under ``state_dict``/``model``; prefixes ``module.``/``model.``/``net.`` stripped), loaded strictly. A
checkpoint without ``backbone.*`` keys takes the backbone from a CLIP RN50 state dict: ``$VLSM_CLIP_RN50``, or
``RN50.safetensors`` / ``RN50.pt`` next to the checkpoint (OpenAI's TorchScript ``RN50.pt`` must be converted once,
see :func:`clip_rn50_state`). The attention pool's 7x7 position grid of OpenAI/CRIS files is resized
bicubically to 13x13 once at load (CRIS resized it on every forward; the result is the same).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn import functional as F

from ..strategies.impl import LearnerContext, PromptLearner, Prompts
from . import placement
from .checkpoints import CheckpointMismatchError, load_strict, read_state_dict, strip_prefixes
from .configs import CRIS, CRIS_TINY, CRISArch
from .cris_layers import FPN, CRISUpsampler, Projector, TransformerDecoder
from .prompted import ModelLoadError, PromptedSegmenter, freeze, seeded, wrap_segmenter
from .tokenizer import offline_clip_tokenizer

if TYPE_CHECKING:  # open_clip ships no type information: CLIP reads as Any, its submodules are not nn.Module unions
    from open_clip.model import CLIP

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
RN50_ENV = "VLSM_CLIP_RN50"
FINETUNE_DROPOUT = 0.2
_POS_KEY = "visual.attnpool.positional_embedding"
_CLIP_META = ("input_resolution", "context_length", "vocab_size")


def _grid_positions(pos: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The (h*w, C) spatial rows of the pool's position table. Row 0 (CLIP's class-token position) is unused, as in
    CRIS; a square grid of another size is resized bicubically (``align_corners=False``), as CRIS does per forward."""
    grid = pos[1:]
    side = round(grid.shape[0] ** 0.5)
    if side == h == w and side * side == grid.shape[0]:
        return grid
    grid = grid.reshape(1, side, side, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
    return grid.flatten(2)[0].t()


class CRISNet(nn.Module):
    """The CRIS network: ``backbone`` (open_clip CLIP RN50 + ``visual.attnpool.connect``), ``neck``, ``decoder``,
    ``proj`` (the original checkpoint layout)."""

    backbone: CLIP

    def __init__(
        self,
        backbone: CLIP,
        *,
        fpn_in: tuple[int, int, int],
        fpn_out: tuple[int, int, int],
        state_dim: int,
        heads: int,
        ffn: int,
        layers: int = 3,
        dropout: float = 0.0,
    ):
        super().__init__()
        pool = backbone.visual.attnpool
        c5_in = pool.k_proj.in_features
        pool.connect = nn.Sequential(nn.Conv2d(c5_in, state_dim, 1, bias=False), nn.BatchNorm2d(state_dim))
        self.backbone = backbone
        self.neck = FPN(fpn_in, fpn_out, state_dim)
        d_model = fpn_out[1]
        self.decoder = TransformerDecoder(layers, d_model, heads, ffn, dropout)
        self.proj = Projector(state_dim, d_model // 2, 3)

    # -- image ---------------------------------------------------------------------------------------------------
    def _spatial_pool(self, x: torch.Tensor) -> torch.Tensor:
        """CRIS's attention pool: the HW tokens of layer4, each plus its own position row, are queries, keys and
        values at once (no mean/class token), then ``c_proj``, the ``connect`` residual and a ReLU."""
        pool = self.backbone.visual.attnpool
        b, c, h, w = x.shape
        residual = pool.connect(x)
        tokens = x.flatten(2).permute(2, 0, 1)  # (HW, B, C)
        tokens = tokens + _grid_positions(pool.positional_embedding, h, w)[:, None].to(tokens.dtype)
        out, _ = F.multi_head_attention_forward(
            query=tokens, key=tokens, value=tokens, embed_dim_to_check=c, num_heads=pool.num_heads,
            q_proj_weight=pool.q_proj.weight, k_proj_weight=pool.k_proj.weight, v_proj_weight=pool.v_proj.weight,
            in_proj_weight=None, in_proj_bias=torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
            bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0, out_proj_weight=pool.c_proj.weight,
            out_proj_bias=pool.c_proj.bias, use_separate_proj_weight=True, training=self.training,
            need_weights=False,
        )  # fmt: skip
        out = out.permute(1, 2, 0).reshape(b, -1, h, w)
        return F.relu(out + residual.to(out.dtype))

    def encode_image(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(C3, C4, C5): layer2, layer3 and the spatially attention-pooled layer4."""
        visual = self.backbone.visual
        x = visual.stem(pixel_values.to(visual.conv1.weight.dtype))
        x = visual.layer1(x)
        c3 = visual.layer2(x)
        c4 = visual.layer3(c3)
        return c3, c4, self._spatial_pool(visual.layer4(c4))

    # -- text ----------------------------------------------------------------------------------------------------
    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompts: list[torch.Tensor] | tuple = ()
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Word features (B, L+n, width), padding mask (B, L+n; True = padded) and sentence state (B, embed)."""
        clip = self.backbone
        input_ids, hidden, attention_mask, n = placement.embed_text(
            clip.token_embedding, clip.positional_embedding, input_ids, attention_mask, prompts[:1]
        )
        total = hidden.shape[1]
        allowed = torch.ones(total, total, dtype=torch.bool, device=hidden.device).tril()[None]
        allowed = allowed & attention_mask[:, None, :].bool()  # (B, L, L)
        mask = torch.zeros(allowed.shape, dtype=hidden.dtype, device=hidden.device).masked_fill(~allowed, -torch.inf)
        heads = clip.transformer.resblocks[0].attn.num_heads
        mask = mask.repeat_interleave(heads, dim=0)  # (B * heads, L, L), open_clip adds it as a float mask
        if not clip.transformer.batch_first:
            raise ModelLoadError("open_clip's text transformer must be batch_first")
        for k, block in enumerate(clip.transformer.resblocks, start=1):
            hidden = block(hidden, attn_mask=mask)
            # fresh tokens for layer k+1 in a new tensor (CLIPSeg's depth semantics)
            hidden = placement.replace_text(hidden, [placement.row_for(prompts, k)])
        words = clip.ln_final(hidden)
        state = placement.pool_eos(words, input_ids, n) @ clip.text_projection
        return words, ~attention_mask.bool(), state

    # -- heads ---------------------------------------------------------------------------------------------------
    def decode(
        self, feats: tuple[torch.Tensor, torch.Tensor, torch.Tensor], words: torch.Tensor, pad: torch.Tensor,
        state: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """(stride-4 logits, decoder map (B, d_model, H/16, W/16))."""
        fq = self.neck(feats, state)
        fq = self.decoder(fq, words.to(fq.dtype), pad)
        return self.proj(fq, state), fq


class CRISPromptedSegmenter(PromptedSegmenter):
    """CRIS, frozen (or fully trainable for ``finetune``), with the text prompts of one strategy."""

    def __init__(
        self,
        net: CRISNet,
        tokenizer: Any,
        *,
        image_size: int,
        learner: PromptLearner | None,
        learnable_upsampler: bool,
        name: str,
        strategy: str,
        finetune: bool = False,
    ):
        freeze(net)
        if finetune:
            net.requires_grad_(True).train()
        head = CRISUpsampler(net.decoder.norm.normalized_shape[0]) if learnable_upsampler else None
        super().__init__(
            tokenizer=tokenizer,
            image_size=image_size,
            image_mean=CLIP_MEAN,
            image_std=CLIP_STD,
            max_text_tokens=int(net.backbone.positional_embedding.shape[0]),
            learner=learner,
            head=head,
            name=name,
            strategy=strategy,
        )
        self.cris = net
        self.finetune = finetune

    @property
    def trains_decoder(self) -> bool:
        """The trial trains the decoder's weights (finetune): a pack cannot share the decoder."""
        return self.finetune

    def frozen_modules(self) -> list[nn.Module]:
        return [] if self.finetune else [self.cris]

    # -- packing interface -------------------------------------------------------------------------------------------
    def member(self, strategy: str, params: Mapping[str, Any]) -> CRISPromptedSegmenter:
        return wrap_cris(self.cris, self.tokenizer, self.name, strategy, params)

    def shared_image(self, pixel_values: torch.Tensor) -> tuple[Any, torch.Tensor | None]:
        learner = self.learner
        with torch.no_grad():
            feats = self.cris.encode_image(pixel_values)
        pooled = learner is not None and learner.needs_image_features
        return feats, feats[2].float().mean(dim=(2, 3)) if pooled else None

    def logits_from_shared(
        self,
        shared: Any,
        prompts: Prompts,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
    ) -> torch.Tensor:
        words, pad, state = self.cris.encode_text(input_ids, attention_mask, prompts.text)
        coarse, fq = self.cris.decode(shared, words, pad, state)
        logits = F.interpolate(coarse, size=pixel_values.shape[-2:], mode="bicubic", align_corners=True)
        return self.head(fq, logits) if self.head is not None else logits

    def forward(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.finetune):
            feats = self.cris.encode_image(pixel_values)
        learner = self.learner
        if learner is None:
            prompts = Prompts()
        elif learner.needs_image_features:  # CoCoOp: the global average of the C5 map
            prompts = learner(feats[2].float().mean(dim=(2, 3)))
        else:
            prompts = learner()
        return self.logits_from_shared(feats, prompts, pixel_values, input_ids, attention_mask)

    def describe_prompts(self) -> list[str]:
        lines = super().describe_prompts()
        if self.head is not None:
            lines[-1] = (
                "head: learnable upsampler on the decoder map (1x1 conv to 64, bilinear, 5x5 conv), "
                "blended (1 - r)·frozen + r·head, r learnable (init 0.5)"
            )
        return lines


# -- building ----------------------------------------------------------------------------------------------------
def _backbone(arch: CRISArch) -> CLIP:
    """open_clip's CLIP (ModifiedResNet + text transformer, QuickGELU as OpenAI's weights need) for ``arch``; for
    ``configs.CRIS`` the same module, and the same seeded weights, as ``open_clip.create_model("RN50",
    force_image_size=416, force_quick_gelu=True)``."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    text = arch.text
    return CLIP(
        embed_dim=arch.embed_dim,
        vision_cfg=CLIPVisionCfg(
            layers=arch.rn_layers, width=arch.rn_width, head_width=arch.rn_head_width, image_size=arch.image_size,
            patch_size=None,
        ),
        text_cfg=CLIPTextCfg(
            context_length=arch.context_length, vocab_size=arch.vocab_size, width=text.width, heads=text.heads,
            layers=text.layers, mlp_ratio=text.mlp / text.width,
        ),
        quick_gelu=True,
    )  # fmt: skip


def build_net(size: str, dropout: float) -> CRISNet:
    """Seeded random CRIS: ``full`` (``configs.CRIS``: RN50, 416 px, reference widths) or ``tiny``
    (``configs.CRIS_TINY``: 64 px, for tests)."""
    arch = CRIS if size == "full" else CRIS_TINY
    return seeded(
        lambda: CRISNet(
            _backbone(arch), fpn_in=arch.fpn_in, fpn_out=arch.fpn_out, state_dim=arch.state_dim,
            heads=arch.decoder_heads, ffn=arch.decoder_ffn, layers=arch.decoder_layers, dropout=dropout,
        )
    )  # fmt: skip


def _resize_pos(state: dict[str, torch.Tensor], key: str, target: torch.Tensor) -> None:
    pos = state.get(key)
    if pos is None or pos.shape == target.shape or pos.ndim != 2 or pos.shape[1] != target.shape[1]:
        return
    side, new = round((pos.shape[0] - 1) ** 0.5), round((target.shape[0] - 1) ** 0.5)
    if side * side + 1 != pos.shape[0] or new * new + 1 != target.shape[0]:
        return
    grid = pos[1:].float().reshape(1, side, side, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(new, new), mode="bicubic", align_corners=False)
    state[key] = torch.cat([pos[:1].float(), grid.flatten(2)[0].t()], 0).to(pos.dtype)


def clip_rn50_state(path: str | Path) -> dict[str, torch.Tensor]:
    """A CLIP RN50 state dict (``torch.save`` or safetensors) as backbone keys (metadata entries dropped).

    OpenAI's own ``RN50.pt`` is a TorchScript archive, which can run code at load: it is refused with the one-line
    conversion to safetensors (see ``models.checkpoints``)."""
    state = strip_prefixes(read_state_dict(path))
    return {k: v.float() for k, v in state.items() if k not in _CLIP_META}


def load_cris_weights(net: CRISNet, path: str | Path) -> None:
    """Load a CRIS checkpoint strictly (see the module docstring); a partial or foreign file is refused with the
    missing, unexpected and mis-shaped keys listed, never trained with random parts.

    Without ``backbone.*`` keys the backbone comes from ``$VLSM_CLIP_RN50``, else ``RN50.safetensors`` or
    ``RN50.pt`` next to the checkpoint."""
    path = Path(path).expanduser()
    state = {k: v for k, v in strip_prefixes(read_state_dict(path)).items() if k.split(".")[-1] not in _CLIP_META}
    if not state:
        raise CheckpointMismatchError(f"checkpoint {str(path)!r} holds no tensors: it is not a CRIS checkpoint")
    if not any(k.startswith("backbone.") for k in state):
        siblings = [path.with_name(name) for name in ("RN50.safetensors", "RN50.pt")]
        rn50 = os.environ.get(RN50_ENV) or str(next((p for p in siblings if p.is_file()), siblings[-1]))
        if not Path(rn50).expanduser().is_file():
            raise CheckpointMismatchError(
                f"checkpoint {str(path)!r} has no backbone.* keys and no CLIP RN50 file was found: set {RN50_ENV} "
                f"or put RN50.safetensors (or RN50.pt) next to the checkpoint"
            )
        state.update({f"backbone.{k}": v for k, v in clip_rn50_state(rn50).items()})
    own = net.state_dict()
    _resize_pos(state, f"backbone.{_POS_KEY}", own[f"backbone.{_POS_KEY}"])
    state = {k: v.to(own[k].dtype) if k in own and v.is_floating_point() else v for k, v in state.items()}
    load_strict(net, state, str(path))


def wrap_cris(
    net: CRISNet, tokenizer: Any, name: str, strategy: str, params: Mapping[str, Any]
) -> CRISPromptedSegmenter:
    """Freeze ``net`` and add the learner of ``strategy`` (and the head); ``name`` is its catalog entry."""
    clip = net.backbone
    ctx = LearnerContext(
        model_name=name,
        text_width=int(clip.token_embedding.embedding_dim),
        text_layers=len(clip.transformer.resblocks),
        vision_width=None,
        vision_layers=None,
        token_embedding=clip.token_embedding,
        tokenizer=tokenizer,
        image_feature_dim=int(net.backbone.visual.attnpool.connect[0].out_channels),
    )
    return wrap_segmenter(CRISPromptedSegmenter, net, ctx, strategy, params)


def _dropout(strategy: str) -> float:
    return FINETUNE_DROPOUT if strategy == "finetune" else 0.0


def build_cris(
    strategy: str, params: Mapping[str, Any], weights: str | None = None, random_init: bool = False
) -> CRISPromptedSegmenter:
    """CRIS at 416 px from a local checkpoint (``weights``), or with ``random_init`` seeded random weights."""
    if not random_init and not weights:
        raise ModelLoadError(
            "cris has no downloadable weights: set `weights: {cris: path/to/cris_best_single.pth}` in the spec "
            f"(the CLIP RN50 file, if the checkpoint lacks the backbone, via ${RN50_ENV})"
        )
    net = build_net("full", _dropout(strategy))
    if not random_init:
        assert weights is not None
        load_cris_weights(net, weights)
    return wrap_cris(net, offline_clip_tokenizer(), "cris", strategy, params)


def build_cris_tiny(
    strategy: str, params: Mapping[str, Any], weights: str | None = None, random_init: bool = True
) -> CRISPromptedSegmenter:
    """Tiny CRIS at 64 px, seeded random weights (or a checkpoint of the tiny architecture); for tests."""
    net = build_net("tiny", _dropout(strategy))
    if weights:
        load_cris_weights(net, weights)
    return wrap_cris(net, offline_clip_tokenizer(), "cris-tiny", strategy, params)
