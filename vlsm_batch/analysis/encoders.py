"""Which image and text encoders each model of a study uses, for the report's Models section.

A study is not limited to CLIP encoders: CLIPSeg runs CLIP's ViT, CRIS CLIP's convolutional ResNet, SAM 3 a
Perception Encoder ViT with a DETR fusion encoder. The facts come from the model catalog (``models.ModelInfo``:
family, description, prompt towers) and the architecture records it is built from (``models.configs``: layers,
widths, patch sizes), so a report cannot drift from what the trials ran. Torch-free.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import polars as pl

COLUMNS = ("model", "family", "image encoder", "text encoder", "fusion and decoder", "prompts enter",
           "strategies in this study", "catalog")  # fmt: skip
TOWER_NAMES = {"text": "text tower", "vision": "image ViT", "fusion": "DETR fusion encoder"}
VIT_SIZES = {(768, 12): "B", (1024, 24): "L", (1280, 32): "H"}  # (width, layers) of the standard ViT sizes


def _tower_rank(tower: str) -> tuple[int, str]:
    order = list(TOWER_NAMES)
    return (order.index(tower), tower) if tower in order else (len(order), tower)


def _layers(indices: Sequence[int]) -> str:
    """1-based layer numbers, as a reader counts them."""
    return ", ".join(str(i + 1) for i in indices)


def _text(tower: Any, style: str) -> str:
    return f"{style} text transformer ({tower.layers} layers, width {tower.width})"


def describe(name: str) -> dict[str, str]:
    """The encoders of one catalog model; a name this build does not know says so instead of guessing."""
    from ..models import MODELS
    from ..models.configs import ARCHITECTURES, CLIPSegArch, CRISArch, Sam3Arch

    unknown = "not in this build's model catalog"
    if name not in MODELS:
        return {"model": name, "family": "unknown", "image encoder": unknown, "text encoder": unknown,
                "fusion and decoder": unknown, "prompts enter": unknown, "catalog": unknown}  # fmt: skip
    info = MODELS.get(name)
    arch = ARCHITECTURES.get(name)
    out = {"model": name, "family": info.family, "catalog": info.description}
    if isinstance(arch, CLIPSegArch):
        v = arch.vision
        size = VIT_SIZES.get((v.width, v.layers))
        vit = f"ViT-{size}/{arch.patch_size}" if size else f"ViT (patch {arch.patch_size})"
        out["image encoder"] = f"CLIP {vit} ({v.layers} layers, width {v.width}), {arch.image_size} px"
        out["text encoder"] = _text(arch.text, "CLIP")
        out["fusion and decoder"] = (
            f"CLIPSeg decoder: FiLM text conditioning of ViT layers {_layers(arch.extract_layers)}, "
            f"reduce_dim {arch.reduce_dim}"
        )
    elif isinstance(arch, CRISArch):
        rn = "RN50" if arch.rn_layers == (3, 4, 6, 3) and arch.rn_width == 64 else "ResNet"
        stages = "-".join(map(str, arch.rn_layers))
        out["image encoder"] = (
            f"CLIP ModifiedResNet {rn} (convolutional, stages {stages}, stem width {arch.rn_width}), "
            f"{arch.image_size} px"
        )
        out["text encoder"] = _text(arch.text, "CLIP")
        out["fusion and decoder"] = (
            f"FPN neck fusing image and sentence features, vision-language transformer decoder "
            f"({arch.decoder_layers} layers), projector"
        )
    elif isinstance(arch, Sam3Arch):
        v = arch.vit
        out["image encoder"] = (
            f"Perception Encoder ViT ({v.layers} layers, width {v.width}, patch {arch.patch_size}; "
            f"{arch.window_size}x{arch.window_size} windowed attention, global in layers "
            f"{_layers(arch.global_layers)}) + FPN neck, {arch.image_size} px"
        )
        out["text encoder"] = _text(arch.text, "CLIP-style")
        out["fusion and decoder"] = (
            f"DETR encoder fusing image and text tokens ({arch.fusion.layers} layers, width {arch.fusion.width}), "
            f"DETR decoder ({arch.decoder_layers} layers, {arch.queries} queries), semantic mask head"
        )
    else:  # a catalog entry without an architecture record: the description is all there is
        for col in ("image encoder", "text encoder", "fusion and decoder"):
            out[col] = f"see the catalog description ({info.family} family)"
    out["prompts enter"] = ", ".join(TOWER_NAMES.get(t, t) for t in sorted(info.prompt_towers, key=_tower_rank))
    return out


def short(name: str) -> str:
    """One line for the report's scope: "sam3: Perception Encoder ViT image encoder, CLIP-style text"."""
    d = describe(name)
    if d["family"] == "unknown":
        return f"{name} ({d['image encoder']})"
    image = d["image encoder"].split(" (")[0]
    text = d["text encoder"].split(" text transformer")[0]
    return f"{name}: {image} image encoder, {text} text encoder"


def models_table(strategies: Mapping[str, Sequence[str]]) -> pl.DataFrame:
    """One row per model of the study (catalog order) with its encoders and the strategies it ran."""
    import polars as pl

    from .plots import model_order, strategy_order

    rows = []
    for name in model_order(list(strategies)):
        row = describe(name)
        row["strategies in this study"] = ", ".join(strategy_order(list(strategies[name])))
        rows.append({c: row.get(c, "") for c in COLUMNS})
    return pl.DataFrame(rows, schema=dict.fromkeys(COLUMNS, pl.String))
