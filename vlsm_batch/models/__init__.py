"""Model catalog: light records (no torch) that validation and planning read; builders are imported lazily."""

from __future__ import annotations

from dataclasses import dataclass

from ..registry import Registry


@dataclass(frozen=True)
class ModelInfo:
    """What the spec layer needs to know about a VLSM without building it."""

    name: str
    family: str  # "clipseg" | "cris": which prompt-injection code applies
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

    @property
    def joint_width(self) -> int | None:
        """Width of Shared-Attention's joint tokens (text + vision), None without a vision transformer."""
        return self.text_width + self.vision_width if self.text_width and self.vision_width else None

    @property
    def prompt_towers(self) -> frozenset[str]:
        """Towers that accept prompt tokens: a convolutional image encoder takes none."""
        return frozenset({"text", "vision"} if self.vision_layers else {"text"})


MODELS: Registry[ModelInfo] = Registry("model")

MODELS.register(
    "clipseg",
    ModelInfo(
        name="clipseg",
        family="clipseg",
        description="CLIPSeg (CLIP ViT-B/16 + decoder, reduce_dim 64), transformers, CIDAS/clipseg-rd64",
        image_size=352,
        text_layers=12,
        vision_layers=12,
        # The vision tower only runs to layer 10 (extract layers 3, 6, 9); depth 11 still changes
        # the prompt tokens of the layer-10 activation the decoder reads (reference §2.4).
        max_prompt_depth=11,
        default_weights="CIDAS/clipseg-rd64",
        builder="vlsm_batch.models.clipseg:build_clipseg",
        text_width=512,
        vision_width=768,
    ),
)
MODELS.register(
    "clipseg-tiny",
    ModelInfo(
        name="clipseg-tiny",
        family="clipseg",
        description="CLIPSeg architecture, tiny widths, random init, offline tokenizer: for tests and quickstart",
        image_size=64,
        text_layers=4,
        vision_layers=4,
        max_prompt_depth=4,
        default_weights=None,
        builder="vlsm_batch.models.clipseg:build_clipseg_tiny",
        text_width=32,
        vision_width=32,
    ),
)
MODELS.register(
    "cris",
    ModelInfo(
        name="cris",
        family="cris",
        description="CRIS (CLIP RN50 + FPN neck + VL decoder + projector), 416 px, local checkpoint in `weights:`",
        image_size=416,
        text_layers=12,
        vision_layers=None,
        max_prompt_depth=12,
        default_weights=None,
        builder="vlsm_batch.models.cris:build_cris",
        text_width=512,
    ),
)
MODELS.register(
    "cris-tiny",
    ModelInfo(
        name="cris-tiny",
        family="cris",
        description="CRIS architecture, tiny widths, random init, offline tokenizer: for tests and quick specs",
        image_size=64,
        text_layers=4,
        vision_layers=None,
        max_prompt_depth=4,
        default_weights=None,
        builder="vlsm_batch.models.cris:build_cris_tiny",
        text_width=32,
    ),
)


def get_model_info(name: str) -> ModelInfo:
    return MODELS.get(name)


def list_models(pattern: str = "*") -> list[str]:
    return MODELS.names(pattern)
