"""Every catalog model's architecture, written once, torch-free: the builders construct their networks from these
records and the catalog (``models.ModelInfo``) derives its facts (widths, layer counts, depth bound) from them, so
the two cannot drift apart. ``tests/test_model_facts.py`` builds each entry and checks the facts against it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

VOCAB_SIZE = 49408  # CLIP's BPE vocabulary: every model keeps it so that real token ids work
CONTEXT_LENGTH = 77  # text position table rows (prompt tokens included)


@dataclass(frozen=True)
class Tower:
    """A pre-LayerNorm transformer tower: token width, layers, attention heads, MLP hidden width."""

    width: int
    layers: int
    heads: int
    mlp: int


@dataclass(frozen=True)
class CLIPSegArch:
    """transformers' ``CLIPSegConfig`` for one catalog entry, plus the resolution the trials run at."""

    image_size: int  # training/eval resolution; the position grid is interpolated to it
    text: Tower
    vision: Tower
    patch_size: int
    position_image_size: int  # resolution of the vision position table (CLIP's 224 at full size)
    projection_dim: int
    reduce_dim: int
    extract_layers: tuple[int, ...]  # 0-based vision layers the decoder reads
    decoder_heads: int
    decoder_mlp: int
    conditional_layer: int = 0
    context_length: int = CONTEXT_LENGTH
    vocab_size: int = VOCAB_SIZE

    @property
    def vision_run_layers(self) -> int:
        """Vision layers the forward runs: up to the deepest extract layer (layers above feed nothing)."""
        return max(self.extract_layers) + 1

    @property
    def max_prompt_depth(self) -> int:
        """Deepest extract layer + 2 (0-based index + 1 is the last layer run; one more row still replaces the
        prompt tokens of that layer's output, reference §2.4), bounded by both towers."""
        return min(max(self.extract_layers) + 2, self.text.layers, self.vision.layers)

    @property
    def vision_tokens(self) -> int:
        """Vision sequence length before visual prompts: CLS + patches at ``image_size``."""
        return (self.image_size // self.patch_size) ** 2 + 1

    def transformers_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``transformers.CLIPSegConfig``."""
        text, vision = self.text, self.vision
        return {
            "text_config": {"hidden_size": text.width, "intermediate_size": text.mlp, "num_hidden_layers": text.layers,
                            "num_attention_heads": text.heads, "max_position_embeddings": self.context_length,
                            "vocab_size": self.vocab_size},
            "vision_config": {"hidden_size": vision.width, "intermediate_size": vision.mlp,
                              "num_hidden_layers": vision.layers, "num_attention_heads": vision.heads,
                              "patch_size": self.patch_size, "image_size": self.position_image_size},
            "projection_dim": self.projection_dim, "reduce_dim": self.reduce_dim,
            "extract_layers": list(self.extract_layers), "decoder_num_attention_heads": self.decoder_heads,
            "decoder_intermediate_size": self.decoder_mlp, "conditional_layer": self.conditional_layer,
        }  # fmt: skip


@dataclass(frozen=True)
class CRISArch:
    """open_clip's CLIP ModifiedResNet + text transformer, and CRIS's FPN neck, decoder and projector widths."""

    image_size: int
    rn_layers: tuple[int, int, int, int]
    rn_width: int  # stem width of the ModifiedResNet
    rn_head_width: int  # attention-pool head width (heads = 32 * rn_width // rn_head_width)
    embed_dim: int  # attention-pool output and text projection width
    text: Tower  # open_clip: mlp = 4 * width
    fpn_in: tuple[int, int, int]
    fpn_out: tuple[int, int, int]
    state_dim: int
    decoder_heads: int
    decoder_ffn: int
    decoder_layers: int = 3
    context_length: int = CONTEXT_LENGTH
    vocab_size: int = VOCAB_SIZE

    @property
    def max_prompt_depth(self) -> int:
        """Text prompts only: one fresh row per text layer."""
        return self.text.layers


CLIPSEG = CLIPSegArch(
    image_size=352, text=Tower(512, 12, 8, 2048), vision=Tower(768, 12, 12, 3072), patch_size=16,
    position_image_size=224, projection_dim=512, reduce_dim=64, extract_layers=(3, 6, 9), decoder_heads=4,
    decoder_mlp=2048,
)  # fmt: skip
"""CIDAS/clipseg-rd64: CLIP ViT-B/16 + 12-layer text tower, reduce_dim 64 (~150.8 M params)."""

CLIPSEG_TINY = CLIPSegArch(
    image_size=64, text=Tower(32, 4, 2, 64), vision=Tower(32, 4, 2, 64), patch_size=8, position_image_size=64,
    projection_dim=32, reduce_dim=16, extract_layers=(0, 1, 2), decoder_heads=2, decoder_mlp=32,
)  # fmt: skip
"""CLIPSeg's structure at width 32 (4+4 layers, patch 8, 64 px), full vocabulary."""

CRIS = CRISArch(
    image_size=416, rn_layers=(3, 4, 6, 3), rn_width=64, rn_head_width=64, embed_dim=1024,
    text=Tower(512, 12, 8, 2048), fpn_in=(512, 1024, 1024), fpn_out=(256, 512, 1024), state_dim=1024,
    decoder_heads=8, decoder_ffn=2048,
)  # fmt: skip
"""CRIS with open_clip's RN50 (the reference widths)."""

CRIS_TINY = CRISArch(
    image_size=64, rn_layers=(1, 1, 1, 1), rn_width=8, rn_head_width=32, embed_dim=64, text=Tower(32, 4, 2, 128),
    fpn_in=(64, 128, 64), fpn_out=(16, 32, 64), state_dim=64, decoder_heads=2, decoder_ffn=64,
)  # fmt: skip
"""CRIS's structure at 64 px with tiny widths, for tests."""


@dataclass(frozen=True)
class Sam3Arch:
    """transformers' ``Sam3Config`` for one catalog entry: Perception-Encoder ViT (windowed attention with a few
    global layers, 2-D RoPE) + FPN neck, CLIP text tower (32 positions), DETR encoder/decoder and mask decoder."""

    image_size: int  # the ViT's global-attention RoPE grid is built for exactly this resolution
    vit: Tower
    patch_size: int
    window_size: int  # windowed layers attend within window_size x window_size patches
    global_layers: tuple[int, ...]  # 0-based ViT layers with global attention
    position_image_size: int  # resolution of the learned position table (tiled, not interpolated)
    text: Tower
    text_projection_dim: int  # CLIP's own pooled projection (in the weights; SAM 3's path does not read it)
    fusion: Tower  # DETR encoder (= fusion width of the FPN, DETR decoder and mask decoder)
    decoder_layers: int
    queries: int
    geometry_layers: int
    context_length: int = 32
    vocab_size: int = VOCAB_SIZE

    @property
    def max_prompt_depth(self) -> int:
        """Text prompts: one fresh row per text layer."""
        return self.text.layers

    @property
    def fusion_layers(self) -> int:
        """DETR encoder layers: the depth bound of prompts in the fusion encoder (detr_vpt)."""
        return self.fusion.layers

    @property
    def grid(self) -> int:
        """Patches per side at ``image_size``."""
        return self.image_size // self.patch_size

    @property
    def vision_tokens(self) -> int:
        """ViT tokens per image (no class token): 5,184 at 1008 px."""
        return self.grid**2

    @property
    def mask_size(self) -> int:
        """Side of the semantic-segmentation logits (the FPN's x4 level): 288 at 1008 px."""
        return self.grid * 4

    def transformers_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``transformers.Sam3Config``."""
        vit, text, fusion, g = self.vit, self.text, self.fusion, self.grid
        block = {"hidden_size": fusion.width, "num_attention_heads": fusion.heads, "intermediate_size": fusion.mlp}
        return {
            "vision_config": {
                "backbone_config": {
                    "model_type": "sam3_vit_model", "hidden_size": vit.width, "intermediate_size": vit.mlp,
                    "num_hidden_layers": vit.layers, "num_attention_heads": vit.heads, "image_size": self.image_size,
                    "patch_size": self.patch_size, "window_size": self.window_size,
                    "global_attn_indexes": list(self.global_layers), "pretrain_image_size": self.position_image_size,
                },
                "fpn_hidden_size": fusion.width, "backbone_feature_sizes": [[4 * g, 4 * g], [2 * g, 2 * g], [g, g]],
            },
            "text_config": {"vocab_size": self.vocab_size, "hidden_size": text.width, "intermediate_size": text.mlp,
                            "projection_dim": self.text_projection_dim, "num_hidden_layers": text.layers,
                            "num_attention_heads": text.heads, "max_position_embeddings": self.context_length,
                            "hidden_act": "gelu"},
            "geometry_encoder_config": {**block, "num_layers": self.geometry_layers},
            "detr_encoder_config": {**block, "num_layers": fusion.layers},
            "detr_decoder_config": {**block, "num_layers": self.decoder_layers, "num_queries": self.queries},
            "mask_decoder_config": {"hidden_size": fusion.width, "num_attention_heads": fusion.heads},
        }  # fmt: skip


SAM3 = Sam3Arch(
    image_size=1008, vit=Tower(1024, 32, 16, 4736), patch_size=14, window_size=24, global_layers=(7, 15, 23, 31),
    position_image_size=336, text=Tower(1024, 24, 16, 4096), text_projection_dim=512, fusion=Tower(256, 6, 8, 2048),
    decoder_layers=6, queries=200, geometry_layers=3,
)  # fmt: skip
"""facebook/sam3 (transformers' Sam3Config defaults): ViT-L-like PE backbone at 1008 px, 24-layer CLIP text tower."""

SAM3_TINY = Sam3Arch(
    image_size=112, vit=Tower(32, 4, 2, 64), patch_size=14, window_size=4, global_layers=(1, 3),
    position_image_size=56, text=Tower(32, 4, 2, 64), text_projection_dim=32, fusion=Tower(32, 3, 2, 64),
    decoder_layers=2, queries=8, geometry_layers=1,
)  # fmt: skip
"""SAM 3's structure at width 32 (windowed + global ViT layers, tiled positions), 112 px, full vocabulary."""

ARCHITECTURES: dict[str, CLIPSegArch | CRISArch | Sam3Arch] = {
    "clipseg": CLIPSEG,
    "clipseg-tiny": CLIPSEG_TINY,
    "cris": CRIS,
    "cris-tiny": CRIS_TINY,
    "sam3": SAM3,
    "sam3-tiny": SAM3_TINY,
}
