"""Strategy catalog: each strategy declares, in one entry, its learner, the towers it prompts and the
hyperparameters it takes.

The declared parameters drive which spec parameters a trial of this strategy keeps (the others are dropped, so they
never change its id), their defaults, their validation ranges (fixed, or relative to the model: ``ModelBound``) and
the parameter blocks of ``study.schema.json`` (``python -m vlsm_batch.schema.generate``). The learner is a
"module:Class" string, so this catalog stays torch-free; ``impl.build_prompt_learner`` imports it when a model is
built. Nothing here imports the model catalog: callers pass the model in (``ModelLike``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from ..registry import Registry


class ModelLike(Protocol):
    """What the catalog reads of a model (``models.ModelInfo`` has it): passed in, so strategies never import
    models."""

    @property
    def name(self) -> str: ...
    @property
    def family(self) -> str: ...
    @property
    def prompt_towers(self) -> frozenset[str]: ...
    @property
    def tower_notes(self) -> tuple[tuple[str, str], ...]: ...


@dataclass(frozen=True)
class ModelBound:
    """A bound that depends on the model: ``attr`` names a ``ModelInfo`` attribute (max_prompt_depth, joint_width,
    text_width, vision_width). rule "max": the value may not exceed it; "divides": the value must divide it. Models
    where the attribute is None (no such tower) are not constrained."""

    attr: str
    rule: str  # "max" | "divides"
    label: str = ""  # how messages name the attribute (default: its name)
    verb: str = "larger"  # "max" messages: "<name> <value> is <verb> than <model> (<label> <limit>) allows"
    hint: str = ""  # appended to the message: what to do about it

    def problem(self, name: str, value: Any, models: list[Any]) -> str | None:
        """Why ``value`` breaks this bound for some of ``models``, or None (non-integers are left to the kind
        check)."""
        if not isinstance(value, int) or isinstance(value, bool):
            return None
        label = self.label or self.attr
        limits = [(m.name, lim) for m in models if (lim := getattr(m, self.attr, None))]
        if self.rule == "max":
            over = [(n, lim) for n, lim in limits if value > lim]
            which = ", ".join(f"{n} ({label} {lim})" for n, lim in over)
            return f"{name} {value} is {self.verb} than {which} allows{self.hint}" if over else None
        if value < 1:
            return None
        bad = [(n, lim) for n, lim in limits if lim % value]
        which = ", ".join(f"{n} ({label} {lim})" for n, lim in bad)
        return f"{name} {value} does not divide the {label} of {which}" if bad else None


@dataclass(frozen=True)
class ParamSpec:
    """One hyperparameter: type, default and the range the validator enforces (``model_bound``: per model)."""

    name: str
    kind: str  # "float" | "int" | "bool" | "str"
    default: Any
    low: float | None = None  # inclusive bounds for numbers; None = unbounded
    high: float | None = None
    choices: tuple[Any, ...] | None = None
    nullable: bool = False
    help: str = ""
    model_bound: ModelBound | None = None


def _p(name: str, kind: str, default: Any, **kw: Any) -> ParamSpec:
    return ParamSpec(name=name, kind=kind, default=default, **kw)


LR = _p("lr", "float", 2e-4, low=1e-8, high=1.0, help="AdamW learning rate")
# 0 means no decay. The original passed AdamW's default 0.01 when weight_decay <= 0 (docs/science.md §5): not here.
WD = _p("weight_decay", "float", 0.0, low=0.0, high=1.0, help="AdamW weight decay (not on prompts, norms, biases)")
DEPTH = _p(
    "prompt_depth",
    "int",
    1,
    low=1,
    help="fresh prompt tokens at layers 1..depth",
    model_bound=ModelBound("max_prompt_depth", "max", verb="deeper"),
)
NCTX = _p(
    "num_context",
    "int",
    4,
    low=1,
    high=32,
    help="prompt tokens per layer",
    model_bound=ModelBound("max_num_context", "max", label="text positions left for the class prompt"),
)
CTX_INIT = _p("context_init", "str", "a photo of a", nullable=True, help="words that initialise row 0; null = random")
UPSAMPLER = _p("learnable_upsampler", "bool", False, help="x16 bilinear + 5x5 conv head blended with the frozen logits")
HDIM = _p("intermediate_dim", "int", 64, low=1, high=4096, nullable=True, help="hidden width of projections")
LORA = _p("use_lora", "bool", False, help="low-rank projection instead of an MLP")
SHARED_DIM = _p("shared_dim", "int", 64, low=1, high=4096, help="width of the shared prompt space")
HEADS = _p(
    "num_heads",
    "int",
    16,
    choices=(1, 2, 4, 5, 8, 10, 16, 20, 32, 40, 64),
    help="attention heads (divide 1280)",
    model_bound=ModelBound("joint_width", "divides", label="joint width"),
)
DROPOUT = _p("dropout", "float", 0.25, low=0.0, high=0.95, help="dropout in the joint transformer layer")
FFN = _p("ffn_dim", "int", 1536, low=1, high=16384, help="FFN width of the joint transformer layer")
NORM_FIRST = _p("norm_first", "bool", True, help="pre-LayerNorm joint transformer layer")
SHARED_PROJ = _p("shared_projection", "bool", False, help="one projection module reused at every depth")
ATTEND = _p(
    "attend_across_tokens",
    "bool",
    True,
    help="prompt tokens attend to each other (false: each token alone, as the original code did)",
)
# Shared-Separate projects with a plain Linear unless intermediate_dim is set (docs/science.md §3.1 default null).
HDIM_LINEAR = _p("intermediate_dim", "int", None, low=1, high=4096, nullable=True, help=HDIM.help)

_PROMPT = (LR, WD, DEPTH, NCTX, UPSAMPLER)
FUSION_DEPTH = _p(
    "prompt_depth",
    "int",
    1,
    low=1,
    help="fresh prompt tokens at fusion-encoder layers 1..depth",
    model_bound=ModelBound(
        "fusion_layers",
        "max",
        label="DETR encoder layers",
        verb="deeper",
        hint=" for detr_vpt: give it its own range under search.per_strategy.detr_vpt",
    ),
)
FUSION_NCTX = _p("num_context", "int", 4, low=1, high=32, help="prompt tokens appended to the image tokens")


@dataclass(frozen=True)
class StrategyInfo:
    """A prompt-tuning strategy or a baseline, as the spec and planner see it."""

    name: str
    description: str
    towers: frozenset[str]  # encoders that receive prompt tokens; empty for baselines
    params: tuple[ParamSpec, ...] = field(default_factory=tuple)
    baseline: bool = False
    trains: bool = True  # zero_shot only evaluates
    implemented_for: frozenset[str] = frozenset()  # model families this build can train
    label: str = ""  # how reports and tables name it (default: the name)
    not_for: tuple[tuple[str, str], ...] = ()  # (model family, why; "{model}" = its name): skipped like vpt on CRIS
    max_epochs: int | None = None  # epoch budget of the run it reproduces: a study's max/min_epochs are capped to it
    learner: str | None = None  # "module:Class" of its PromptLearner (None: runs the model without prompts)

    def param(self, name: str) -> ParamSpec | None:
        return next((p for p in self.params if p.name == name), None)

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    @property
    def display(self) -> str:
        """The label reports use (the name when no label is set)."""
        return self.label or self.name

    def loop_settings(self, settings: dict[str, Any]) -> dict[str, Any]:
        """A study's training-loop settings as this strategy's trials get them (epochs capped at ``max_epochs``)."""
        if self.max_epochs is None or "max_epochs" not in settings:
            return settings
        high = min(int(settings["max_epochs"]), self.max_epochs)
        low = min(int(settings.get("min_epochs", 0)), high)
        return {**settings, "max_epochs": high, **({"min_epochs": low} if "min_epochs" in settings else {})}


STRATEGIES: Registry[StrategyInfo] = Registry("strategy")


def _reg(info: StrategyInfo) -> None:
    STRATEGIES.register(info.name, info)


_HERE = __name__  # learners live next to this file: "vlsm_batch.strategies.coop:CoOpLearner"
_TEXT, _VISION, _BOTH = frozenset({"text"}), frozenset({"vision"}), frozenset({"text", "vision"})

_CLIPSEG = frozenset({"clipseg"})
_TEXT_ONLY = frozenset({"clipseg", "cris", "sam3"})  # text prompts and baselines run on every family
_reg(
    StrategyInfo(
        "coop",
        "CoOp: learnable text context after BOS",
        _TEXT,
        (*_PROMPT, CTX_INIT),
        implemented_for=_TEXT_ONLY,
        learner=f"{_HERE}.coop:CoOpLearner",
    )
)
_reg(
    StrategyInfo(
        "cocoop",
        "CoCoOp: CoOp + image-conditioned meta-net",
        _TEXT,
        (*_PROMPT, CTX_INIT, HDIM, LORA, SHARED_PROJ),
        implemented_for=_TEXT_ONLY,
        learner=f"{_HERE}.cocoop:CoCoOpLearner",
    )
)
_reg(
    StrategyInfo(
        "vpt",
        "VPT-deep: learnable visual tokens",
        _VISION,
        _PROMPT,
        implemented_for=_CLIPSEG,
        learner=f"{_HERE}.vpt:VPTLearner",
    )
)
_reg(
    StrategyInfo(
        "maple",
        "MaPLe: text context projected to vision per depth",
        _BOTH,
        (*_PROMPT, CTX_INIT, HDIM, LORA, SHARED_PROJ),
        implemented_for=_CLIPSEG,
        learner=f"{_HERE}.multimodal:MaPLeLearner",
    )
)
_reg(
    StrategyInfo(
        "shared_separate",
        "Shared space projected to both towers",
        _BOTH,
        (*_PROMPT, SHARED_DIM, HDIM_LINEAR, LORA, SHARED_PROJ),
        implemented_for=_CLIPSEG,
        learner=f"{_HERE}.multimodal:SharedSeparateLearner",
    )
)
_reg(
    StrategyInfo(
        "shared_attn",
        "Joint 1280-d tokens through a transformer layer, split to both towers",
        _BOTH,
        (*_PROMPT, HEADS, DROPOUT, FFN, NORM_FIRST, ATTEND, SHARED_PROJ),
        implemented_for=_CLIPSEG,
        learner=f"{_HERE}.multimodal:SharedAttnLearner",
    )
)
_reg(
    StrategyInfo(
        "detr_vpt",
        "VPT-deep in SAM 3's DETR fusion encoder: learnable tokens appended to the image tokens the encoder fuses "
        "with the text (its self-attention is global, unlike the windowed ViT); the ViT stays frozen and shared",
        frozenset({"fusion"}),
        (LR, WD, FUSION_DEPTH, FUSION_NCTX, UPSAMPLER),
        implemented_for=frozenset({"sam3"}),
        label="VPT (DETR encoder)",
        learner=f"{_HERE}.detr_vpt:DetrVPTLearner",
    )
)
_reg(
    StrategyInfo(
        "zero_shot",
        "pretrained model, dataset prompt, no training",
        frozenset(),
        (),
        True,
        False,
        implemented_for=_TEXT_ONLY,
        label="zero-shot",
    )
)
_reg(
    StrategyInfo(
        "finetune",
        "true end-to-end fine-tuning: every weight trainable (CLIPSeg 150.7 M, both CLIP encoders and the decoder, "
        "of which 136.1 M get gradients: vision layers 11-12, post-LayerNorm, visual projection and logit scale "
        "feed no segmentation path; CRIS every weight, decoder dropout 0.2, as the original's CRIS E2E; SAM 3 "
        "everything on its semantic-mask path but the image encoder: text tower, text projection, DETR encoder "
        "and mask decoder, with the PE ViT and FPN neck frozen); lr 2e-4, weight decay 1e-3",
        frozenset(),
        (
            _p("lr", "float", 2e-4, low=1e-8, high=1.0, help="AdamW learning rate (CRIS reference: 5e-5)"),
            _p("weight_decay", "float", 1e-3, low=0.0, high=1.0, help=WD.help),
        ),
        True,
        implemented_for=_TEXT_ONLY,
        label="full fine-tune (all weights)",
    )
)
# The original's CLIPSeg "E2E" baseline called transformers' CLIPSegForImageSegmentation.forward, which runs both
# CLIP encoders under no_grad: only the decoder trained (docs/science.md §4.4). This baseline is that run, named for
# what it trains. CRIS's E2E (its own code) trains every weight: `finetune` is its faithful baseline.
DECODER_EPOCHS = 40  # the original's E2E trainer: max_epochs 40, min_epochs 10
_reg(
    StrategyInfo(
        "decoder_finetune",
        "decoder-only fine-tuning, what the original's CLIPSeg E2E baseline trained: CLIP image and text encoders "
        "frozen and run without gradient, every decoder weight trained (FiLM, reduces, 3 layers, transposed conv; "
        f"~1.07 M for rd64); the original's lr 2e-4, weight decay 1e-3, at most {DECODER_EPOCHS} epochs (a "
        "study's max_epochs/min_epochs are capped at 40; the original ran 10 to 40). CLIPSeg only",
        frozenset(),
        (
            _p("lr", "float", 2e-4, low=1e-8, high=1.0, help="AdamW learning rate (the original's E2E: 2e-4)"),
            _p("weight_decay", "float", 1e-3, low=0.0, high=1.0, help="AdamW weight decay (the original's E2E: 1e-3)"),
        ),
        True,
        implemented_for=_CLIPSEG,
        label="decoder-only fine-tune (what the original's CLIPSeg E2E trained)",
        not_for=(
            (
                "cris",
                "the original's CRIS end-to-end baseline trained every weight (its own code runs no encoder under "
                "no_grad): {model} has no decoder-only run to reproduce; use finetune",
            ),
            (
                "sam3",
                "decoder_finetune reproduces the original's CLIPSeg E2E baseline; {model} has no such run: use "
                "finetune (everything on its mask path but the image encoder)",
            ),
        ),
        max_epochs=DECODER_EPOCHS,
    )
)

BASELINES = tuple(s for s in STRATEGIES.in_order() if STRATEGIES.get(s).baseline)  # registration order


def get_strategy(name: str) -> StrategyInfo:
    return STRATEGIES.get(name)


def list_strategies(pattern: str = "*") -> list[str]:
    return STRATEGIES.names(pattern)


def incompatibility(
    strategy: StrategyInfo,
    model_towers: frozenset[str],
    model_name: str,
    family: str | None,
    tower_notes: tuple[tuple[str, str], ...] = (),
) -> str | None:
    """Why ``strategy`` cannot run on a model with these prompt towers and family, or None when it can. The caller
    passes the model's facts (the catalog never imports models); ``family`` None: unknown, its rules are skipped;
    ``tower_notes`` are the model's own reasons for a tower it takes no prompts in ("{model}" = its name)."""
    for tower in sorted(strategy.towers - model_towers):
        note = dict(tower_notes).get(tower)
        if note:
            return note.format(model=model_name)
        return _NO_TOWER.get(tower, "{model} takes no prompt tokens in its " + tower).format(model=model_name)
    why = dict(strategy.not_for).get(family or "")
    return why.format(model=model_name) if why else None


_NO_TOWER = {
    "vision": "{model} has a convolutional image encoder: visual prompt tokens do not apply",
    "fusion": "{model} has no image-text fusion encoder (SAM 3's DETR encoder) for these prompt tokens: the strategy "
    "applies to SAM 3 only",
}


def refusal(strategy: StrategyInfo, model: ModelLike) -> str | None:
    """``incompatibility`` for a model record (a ``ModelInfo``): the reason describe, validate, plan and the model
    factory give."""
    return incompatibility(strategy, model.prompt_towers, model.name, model.family, model.tower_notes)
