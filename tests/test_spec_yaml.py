"""Safe YAML reading: core-schema scalars, positions, and refusal of tags, duplicates, bombs and bad syntax."""

from __future__ import annotations

import math

import pytest

from vlsm_batch.errors import SpecError
from vlsm_batch.spec.yamlsafe import MAX_NODES, read_yaml, resolve_plain


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1e-5", 1e-5),
        ("1.0e-5", 1e-5),
        ("5.0e-3", 5e-3),
        ("-2E+3", -2000.0),
        (".5", 0.5),
        ("12", 12),
        ("-3", -3),
        ("0x1F", 31),
        ("0o17", 15),
        ("true", True),
        ("False", False),
        ("null", None),
        ("~", None),
        ("", None),
        ("yes", "yes"),  # YAML 1.1 booleans are text in 1.2
        ("on", "on"),
        ("1_000", "1_000"),
        ("2001-12-14", "2001-12-14"),  # no timestamps
        ("val/dice", "val/dice"),
    ],
)
def test_core_schema_scalars(text: str, value: object) -> None:
    got = resolve_plain(text)
    assert got == value and type(got) is type(value)


def test_special_floats() -> None:
    assert resolve_plain(".inf") == math.inf and resolve_plain("-.Inf") == -math.inf
    assert math.isnan(resolve_plain(".NaN"))


def test_quoted_scalars_stay_text() -> None:
    doc = read_yaml("a: '1'\nb: \"true\"\nc: |\n  1e-5\n", "f.yaml")
    assert doc.data == {"a": "1", "b": "true", "c": "1e-5\n"}


def test_positions_of_keys_values_and_items() -> None:
    text = "top:\n  inner: [a, b]\n  n: 3\nlist:\n  - x\n  - {k: v}\n"
    doc = read_yaml(text, "f.yaml")
    assert doc.keys[("top",)] == (1, 1)
    assert doc.keys[("top", "inner")] == (2, 3)
    assert doc.values[("top", "inner", 1)] == (2, 14)
    assert doc.values[("top", "n")] == (3, 6)
    assert doc.values[("list", 0)] == (5, 5)
    assert doc.keys[("list", 1, "k")] == (6, 6)
    # Missing paths fall back to the nearest ancestor's key.
    assert doc.where(("top", "missing")) == (1, 1)
    assert doc.where(("top", "inner", 7)) == (2, 3)


def test_aliases_expand_to_plain_data() -> None:
    doc = read_yaml("a: &x {k: [1, 2]}\nb: *x\n", "f.yaml")
    assert doc.data == {"a": {"k": [1, 2]}, "b": {"k": [1, 2]}}


def _errors(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        read_yaml(text, "f.yaml")
    return info.value.errors


@pytest.mark.parametrize("tag", ["!!python/object/apply:os.system", "!foo", "!!str", "!", "!!map", "!!binary"])
def test_every_explicit_tag_is_refused(tag: str) -> None:
    (err,) = _errors(f"a: 1\nb: {tag} x\n")
    assert err.startswith("f.yaml:2:4: b: explicit YAML tag")
    assert repr(tag) in err


def test_tag_on_key_and_collection() -> None:
    errors = _errors("!!str a: 1\nb: !!seq [1]\n")
    assert errors[0].startswith("f.yaml:1:1:")
    assert errors[1].startswith("f.yaml:2:4: b: explicit YAML tag '!!seq'")


def test_duplicate_keys_name_the_first() -> None:
    errors = _errors("a: 1\nb:\n  c: 1\n  c: 2\na: 3\n")
    assert errors == [
        "f.yaml:4:3: b.c: duplicate key 'c' (first at line 3, col 3)",
        "f.yaml:5:1: a: duplicate key 'a' (first at line 1, col 1)",
    ]


def test_syntax_error_has_position() -> None:
    (err,) = _errors("a: [1, 2\nb: 3\n")
    assert err.startswith("f.yaml:2:2: YAML syntax error:")


def test_several_documents_are_refused() -> None:
    (err,) = _errors("a: 1\n---\nb: 2\n")
    assert err.startswith("f.yaml:") and "single document" in err


def test_undefined_alias() -> None:
    (err,) = _errors("a: *nope\n")
    assert err.startswith("f.yaml:1:4:") and "undefined alias" in err


def test_alias_bomb_is_capped() -> None:
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 9)]
    (err,) = _errors("\n".join(lines) + "\n")
    assert f"more than {MAX_NODES} YAML nodes" in err


def test_recursive_alias() -> None:
    errors = _errors("a: &a [1, *a]\n")
    assert any("recursive alias" in e for e in errors)


def test_deep_nesting_is_refused() -> None:
    (err,) = _errors("a: " + "[" * 200 + "]" * 200 + "\n")
    assert err.startswith("f.yaml:1:")


def test_merge_keys_are_refused() -> None:
    (err,) = _errors("x: &x {a: 1}\ny:\n  <<: *x\n")
    assert err.startswith("f.yaml:3:3: y: merge keys")


def test_complex_keys_are_refused() -> None:
    (err,) = _errors("? [a, b]\n: 1\n")
    assert "mapping keys must be plain text" in err
