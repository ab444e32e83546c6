"""SAM 3 (transformers' ``Sam3Model``) as a class-prompted binary segmenter with prompt learners (docs/science.md §9).

The trial's mask is SAM 3's **semantic segmentation head** (``semantic_seg``: one logit map at the FPN's x4
level, 288 x 288 at 1008 px), which transformers' ``Sam3Processor.post_process_semantic_segmentation`` documents as
the semantic output (sigmoid, bilinear resize, threshold 0.5). It is what a binary class mask is; the instance path
(200 DETR queries, boxes, presence score, thresholded union of instance masks) answers "which objects" and feeds
nothing the semantic head reads, so the DETR decoder, box head, scoring head and geometry encoder are not run.
The semantic logits are resized bilinearly (``align_corners=False``, as the post-processor does) to the input size;
the loss and the metrics then run as for every model.

The stages are re-run from the model's own modules, in the order ``Sam3Model.forward`` runs them (a test checks
zero-shot logits against ``Sam3Model.forward(...).semantic_seg``):

* image: ``get_vision_features`` (PE ViT + FPN neck), frozen and without gradient for every strategy, so a pack
  computes it once per batch for all members; CoCoOp conditions on the mean of the ViT's last hidden states;
* text: CLIP's text tower re-run with prompt tokens after BOS (positions added after insertion, causal +
  key-padding mask, deep rows written into new tensors: the same ``placement`` code as CLIPSeg), ``final_layer_norm``
  and SAM 3's ``text_projection`` on every token: the prompt tokens are part of the prompt features (mask 1);
* fusion: the DETR encoder's layers (self-attention over the image tokens with sine positions, cross-attention
  to the prompt features); ``detr_vpt`` appends its tokens here (position 0) and drops them after the encoder;
* mask decoder: prompt cross-attention, pixel decoder over the FPN levels with the encoder output, semantic
  projection. The optional learnable upsampler (CRIS's: 1x1 conv to 64, bilinear, 5x5 conv) reads the pixel
  embedding.

Text prompts are the dataset's class prompt as a noun phrase (SAM 3's prompt format: no "." is appended, unlike the
CLIP-based models). ``finetune`` trains what is practical and on the mask path: the text tower, the text
projection, the DETR encoder and the mask decoder; the ViT and FPN neck stay frozen (backpropagating through 32 ViT
layers at 5,184 tokens per image is the full-fine-tune cost the medical SAM 3 papers pay; here it is out of a
prompt-tuning study's budget), and the parts that feed no semantic mask are frozen too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, cast

import torch
from torch import nn
from torch.nn import functional as F
from transformers import Sam3Config, Sam3Model
from transformers.masking_utils import create_bidirectional_mask

from ..strategies.impl import LearnerContext, PromptLearner, Prompts
from . import placement
from .clipseg import run_layer, text_mask
from .configs import SAM3, SAM3_TINY, Sam3Arch
from .cris_layers import CRISUpsampler
from .prompted import ModelLoadError, PromptedSegmenter, freeze, seeded, wrap_segmenter
from .tokenizer import load_tokenizer, offline_clip_tokenizer

DEFAULT_WEIGHTS = "facebook/sam3"
_ATTENTION = "sdpa"
# parts of Sam3Model that feed no semantic mask (instance queries, boxes, presence and exemplar prompts)
_OFF_PATH = ("geometry_encoder", "detr_decoder", "dot_product_scoring")


def sam3_config(arch: Sam3Arch) -> Sam3Config:
    """transformers' ``Sam3Config`` for a catalog architecture (``configs.SAM3``: facebook/sam3's)."""
    return Sam3Config(**arch.transformers_kwargs())


def sub_configs(config: Sam3Config) -> tuple[Any, Any, Any]:
    """(text, ViT, DETR encoder) configs. ``Sam3Config`` builds them from dicts or defaults at init; its field
    annotations still list ``dict`` and ``None``."""
    text, vision, fusion = config.text_config, config.vision_config, config.detr_encoder_config
    if text is None or vision is None or fusion is None or isinstance(vision, dict):
        raise ModelLoadError("SAM 3's config lacks its text, vision or DETR encoder part")
    return text, vision.backbone_config, fusion


class Sam3Image:
    """The frozen image pass of one batch: FPN levels (x4, x2, x1) with their sine positions, and the ViT mean."""

    def __init__(self, fpn: tuple[torch.Tensor, ...], positions: tuple[torch.Tensor, ...], pooled: torch.Tensor):
        self.fpn = fpn
        self.positions = positions
        self.pooled = pooled


class Sam3PromptedSegmenter(PromptedSegmenter):
    """SAM 3, frozen (or its text-to-mask path trainable for ``finetune``), with the prompts of one strategy."""

    sentence_end = ""  # SAM 3 takes noun phrases as they are

    def __init__(
        self,
        model: Sam3Model,
        tokenizer: Any,
        *,
        image_size: int,
        learner: PromptLearner | None,
        learnable_upsampler: bool,
        name: str,
        strategy: str,
        finetune: bool = False,
        image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5),
        image_std: tuple[float, float, float] = (0.5, 0.5, 0.5),
    ):
        freeze(model)
        if finetune:
            for part in (model.text_encoder.text_model, model.text_projection, model.detr_encoder, model.mask_decoder):
                part.requires_grad_(True).train()
        text, vit, fusion_config = sub_configs(model.config)
        fusion = fusion_config.hidden_size
        # CRIS's head shape (1x1 conv to 64 first): a 256-channel map upsampled to 1008 px would be 1 GB per image
        head = CRISUpsampler(fusion) if learnable_upsampler else None
        super().__init__(
            tokenizer=tokenizer,
            image_size=image_size,
            image_mean=image_mean,
            image_std=image_std,
            max_text_tokens=text.max_position_embeddings,
            learner=learner,
            head=head,
            name=name,
            strategy=strategy,
        )
        self.sam3 = model
        self.finetune = finetune
        self.patch_size = vit.patch_size
        implementation = text._attn_implementation or "eager"
        if implementation not in ("sdpa", "eager"):
            raise ModelLoadError(f"attention implementation {implementation!r} is not supported; use sdpa or eager")
        self._attn_implementation = implementation

    @property
    def trains_decoder(self) -> bool:
        """The trial trains weights of the shared model (finetune): a pack cannot share them."""
        return self.finetune

    def frozen_modules(self) -> list[nn.Module]:
        if not self.finetune:
            return [self.sam3]
        model = self.sam3
        return [model.vision_encoder, model.text_encoder.text_projection, *(getattr(model, n) for n in _OFF_PATH)]

    def describe_prompts(self) -> list[str]:
        if not self.finetune:
            lines = super().describe_prompts()
            if self.head is not None:
                lines[-1] = (
                    "head: learnable upsampler on the mask decoder's pixel embedding (1x1 conv to 64, bilinear, "
                    "5x5 conv), blended (1 - r)·frozen + r·head, r learnable (init 0.5)"
                )
            return lines
        return [
            f"no prompts: {self.name}'s text tower, text projection, DETR encoder and mask decoder are trained "
            f"({self.strategy}); the PE ViT and FPN neck stay frozen and run without gradient, and the DETR decoder, "
            "box, scoring and geometry heads (no part of the semantic mask) are frozen"
        ]

    # -- stages ----------------------------------------------------------------------------------------------------
    def encode_image(self, pixel_values: torch.Tensor) -> Sam3Image:
        """``Sam3Model.get_vision_features`` without gradient: the three FPN levels the mask path reads (the x0.5
        level feeds nothing here), their positions, and the mean ViT state (CoCoOp's image feature)."""
        with torch.no_grad():
            vision = self.sam3.get_vision_features(pixel_values=pixel_values)
        return Sam3Image(
            tuple(vision.fpn_hidden_states[:-1]),
            tuple(vision.fpn_position_encoding[:-1]),
            vision.last_hidden_state.float().mean(dim=1),
        )

    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompts: list[torch.Tensor] | tuple = ()
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt features (B, L+n, fusion width) and their mask (B, L+n; True = a token) for the DETR stages:
        ``get_text_features`` with ``prompts[k]`` entering text layer k+1."""
        text = self.sam3.text_encoder.text_model
        embeddings = text.embeddings
        _, hidden, attention_mask, _ = placement.embed_text(
            embeddings.token_embedding, embeddings.position_embedding.weight, input_ids, attention_mask, prompts[:1]
        )
        mask = text_mask(attention_mask, self._attn_implementation, hidden.dtype)
        for k, layer in enumerate(text.encoder.layers, start=1):
            hidden = run_layer(layer, hidden, mask)
            hidden = placement.replace_text(hidden, [placement.row_for(prompts, k)])
        features = self.sam3.text_projection(text.final_layer_norm(hidden))
        return features, attention_mask.bool()

    def fuse(
        self, image: Sam3Image, features: torch.Tensor, mask: torch.Tensor, rows: list[torch.Tensor] | tuple = ()
    ) -> torch.Tensor:
        """The DETR encoder over the x1 level (B, HW, C) with ``rows[k]`` appended at the input of layer k+1;
        the appended tokens are dropped from the result."""
        encoder = self.sam3.detr_encoder
        level, pos = image.fpn[-1], image.positions[-1]
        hidden = level.flatten(2).transpose(1, 2)
        positions = pos.flatten(2).transpose(1, 2).to(hidden.dtype)
        tokens = hidden.shape[1]
        if rows:
            hidden = placement.append_vision(hidden, rows[:1])
            slots = positions.new_zeros(positions.shape[0], rows[0].shape[1], positions.shape[2])
            positions = torch.cat([positions, slots], 1)
        cross = create_bidirectional_mask(
            config=encoder.config, inputs_embeds=hidden, attention_mask=mask, encoder_hidden_states=features
        )
        for k, layer in enumerate(encoder.layers, start=1):
            hidden = layer(hidden, prompt_feats=features, vision_pos_encoding=positions, prompt_cross_attn_mask=cross)
            hidden = placement.replace_vision(hidden, [placement.row_for(rows, k)])
        return hidden[:, :tokens]

    def segment(
        self, image: Sam3Image, encoded: torch.Tensor, features: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The mask decoder's semantic path: (semantic logits (B, 1, 4g, 4g), pixel embedding (B, C, 4g, 4g))."""
        decoder = self.sam3.mask_decoder
        normed = decoder.prompt_cross_attn_norm(encoded)
        cross = create_bidirectional_mask(
            config=decoder.config, inputs_embeds=normed, encoder_hidden_states=features, attention_mask=mask
        )
        attended, _ = decoder.prompt_cross_attn(query=normed, key=features, value=features, attention_mask=cross)
        encoded = encoded + decoder.prompt_cross_attn_dropout(attended)
        pixels = decoder._embed_pixels(backbone_features=list(image.fpn), encoder_hidden_states=encoded)
        return decoder.semantic_projection(pixels), pixels

    def _prompts(self, image: Sam3Image) -> Prompts:
        learner = self.learner
        if learner is None:
            return Prompts()
        return learner(image.pooled) if learner.needs_image_features else learner()

    # -- packing interface -------------------------------------------------------------------------------------------
    def member(self, strategy: str, params: Mapping[str, Any]) -> Sam3PromptedSegmenter:
        return wrap_sam3(self.sam3, self.tokenizer, self.name, strategy, params, self.image_mean, self.image_std)

    def shared_image(self, pixel_values: torch.Tensor) -> tuple[Sam3Image, torch.Tensor | None]:
        image = self.encode_image(pixel_values)
        return image, image.pooled

    def logits_from_shared(
        self,
        shared: Any,
        prompts: Prompts,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
    ) -> torch.Tensor:
        features, mask = self.encode_text(input_ids, attention_mask, prompts.text)
        encoded = self.fuse(shared, features, mask, prompts.fusion)
        semantic, pixels = self.segment(shared, encoded, features, mask)
        logits = F.interpolate(semantic, size=pixel_values.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(pixels, logits) if self.head is not None else logits

    def forward(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """Logits (B, 1, H, W) for normalised ``pixel_values`` (B, 3, H, W) and tokenised class prompts."""
        image = self.encode_image(pixel_values)
        return self.logits_from_shared(image, self._prompts(image), pixel_values, input_ids, attention_mask)


# -- building --------------------------------------------------------------------------------------------------------
def wrap_sam3(
    model: Sam3Model,
    tokenizer: Any,
    name: str,
    strategy: str,
    params: Mapping[str, Any],
    image_mean: tuple[float, float, float],
    image_std: tuple[float, float, float],
) -> Sam3PromptedSegmenter:
    """Freeze ``model`` and add the learner of ``strategy`` (and the head); ``name`` is its catalog entry."""
    from . import get_model_info

    text, vit, fusion = sub_configs(model.config)
    info = get_model_info(name)
    ctx = LearnerContext(
        model_name=name,
        text_width=text.hidden_size,
        text_layers=text.num_hidden_layers,
        vision_width=vit.hidden_size,
        vision_layers=vit.num_hidden_layers,
        token_embedding=model.text_encoder.text_model.embeddings.token_embedding,
        tokenizer=tokenizer,
        image_feature_dim=vit.hidden_size,
        family="sam3",
        towers=info.prompt_towers,
        fusion_width=fusion.hidden_size,
        fusion_layers=fusion.num_layers,
        tower_notes=info.tower_notes,
    )
    return wrap_segmenter(
        Sam3PromptedSegmenter, model, ctx, strategy, params, image_mean=image_mean, image_std=image_std
    )


def _random_model(arch: Sam3Arch) -> Sam3Model:
    config = sam3_config(arch)
    config._attn_implementation = _ATTENTION
    return seeded(lambda: Sam3Model(config))


def _processor_facts(source: str, arch: Sam3Arch) -> tuple[int, tuple[float, ...], tuple[float, ...]]:
    """(input size, mean, std) from the checkpoint's image-processor config (``Sam3ImageProcessor``)."""
    from transformers import Sam3ImageProcessor

    try:
        processor = Sam3ImageProcessor.from_pretrained(source)
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        raise ModelLoadError(
            f"could not read SAM 3's image-processor config from {source!r} ({exc}): the weights folder needs "
            "processor_config.json or preprocessor_config.json (Sam3Processor.save_pretrained writes it)"
        ) from exc
    return _facts(processor, arch)


def _facts(processor: Any, arch: Sam3Arch) -> tuple[int, tuple[float, ...], tuple[float, ...]]:
    size = processor.size
    height, width = (size["height"], size["width"]) if "height" in size else (size["shortest_edge"],) * 2
    if height != width or height != arch.image_size:
        raise ModelLoadError(
            f"SAM 3's processor resizes to {height} x {width}, but the model's ViT is built for {arch.image_size} "
            "px square (its global-attention positions are fixed): use the processor config the weights came with"
        )
    return height, tuple(processor.image_mean), tuple(processor.image_std)


def _pretrained_model(source: str) -> Sam3Model:
    """SAM 3 from a hub id or a ``save_pretrained`` folder, refused unless every weight came from the files. The
    hub repository is gated: log in (``hf auth login``) after accepting the licence."""
    from .checkpoints import load_pretrained

    model = load_pretrained(
        Sam3Model, source, label="SAM 3", attention=_ATTENTION,
        unreachable="facebook/sam3 is gated: accept its licence on the Hugging Face hub, log in (`hf auth login`) "
        "and download it once (`hf download facebook/sam3 --local-dir DIR`), then set `weights: {sam3: DIR}` in the "
        "spec (or HF_HUB_OFFLINE=1 with the cache)",
        full=f"name a full SAM 3 checkpoint ({DEFAULT_WEIGHTS} or Sam3Model.save_pretrained) in `weights:`",
    )  # fmt: skip
    return cast(Sam3Model, model)


def build_sam3(
    strategy: str, params: Mapping[str, Any], weights: str | None = None, random_init: bool = False
) -> Sam3PromptedSegmenter:
    """SAM 3 at 1008 px: pretrained from ``weights`` (hub id or local folder, default facebook/sam3), its input
    size, normalisation and tokenizer from the same folder; with ``random_init`` the architecture of
    ``configs.SAM3``, seeded, with the processor defaults and the offline tokenizer (no download)."""
    if random_init:
        from transformers import Sam3ImageProcessor

        model, tokenizer = _random_model(SAM3), offline_clip_tokenizer()
        _, mean, std = _facts(Sam3ImageProcessor(), SAM3)
    else:
        source = weights or DEFAULT_WEIGHTS
        model = _pretrained_model(source)
        _, mean, std = _processor_facts(source, SAM3)
        tokenizer = load_tokenizer(source)
    return wrap_sam3(model, tokenizer, "sam3", strategy, params, _rgb(mean), _rgb(std))


def build_sam3_tiny(
    strategy: str, params: Mapping[str, Any], weights: str | None = None, random_init: bool = True
) -> Sam3PromptedSegmenter:
    """Tiny SAM 3 at 112 px, seeded random weights, the processor's defaults at that size; for tests."""
    from transformers import Sam3ImageProcessor

    if weights is not None:
        raise ModelLoadError("sam3-tiny has no pretrained weights: leave `weights:` unset")
    size = SAM3_TINY.image_size
    _, mean, std = _facts(Sam3ImageProcessor(size={"height": size, "width": size}), SAM3_TINY)
    model = _random_model(SAM3_TINY)
    return wrap_sam3(model, offline_clip_tokenizer(), "sam3-tiny", strategy, params, _rgb(mean), _rgb(std))


def _rgb(values: tuple[float, ...]) -> tuple[float, float, float]:
    if len(values) != 3:
        raise ModelLoadError(f"SAM 3's processor normalises {len(values)} channels; RGB (3) is expected")
    return (float(values[0]), float(values[1]), float(values[2]))
