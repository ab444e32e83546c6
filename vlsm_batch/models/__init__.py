"""Model catalog: light records (no torch) that validation and planning read; builders are imported lazily."""

from __future__ import annotations

from dataclasses import dataclass

from ..registry import Registry
from .configs import ARCHITECTURES, CLIPSegArch, Sam3Arch


@dataclass(frozen=True)
class ModelInfo:
    """What the spec layer needs to know about a VLSM without building it."""

    name: str
    family: str  # "clipseg" | "cris" | "sam3": which prompt-injection code applies
    description: str
    image_size: int  # training/eval resolution (square)
    text_layers: int
    vision_layers: int | None  # None: convolutional image encoder (no visual tokens)
    max_prompt_depth: int  # largest valid prompt_depth
    default_weights: str | None  # Hugging Face id or None (random init / local file required)
    builder: str  # "module:function", imported only when a trial is trained
    implemented: bool = True  # False: validate/plan accept it, submit refuses it
    text_width: int | None = None  # token width of the text tower
    vision_width: int | None = None  # token width of the vision transformer (None: convolutional)
    towers: frozenset[str] | None = None  # places prompt tokens can enter (None: text, and vision with a ViT)
    fusion_layers: int | None = None  # layers of an image-text fusion encoder that takes prompt tokens (SAM 3)
    max_num_context: int | None = None  # prompt tokens per row that still leave room for the class prompt
    tower_notes: tuple[tuple[str, str], ...] = ()  # (tower, why this model takes no prompts there)

    @property
    def joint_width(self) -> int | None:
        """Width of Shared-Attention's joint tokens (text + vision), None without a vision transformer."""
        return self.text_width + self.vision_width if self.text_width and self.vision_width else None

    @property
    def prompt_towers(self) -> frozenset[str]:
        """Towers that accept prompt tokens: a convolutional image encoder takes none."""
        if self.towers is not None:
            return self.towers
        return frozenset({"text", "vision"} if self.vision_layers else {"text"})


MODELS: Registry[ModelInfo] = Registry("model")


def _info(name: str, description: str, default_weights: str | None, builder: str) -> ModelInfo:
    """The catalog record of ``name``, every architecture fact read from its one config in ``models.configs``."""
    arch = ARCHITECTURES[name]
    if isinstance(arch, Sam3Arch):
        return _sam3_info(name, description, default_weights, builder, arch)
    vision = arch.vision if isinstance(arch, CLIPSegArch) else None
    return ModelInfo(
        name=name,
        family="clipseg" if isinstance(arch, CLIPSegArch) else "cris",
        description=description,
        image_size=arch.image_size,
        text_layers=arch.text.layers,
        vision_layers=vision.layers if vision else None,
        max_prompt_depth=arch.max_prompt_depth,
        default_weights=default_weights,
        builder=builder,
        text_width=arch.text.width,
        vision_width=vision.width if vision else None,
        max_num_context=arch.context_length - 3,  # BOS, EOS and at least one word
    )


def sam3_vision_note(arch: Sam3Arch) -> str:
    """Why SAM 3 takes no visual prompt tokens in its ViT (the reason validate, plan and describe give)."""
    windowed = arch.vit.layers - len(arch.global_layers)
    globals_ = ", ".join(str(i + 1) for i in arch.global_layers)
    return (
        f"{{model}}'s ViT attends within {arch.window_size} x {arch.window_size}-patch windows in {windowed} of its "
        f"{arch.vit.layers} layers (global attention only in layers {globals_}) with 2-D rotary positions: appended "
        "visual tokens belong to no window and have no position; its image-side prompts enter the DETR fusion "
        "encoder instead (strategy detr_vpt)"
    )


def _sam3_info(name: str, description: str, default_weights: str | None, builder: str, arch: Sam3Arch) -> ModelInfo:
    return ModelInfo(
        name=name,
        family="sam3",
        description=description,
        image_size=arch.image_size,
        text_layers=arch.text.layers,
        vision_layers=arch.vit.layers,
        max_prompt_depth=arch.max_prompt_depth,
        default_weights=default_weights,
        builder=builder,
        text_width=arch.text.width,
        vision_width=arch.vit.width,
        towers=frozenset({"text", "fusion"}),
        fusion_layers=arch.fusion_layers,
        max_num_context=arch.context_length - 3,
        tower_notes=(("vision", sam3_vision_note(arch)),),
    )


for _record in (
    # CLIPSeg's vision tower only runs to layer 10 (extract layers 3, 6, 9); depth 11 still changes the prompt
    # tokens of the layer-10 activation the decoder reads (reference §2.4): max_prompt_depth 11.
    _info(
        "clipseg",
        "CLIPSeg (CLIP ViT-B/16 + decoder, reduce_dim 64), transformers, CIDAS/clipseg-rd64",
        "CIDAS/clipseg-rd64",
        "vlsm_batch.models.clipseg:build_clipseg",
    ),
    _info(
        "clipseg-tiny",
        "CLIPSeg architecture, tiny widths, random init, offline tokenizer: for tests and quickstart",
        None,
        "vlsm_batch.models.clipseg:build_clipseg_tiny",
    ),
    _info(
        "cris",
        "CRIS (CLIP RN50 + FPN neck + VL decoder + projector), 416 px, local checkpoint in `weights:`",
        None,
        "vlsm_batch.models.cris:build_cris",
    ),
    _info(
        "cris-tiny",
        "CRIS architecture, tiny widths, random init, offline tokenizer: for tests and quick specs",
        None,
        "vlsm_batch.models.cris:build_cris_tiny",
    ),
    _info(
        "sam3",
        "SAM 3 (PE ViT 1008 px + FPN, CLIP text tower, DETR fusion encoder, semantic mask head), transformers, "
        "facebook/sam3 (gated: accept the licence on the hub, or point `weights:` at a local folder)",
        "facebook/sam3",
        "vlsm_batch.models.sam3:build_sam3",
    ),
    _info(
        "sam3-tiny",
        "SAM 3 architecture, tiny widths, 112 px, random init, offline tokenizer: for tests and quick specs",
        None,
        "vlsm_batch.models.sam3:build_sam3_tiny",
    ),
):
    MODELS.register(_record.name, _record)


def get_model_info(name: str) -> ModelInfo:
    return MODELS.get(name)


def list_models(pattern: str = "*") -> list[str]:
    return MODELS.names(pattern)
