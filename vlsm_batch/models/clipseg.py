"""CLIPSeg (transformers) with prompt learners: builders named in the model catalog.

transformers' ``CLIPSegForImageSegmentation.forward`` runs the text encoder under ``no_grad`` and offers no hook for
inserting tokens, so the three stages are re-run here from the model's own modules:

* vision: only up to the deepest extract layer (layers above it feed nothing: 10 of 12 layers at full size),
  position embeddings interpolated by transformers' ``interpolate_pos_encoding`` (bicubic, CLS kept); visual
  prompts appended after patch + position embeddings, before the pre-LayerNorm; run without gradient unless
  visual prompts (or finetuning) need it. CoCoOp's image embedding comes from the stock prompt-free pass over all
  12 layers (the extract-layer activations are collected on the way);
* text: prompt tokens after BOS, positions added after insertion, deep prompts written into fresh tensors (no
  in-place overwrite, so no layer output is changed after the fact), pooled at ``argmax(ids) + n``;
* decoder: frozen weights but run with gradient so it reaches the conditional embedding and the visual prompts;
  visual prompt tokens pass through the decoder layers and are dropped (with CLS) just before the reshape; the
  feature map before the transposed convolution is kept for the optional learnable upsampler.

Both towers use the same ``num_context`` n. ``finetune`` builds the same wrapper without prompts and with every
weight trainable and in train mode. ``decoder_finetune`` trains the decoder only (FiLM, reduces, decoder layers,
transposed convolution): both CLIP encoders stay frozen in eval mode and run without gradient, which is what the
original's "E2E" baseline trained through ``CLIPSegForImageSegmentation.forward`` (docs/science.md §4.4).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch
from torch import nn
from transformers import CLIPSegConfig, CLIPSegForImageSegmentation, CLIPSegTextConfig, CLIPSegVisionConfig

from ..strategies.impl import LearnerContext, PromptLearner, Prompts
from . import placement
from .configs import CLIPSEG, CLIPSEG_TINY
from .prompted import LearnableUpsampler, ModelLoadError, PromptedSegmenter, freeze, seeded, wrap_segmenter
from .tokenizer import load_tokenizer, offline_clip_tokenizer

DEFAULT_WEIGHTS = "CIDAS/clipseg-rd64"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_ATTENTION = "sdpa"  # the text mask built below is a boolean 4-D mask (sdpa) or an additive one (eager)


def clipseg_config() -> CLIPSegConfig:
    """CIDAS/clipseg-rd64's architecture (``configs.CLIPSEG``): CLIP ViT-B/16 + 12-layer text tower, reduce_dim 64."""
    return CLIPSegConfig(**CLIPSEG.transformers_kwargs())


def clipseg_tiny_config() -> CLIPSegConfig:
    """Same structure at width 32 (``configs.CLIPSEG_TINY``); full vocabulary so real token ids work."""
    return CLIPSegConfig(**CLIPSEG_TINY.transformers_kwargs())


def _sub_configs(config: CLIPSegConfig) -> tuple[CLIPSegTextConfig, CLIPSegVisionConfig]:
    """The text and vision configs. CLIPSegConfig builds both classes from dicts or defaults at init; its field
    annotations still list ``dict`` and ``None``."""
    text, vision = config.text_config, config.vision_config
    assert isinstance(text, CLIPSegTextConfig) and isinstance(vision, CLIPSegVisionConfig)
    return text, vision


