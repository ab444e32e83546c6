"""Golden test: the schema's strategy-parameter blocks are the ones the catalog generates (both copies)."""

from __future__ import annotations

import json

from vlsm_batch.schema.generate import COMMAND, PACKAGE_COPY, ROOT_COPY, catalog_params, generated_text, stale_copies


def test_committed_schema_parameter_blocks_are_generated_from_the_catalog() -> None:
    stale = stale_copies()
    assert not stale, (
        f"{', '.join(map(str, stale))}: the strategy parameter blocks differ from the catalog "
        f"(vlsm_batch/strategies); run `{COMMAND}` and commit the result"
    )


def test_generation_keeps_the_hand_written_parts() -> None:
    text = PACKAGE_COPY.read_text(encoding="utf-8")
    schema, regenerated = json.loads(text), json.loads(generated_text(text))
    names = [p.name for p in catalog_params()]
    assert list(regenerated["$defs"]["space"]["properties"]) == names
    train, new_train = schema["properties"]["train"]["properties"], regenerated["properties"]["train"]["properties"]
    assert [k for k in new_train if k not in names] == [k for k in train if k not in names]  # loop settings kept
    for key in ("properties", "$defs"):
        others = {k: v for k, v in regenerated[key].items() if k not in ("train", "space")}
        assert others == {k: v for k, v in schema[key].items() if k not in ("train", "space")}
    assert generated_text(generated_text(text)) == generated_text(text)  # idempotent


def test_a_dropped_parameter_leaves_the_schema() -> None:
    schema = json.loads(ROOT_COPY.read_text(encoding="utf-8") if ROOT_COPY.is_file() else PACKAGE_COPY.read_text())
    schema["properties"]["train"]["properties"]["gone"] = {
        "type": "number",
        "description": "Fix gone for every strategy that takes it (old); unset: each strategy's own default.",
    }
    schema["$defs"]["space"]["properties"]["gone"] = {"$ref": "#/$defs/distribution"}
    regenerated = json.loads(generated_text(json.dumps(schema)))
    assert "gone" not in regenerated["properties"]["train"]["properties"]
    assert "gone" not in regenerated["$defs"]["space"]["properties"]
