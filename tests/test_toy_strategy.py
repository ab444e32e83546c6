"""A strategy declared in ONE module (this one): its catalog entry names the learner class below, and validation,
defaults, bounds (fixed and model-relative), the generated schema and the model build all follow from it."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from torch import nn  # noqa: E402

from vlsm_batch.cli import main  # noqa: E402
from vlsm_batch.errors import SpecError  # noqa: E402
from vlsm_batch.models.factory import create_model  # noqa: E402
from vlsm_batch.schema.generate import PACKAGE_COPY, generated_text  # noqa: E402
from vlsm_batch.spec import load_spec  # noqa: E402
from vlsm_batch.spec import schema as spec_schema  # noqa: E402
from vlsm_batch.spec.paramcheck import value_problem  # noqa: E402
from vlsm_batch.strategies import DEPTH, LR, NCTX, STRATEGIES, ModelBound, ParamSpec, StrategyInfo  # noqa: E402
from vlsm_batch.strategies.impl import (  # noqa: E402
    LearnerContext,
    PromptLearner,
    StrategyNotImplementedError,
    check_depth,
    resolve_params,
)
from vlsm_batch.trials.expand import expand  # noqa: E402

TOY_REASON = "the toy needs a vision transformer's patch grid, which {model} does not have"


class ToyLearner(PromptLearner):
    """Text context rows scaled by ``toy_gain`` (a parameter no built-in strategy has)."""

    towers: ClassVar[frozenset[str]] = frozenset({"text"})

    def __init__(self, depth: int, num_context: int, width: int, gain: float):
        super().__init__(depth, num_context)
        self.context = nn.Parameter(torch.randn(depth, num_context, width) * 0.02)
        self.gain = gain

    @classmethod
    def from_params(cls, params: Mapping[str, Any], ctx: LearnerContext) -> ToyLearner:
        depth = int(params["prompt_depth"])
        check_depth(depth, cls.towers, ctx)
        return cls(depth, int(params["num_context"]), ctx.text_width, float(params["toy_gain"]))

    def text_context(self, k: int, image_features: torch.Tensor | None = None) -> torch.Tensor:
        return (self.context[k] * self.gain).unsqueeze(0)


GAIN = ParamSpec("toy_gain", "float", 1.5, low=0.0, high=10.0, help="scale of the toy's context")
WIDTH = ParamSpec(
    "toy_groups",
    "int",
    4,
    low=1,
    help="groups of the text width",
    model_bound=ModelBound("text_width", "divides", label="text width"),
)
TOY = StrategyInfo(
    "toy",
    "toy: scaled text context (test only)",
    frozenset({"text"}),
    (LR, DEPTH, NCTX, GAIN, WIDTH),
    implemented_for=frozenset({"clipseg"}),
    not_for=(("cris", TOY_REASON),),
    learner=f"{__name__}:ToyLearner",
)


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch) -> Iterator[StrategyInfo]:
    """Register the toy, and validate against the schema regenerated with it (what the generator would write)."""
    STRATEGIES.register(TOY.name, TOY)
    schema = json.loads(generated_text(PACKAGE_COPY.read_text(encoding="utf-8")))
    monkeypatch.setattr(spec_schema, "_validator", lambda: spec_schema._StrictValidator(schema))
    try:
        yield TOY
    finally:
        STRATEGIES.unregister(TOY.name)


def _spec(tmp_path: Path, body: str, models: str = "clipseg-tiny") -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(f"study: t\nmodels: [{models}]\ndatasets: [synthetic]\nstrategies: [toy]\n{body}")
    return path


def test_toy_validates_with_its_params_and_defaults(toy: StrategyInfo, tmp_path: Path) -> None:
    spec = load_spec(_spec(tmp_path, "train:\n  toy_gain: 3\nsearch:\n  space:\n    toy_groups: {choice: [2, 8]}\n"),
                     env={}, base_dir=tmp_path)  # fmt: skip
    assert spec.train.fixed_params["toy_gain"] == 3.0
    assert resolve_params("toy", {}) == {"lr": 2e-4, "prompt_depth": 1, "num_context": 4, "toy_gain": 1.5,
                                         "toy_groups": 4}  # fmt: skip
    (cell,) = expand(spec).cells
    assert not cell.skipped and not cell.unsupported
    assert {t.params["toy_groups"] for t in expand(spec).trials} <= {2, 8}
    assert all(t.params["toy_gain"] == 3.0 for t in expand(spec).trials)


def test_toy_bounds_fixed_and_model_relative(toy: StrategyInfo, tmp_path: Path) -> None:
    assert value_problem("toy_gain", 11.0, GAIN) == "toy_gain must be <= 10, got 11.0"
    with pytest.raises(SpecError) as err:
        load_spec(_spec(tmp_path, "train:\n  toy_gain: 11.0\nsearch:\n  space:\n    toy_groups: {choice: [2, 5]}\n"),
                  env={}, base_dir=tmp_path)  # fmt: skip
    text = "\n".join(err.value.errors)
    assert "toy_gain must be <= 10, got 11.0" in text
    assert "toy_groups 5 does not divide the text width of clipseg-tiny (text width 32)" in text
    assert "toy_groups 2" not in text


def test_toy_appears_in_the_generated_schema_only_while_registered(toy: StrategyInfo) -> None:
    text = PACKAGE_COPY.read_text(encoding="utf-8")
    schema = json.loads(generated_text(text))
    fixed = schema["properties"]["train"]["properties"]["toy_gain"]
    assert fixed["type"] == "number" and "scale of the toy's context" in fixed["description"]
    assert schema["$defs"]["space"]["properties"]["toy_groups"]["$ref"] == "#/$defs/distribution"
    assert "toy_gain" not in json.loads(text)["properties"]["train"]["properties"]  # the committed file: no toy
    STRATEGIES.unregister("toy")
    try:
        assert "toy_gain" not in json.loads(generated_text(text))["properties"]["train"]["properties"]
    finally:
        STRATEGIES.register("toy", TOY)


def test_toy_builds_and_trains_on_clipseg_tiny(toy: StrategyInfo) -> None:
    model = create_model("clipseg-tiny", "toy", {"prompt_depth": 2, "toy_gain": 2.0})
    assert isinstance(model.learner, ToyLearner) and model.learner.gain == 2.0
    assert model.learner.context.shape == (2, 4, 32)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["learner.context"]
    torch.manual_seed(0)
    pixels = torch.randn(2, 3, model.image_size, model.image_size)
    inputs = {"pixel_values": pixels, **model.tokenize(["a polyp", "a cat"])}
    before = model.learner.context.detach().clone()
    optim = torch.optim.SGD([model.learner.context], lr=1.0)
    model.train()
    model(**inputs).square().mean().backward()
    assert model.learner.context.grad is not None and model.learner.context.grad.abs().sum() > 0
    optim.step()
    assert not torch.equal(before, model.learner.context.detach())


def test_toy_refused_on_cris_with_the_catalog_reason(
    toy: StrategyInfo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reason = TOY_REASON.format(model="cris-tiny")
    with pytest.raises(StrategyNotImplementedError, match=reason):
        create_model("cris-tiny", "toy", {})
    with pytest.raises(SpecError, match=f"toy cannot run on any listed model: {reason}"):
        load_spec(_spec(tmp_path, "", models="cris-tiny"), env={}, base_dir=tmp_path)
    assert main(["describe", "cris-tiny", "toy"]) != 0
    assert reason in capsys.readouterr().err