def run_layer(layer: nn.Module, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Call a transformers encoder/decoder layer; older releases return a tuple."""
    out = layer(hidden, mask)
    return out[0] if isinstance(out, tuple) else out


def text_mask(attention_mask: torch.Tensor, implementation: str, dtype: torch.dtype) -> torch.Tensor:
    """Causal & key-padding mask (B, 1, L, L) for the text tower: boolean for sdpa, additive for eager."""
    length = attention_mask.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=attention_mask.device).tril()
    allowed = causal[None, None] & attention_mask[:, None, None, :].bool()
    if implementation == "eager":
        return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
            ~allowed, torch.finfo(dtype).min
        )
    return allowed


class CLIPSegPromptedSegmenter(PromptedSegmenter):
    """CLIPSeg, frozen, with the prompts of one strategy and the optional learnable upsampler."""

    def __init__(
        self,
        model: CLIPSegForImageSegmentation,
        tokenizer: Any,
        *,
        image_size: int,
        learner: PromptLearner | None,
        learnable_upsampler: bool,
        name: str,
        strategy: str,
        finetune: bool = False,
        decoder_only: bool = False,
    ):
        if finetune and decoder_only:
            raise ValueError("finetune trains every weight; decoder_only trains the decoder alone: pick one")
        freeze(model)
        if finetune:
            model.requires_grad_(True).train()
        if decoder_only:
            model.decoder.requires_grad_(True).train()
        config = model.config
        text_cfg, vision_cfg = _sub_configs(config)
        patch_size = vision_cfg.patch_size
        if not isinstance(patch_size, int):
            raise ModelLoadError(f"CLIPSeg patch size {patch_size!r} is not supported; use a square (int) patch size")
        head = LearnableUpsampler(config.reduce_dim) if learnable_upsampler else None
        super().__init__(
            tokenizer=tokenizer,
            image_size=image_size,
            image_mean=IMAGENET_MEAN,
            image_std=IMAGENET_STD,
            max_text_tokens=text_cfg.max_position_embeddings,
            learner=learner,
            head=head,
            name=name,
            strategy=strategy,
        )
        self.clipseg = model
        self.finetune = finetune
        self.decoder_only = decoder_only
        self.extract_layers = tuple(config.extract_layers)
        self.patch_size = patch_size
        implementation = text_cfg._attn_implementation or "eager"
        if implementation not in ("sdpa", "eager"):
            raise ModelLoadError(f"attention implementation {implementation!r} is not supported; use sdpa or eager")
        self._attn_implementation = implementation

    @property
    def trains_decoder(self) -> bool:
        """The trial trains the decoder's weights (finetune, decoder_finetune): a pack cannot share the decoder."""
        return self.finetune or self.decoder_only

    def frozen_modules(self) -> list[nn.Module]:
        if self.finetune:
            return []
        return [self.clipseg.clip] if self.decoder_only else [self.clipseg]

    def unused_parameter_names(self) -> list[str]:
        """Weights the prompt-free segmentation forward never reads, so they never get a gradient, even under
        ``finetune``: vision layers above the deepest extract layer, the post-LayerNorm, the visual projection and
        the logit scale (only CoCoOp's frozen pooled pass runs the first three)."""
        layers = len(self.clipseg.clip.vision_model.encoder.layers)
        above = range(max(self.extract_layers) + 1, layers)
        unused = [f"clipseg.clip.vision_model.encoder.layers.{i}." for i in above]
        unused += ["clipseg.clip.vision_model.post_layernorm.", "clipseg.clip.visual_projection."]
        names = [n for n, _ in self.named_parameters() if n.startswith(tuple(unused))]
        return names + (["clipseg.clip.logit_scale"] if hasattr(self.clipseg.clip, "logit_scale") else [])

    def describe_prompts(self) -> list[str]:
        if self.finetune:
            params = dict(self.named_parameters())
            unused = sum(params[n].numel() for n in self.unused_parameter_names())
            top = max(self.extract_layers) + 2
            layers = len(self.clipseg.clip.vision_model.encoder.layers)
            above = f"vision layer {top}" if top == layers else f"vision layers {top}..{layers}"
            return [
                f"no prompts: every weight of {self.name} is trained ({self.strategy}); {unused:,} of them "
                f"({above}, post-LayerNorm, visual projection, logit scale) feed nothing the segmentation reads "
                "and never receive a gradient"
            ]
        if not self.decoder_only:
            return super().describe_prompts()
        return [
            f"no prompts: only the decoder of {self.name} is trained (FiLM, reduces, decoder layers, transposed "
            f"convolution; {self.strategy}); the CLIP image and text encoders are frozen and run without gradient, "
            "as in the original's CLIPSeg E2E baseline"
        ]

    @property
    def num_vision_context(self) -> int:
        """Visual prompt tokens appended per image (0 without visual prompts)."""
        learner = self.learner
        return learner.num_context if learner is not None and learner.vision_rows else 0

    def encode_image(
        self, pixel_values: torch.Tensor, prompts: Sequence[torch.Tensor] = (), pooled: bool = False
    ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """Outputs of the extract layers (transformers' ``hidden_states[i + 1]``), visual prompts included, and
        with ``pooled`` the projected CLS embedding of the full tower (only without prompts).

        ``prompts[k]`` (1, n, width) is appended at the input of layer k+1 (replacing what layer k produced at
        those positions, in a new tensor). Runs without gradient when nothing upstream of the decoder trains.
        """
        vision = self.clipseg.clip.vision_model
        n = prompts[0].shape[1] if prompts else 0
        if pooled and n:
            raise ValueError("the pooled image embedding is defined on the prompt-free pass only")
        last = len(vision.encoder.layers) - 1 if pooled else max(self.extract_layers)
        with torch.set_grad_enabled(torch.is_grad_enabled() and (n > 0 or self.finetune)):
            embedded = vision.embeddings(pixel_values, interpolate_pos_encoding=True)
            outputs, hidden = self.vision_layers(embedded, [prompts], last)
            embeds = None
            if pooled:
                embeds = self.clipseg.clip.visual_projection(vision.post_layernorm(hidden[:, 0]))
        return outputs, embeds

    def vision_layers(
        self, embedded: torch.Tensor, members: Sequence[Sequence[torch.Tensor]], last: int | None = None
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The vision tower from the embedded image (B, T, w) for K members' visual prompts of equal n (all with
        rows, or one without): (extract-layer outputs (K*B, T+n, w), output of layer ``last``, default the deepest
        extract layer)."""
        vision = self.clipseg.clip.vision_model
        last = max(self.extract_layers) if last is None else last
        hidden = vision.pre_layrnorm(placement.append_vision(embedded, [rows[0] for rows in members if rows]))
        outputs: dict[int, torch.Tensor] = {}
        for i, layer in enumerate(vision.encoder.layers[: last + 1]):
            hidden = run_layer(layer, hidden, None)
            if i in self.extract_layers:
                outputs[i] = hidden
            # fresh tokens for layer i+2; the output of layer i+1 is kept as is
            hidden = placement.replace_vision(hidden, [placement.row_for(rows, i + 1) for rows in members])
        return [outputs[i] for i in self.extract_layers], hidden

    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompts: Sequence[torch.Tensor] = ()
    ) -> torch.Tensor:
        """Projected text embedding (B, projection_dim); ``prompts[k]`` (1 or B, n, width) enters layer k+1."""
        return self.encode_text_members(input_ids, attention_mask, [prompts])

    def encode_text_members(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, members: Sequence[Sequence[torch.Tensor]]
    ) -> torch.Tensor:
        """:meth:`encode_text` for K members' text prompts of equal n at once (all with rows, or one without),
        each block of the batch with its own prompts: (K*B, projection_dim), member-major."""
        text = self.clipseg.clip.text_model
        embeddings = text.embeddings
        firsts = [rows[0] for rows in members if rows]
        input_ids, hidden, attention_mask, n = placement.embed_text(
            embeddings.token_embedding, embeddings.position_embedding.weight, input_ids, attention_mask, firsts
        )
        mask = text_mask(attention_mask, self._attn_implementation, hidden.dtype)
        for k, layer in enumerate(text.encoder.layers, start=1):
            hidden = run_layer(layer, hidden, mask)
            # fresh tokens for layer k+1, in a new tensor: the output of layer k is left untouched
            hidden = placement.replace_text(hidden, [placement.row_for(rows, k) for rows in members])
        pooled = placement.pool_eos(hidden, input_ids, n)
        return self.clipseg.clip.text_projection(text.final_layer_norm(pooled))

    def decode(
        self,
        activations: Sequence[torch.Tensor],
        conditional: torch.Tensor,
        grid: tuple[int, int],
        num_vision_context: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """transformers' ``CLIPSegDecoder.forward``, also returning the (B, reduce_dim, h, w) feature map.

        The last ``num_vision_context`` tokens (visual prompts) go through the decoder layers and are dropped, with
        CLS, before the reshape."""
        decoder = self.clipseg.decoder
        output: torch.Tensor | None = None
        for i, (activation, layer, reduce) in enumerate(
            zip(activations[::-1], decoder.layers, decoder.reduces, strict=False)
        ):
            output = reduce(activation) if output is None else reduce(activation) + output
            if i == decoder.conditional_layer:  # FiLM with the text embedding
                output = decoder.film_mul(conditional)[:, None] * output + decoder.film_add(conditional)[:, None]
            output = run_layer(layer, output, None)
        assert output is not None
        output = output[:, 1 : output.shape[1] - num_vision_context]
        features = output.transpose(1, 2).reshape(output.shape[0], output.shape[2], *grid)
        return decoder.transposed_convolution(features), features

    # -- packing interface -------------------------------------------------------------------------------------------
    def member(self, strategy: str, params: Mapping[str, Any]) -> CLIPSegPromptedSegmenter:
        return wrap_clipseg(self.clipseg, self.tokenizer, self.name, strategy, params)

    def shared_image(self, pixel_values: torch.Tensor) -> tuple[Any, torch.Tensor | None]:
        learner = self.learner
        with torch.no_grad():
            return self.encode_image(pixel_values, pooled=learner is not None and learner.needs_image_features)

    def logits_from_shared(
        self,
        shared: Any,
        prompts: Prompts,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
    ) -> torch.Tensor:
        grid = (pixel_values.shape[-2] // self.patch_size, pixel_values.shape[-1] // self.patch_size)
        conditional = self.encode_text(input_ids, attention_mask, prompts.text)
        logits, features = self.decode(shared, conditional, grid, 0)
        return self.head(features, logits) if self.head is not None else logits

    def forward(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """Logits (B, 1, H, W) for normalised ``pixel_values`` (B, 3, H, W) and tokenised prompts."""
        grid = (pixel_values.shape[-2] // self.patch_size, pixel_values.shape[-1] // self.patch_size)
        learner = self.learner
        if learner is None:
            prompts = Prompts()
            activations, _ = self.encode_image(pixel_values)
        elif learner.needs_image_features:  # CoCoOp: text-only prompts conditioned on the stock image embedding
            activations, image_features = self.encode_image(pixel_values, pooled=True)
            prompts = learner(image_features)
        else:
            prompts = learner()  # the joint work of multimodal learners runs once per forward
            activations, _ = self.encode_image(pixel_values, prompts.vision)
        # Without text prompts and outside finetune nothing upstream of the decoder trains: no graph for the text
        # tower (decoder_finetune's encoders run without gradient, as under transformers' no_grad).
        with torch.set_grad_enabled(torch.is_grad_enabled() and (bool(prompts.text) or self.finetune)):
            conditional = self.encode_text(input_ids, attention_mask, prompts.text)
        n_vision = prompts.vision[0].shape[1] if prompts.vision else 0
        logits, features = self.decode(activations, conditional, grid, n_vision)
        if self.head is not None:
            # TuneVLSeg created this head for CoOp/CoCoOp on CLIPSeg but never called it, and added it to the
            # logits without the blend for VPT (docs/science.md §4.3); here `learnable_upsampler: true` means the
            # blended head, (1 - r)·frozen + r·head, for every strategy alike.
            logits = self.head(features, logits)
        return logits


def _random_model(config: CLIPSegConfig) -> CLIPSegForImageSegmentation:
    config._attn_implementation = _ATTENTION
    return seeded(lambda: CLIPSegForImageSegmentation(config))


def _pretrained_model(source: str) -> CLIPSegForImageSegmentation:
    """CLIPSeg from a hub id or a ``save_pretrained`` folder, refused unless every weight came from the files (a
    plain CLIP checkpoint, without ``decoder.*``, would otherwise train with a random decoder)."""
    from .checkpoints import load_pretrained

    def decoder(missing: list[str]) -> str:
        plain_clip = any(k.startswith("decoder.") for k in missing) and not any(k.startswith("clip.") for k in missing)
        return " (decoder weights: this looks like a plain CLIP checkpoint)" if plain_clip else ""

    model = load_pretrained(
        CLIPSegForImageSegmentation, source, label="CLIPSeg", attention=_ATTENTION,
        unreachable="Pass a local checkpoint folder in the spec's `weights:`, or download the model beforehand and "
        "set HF_HUB_OFFLINE=1",
        full="name a full CLIPSeg checkpoint (CLIPSegForImageSegmentation.save_pretrained, e.g. "
        f"{DEFAULT_WEIGHTS}) in `weights:`",
        missing_note=decoder,
    )  # fmt: skip
    return cast(CLIPSegForImageSegmentation, model)


def wrap_clipseg(
    model: CLIPSegForImageSegmentation, tokenizer: Any, name: str, strategy: str, params: Mapping[str, Any]
) -> CLIPSegPromptedSegmenter:
    """Freeze ``model`` and add the learner of ``strategy`` (and the head); ``name`` is its catalog entry."""
    text_cfg, vision_cfg = _sub_configs(model.config)
    ctx = LearnerContext(
        model_name=name,
        text_width=text_cfg.hidden_size,
        text_layers=text_cfg.num_hidden_layers,
        vision_width=vision_cfg.hidden_size,
        vision_layers=vision_cfg.num_hidden_layers,
        token_embedding=model.clip.text_model.embeddings.token_embedding,
        tokenizer=tokenizer,
        vision_run_layers=max(model.config.extract_layers) + 1,
        image_feature_dim=model.config.projection_dim,
    )
    return wrap_segmenter(
        CLIPSegPromptedSegmenter, model, ctx, strategy, params, decoder_only=strategy == "decoder_finetune"
    )


def build_clipseg(
    strategy: str, params: Mapping[str, Any], weights: str | None = None, random_init: bool = False
) -> CLIPSegPromptedSegmenter:
    """CLIPSeg rd64 at 352 px: pretrained from ``weights`` (hub id or local folder, default CIDAS/clipseg-rd64),
    or with ``random_init`` the same architecture, seeded, with the offline tokenizer (no download)."""
    if random_init:
        model, tokenizer = _random_model(clipseg_config()), offline_clip_tokenizer()
    else:
        source = weights or DEFAULT_WEIGHTS
        model, tokenizer = _pretrained_model(source), load_tokenizer(source)
    return wrap_clipseg(model, tokenizer, "clipseg", strategy, params)


def build_clipseg_tiny(
    strategy: str, params: Mapping[str, Any], weights: str | None = None, random_init: bool = True
) -> CLIPSegPromptedSegmenter:
    """Tiny CLIPSeg at 64 px, always random (seeded) weights; for tests and the quickstart."""
    if weights is not None:
        raise ModelLoadError("clipseg-tiny has no pretrained weights: leave `weights:` unset")
    return wrap_clipseg(
        _random_model(clipseg_tiny_config()), offline_clip_tokenizer(), "clipseg-tiny", strategy, params
    )
