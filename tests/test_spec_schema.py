"""The schema file is the source of truth: it must be valid, shipped unchanged, and agree with the registries and
with the typed spec (field names and defaults)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from vlsm_batch.spec.schema import SBATCH_ALLOWED, load_schema, sbatch_problem
from vlsm_batch.spec.types import ResourcesSpec, SlurmSpec, TrainSpec
from vlsm_batch.strategies import STRATEGIES

REPO = Path(__file__).resolve().parents[1]
ROOT_COPY = REPO / "schema" / "study.schema.json"
PACKAGE_COPY = REPO / "vlsm_batch" / "schema" / "study.schema.json"
KIND_TO_TYPE = {"float": "number", "int": "integer", "bool": "boolean", "str": "string"}


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return load_schema()


def _props(schema: dict[str, Any], *path: str) -> dict[str, Any]:
    node = schema
    for key in path:
        node = node["properties"][key]
    return node["properties"]


def _registry_params() -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for name in STRATEGIES:
        for p in STRATEGIES.get(name).params:
            out.setdefault(p.name, []).append(p)
    return out


def test_schema_copies_are_byte_identical() -> None:
    assert ROOT_COPY.read_bytes() == PACKAGE_COPY.read_bytes()


def test_schema_is_valid_2020_12(schema: dict[str, Any]) -> None:
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(json.loads(ROOT_COPY.read_text()))
    assert load_schema() == json.loads(ROOT_COPY.read_text())


def test_parameter_names_match_the_registry(schema: dict[str, Any]) -> None:
    registry = set(_registry_params())
    space = set(schema["$defs"]["space"]["properties"])
    loop = {"max_epochs", "min_epochs", "batch_size", "precision", "early_stopping", "num_workers", "loggers"}
    fixed = set(_props(schema, "train")) - loop
    assert space == registry
    assert fixed == registry


def test_fixed_parameter_types_match_param_specs(schema: dict[str, Any]) -> None:
    train = _props(schema, "train")
    for name, specs in _registry_params().items():
        for spec in specs:
            expected = [KIND_TO_TYPE[spec.kind], "null"] if spec.nullable else KIND_TO_TYPE[spec.kind]
            assert train[name]["type"] == expected, name


def test_search_methods_and_pruner_defaults_agree(schema: dict[str, Any]) -> None:
    from vlsm_batch.spec.types import PrunerSpec, SearchSpec

    search = _props(schema, "search")
    assert search["method"]["enum"] == ["grid", "random", "sobol", "tpe"]
    assert search["n_startup_trials"]["default"] == SearchSpec.n_startup_trials
    assert search["pruner"]["properties"]["type"]["enum"] == ["asha", "median", "none"]
    assert search["pruner"]["default"] == {"type": PrunerSpec().kind}


def test_every_property_has_a_description(schema: dict[str, Any]) -> None:
    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for key, sub in node.get("properties", {}).items():
                assert "description" in sub, f"{where}.{key}"
            for key, sub in node.items():
                walk(sub, f"{where}.{key}")

    walk(schema, "")


def _default(schema: dict[str, Any], *path: str) -> Any:
    parent, key = path[:-1], path[-1]
    return _props(schema, *parent)[key]["default"]


def test_train_fields_and_defaults_agree(schema: dict[str, Any]) -> None:
    stopping = {"monitor", "patience", "min_delta"}
    fields = {f.name: f for f in dataclasses.fields(TrainSpec)}
    loop = set(_props(schema, "train")) - set(_registry_params()) - {"early_stopping"}
    expected = loop | {f"early_stopping_{k}" for k in stopping} | {"fixed_params"}
    assert set(fields) == expected
    for name in loop:
        assert fields[name].default == _default(schema, "train", name), name
    for key in stopping:
        assert fields[f"early_stopping_{key}"].default == _default(schema, "train", "early_stopping", key)


def test_resources_fields_and_defaults_agree(schema: dict[str, Any]) -> None:
    fields = {f.name: f for f in dataclasses.fields(ResourcesSpec)}
    plain = set(_props(schema, "resources")) - {"slurm", "local"}
    assert set(fields) == plain | {"max_parallel", "slurm"}
    for name in plain:
        assert fields[name].default == _default(schema, "resources", name), name
    assert fields["max_parallel"].default == _default(schema, "resources", "local", "max_parallel")

    slurm_fields = {f.name: f for f in dataclasses.fields(SlurmSpec)}
    assert set(slurm_fields) == set(_props(schema, "resources", "slurm"))
    for name in set(slurm_fields) - {"extra"}:
        assert slurm_fields[name].default == _default(schema, "resources", "slurm", name)
    assert set(_props(schema, "resources", "slurm", "extra")) == {
        "exclude", "nodelist", "reservation", "gres", "mail_type", "mail_user",
        "licenses", "mem_per_gpu", "cpus_per_gpu", "wckey",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("gpu", True),
        ("a100_80g&nvlink|h100", True),
        ("node[01-04],node7", True),
        ("user@example.org", True),
        ("gpu:a100:2", True),
        ("gpu\n#SBATCH --foo", False),
        ("gpu --qos=x", False),
        ("a;b", False),
        ("$(id)", False),
        ("`id`", False),
        ("'q'", False),
        ("x" * 257, False),
        ("", False),
    ],
)
def test_sbatch_rule_matches_schema_pattern(schema: dict[str, Any], value: str, ok: bool) -> None:
    validator = Draft202012Validator(schema["$defs"]["sbatchValue"])
    assert validator.is_valid(value) is ok
    assert (sbatch_problem(value) is None) is ok
    if not ok and value and len(value) <= 256:
        assert SBATCH_ALLOWED in sbatch_problem(value)
