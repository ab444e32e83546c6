"""Validate plain spec data against ``study.schema.json`` and turn jsonschema errors into positioned, actionable lines.

The schema file is the single source of truth for key names, types and defaults; this module only words its
errors (unknown keys with close matches, missing keys at their parent, duplicates at the second occurrence).
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator, ValidationError, validators

from ..registry import did_you_mean
from .report import KeyPath, Reporter

SBATCH_ALLOWED = "letters, digits and _ . , : = @ + % / - [ ] & | *"
_SBATCH_CHAR = re.compile(r"[A-Za-z0-9_.,:=@+%/\[\]&|*-]")
STUDY_RULE = "1-64 letters, digits, '_', '.', '-', starting with a letter or digit"


@cache
def load_schema() -> dict[str, Any]:
    """The study schema shipped in the package (identical to the repository's ``schema/study.schema.json``)."""
    text = resources.files("vlsm_batch").joinpath("schema", "study.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


def _is_int(_checker: Any, value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# JSON Schema calls 1.0 an integer; a YAML file that says `max_epochs: 1.0` should be told it is not.
_StrictValidator = validators.extend(
    Draft202012Validator,
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_int),
)


@cache
def _validator() -> Any:
    return _StrictValidator(load_schema())


def sbatch_problem(value: str) -> str | None:
    """Why ``value`` may not be passed to sbatch, or None when it is safe (same rule as the schema's pattern)."""
    if not value:
        return "must not be empty"
    bad = next((c for c in value if not _SBATCH_CHAR.fullmatch(c)), None)
    if bad is not None:
        return f"character {bad!r} is not allowed in an sbatch value; allowed: {SBATCH_ALLOWED}"
    if len(value) > 256:
        return f"longer than 256 characters ({len(value)})"
    return None


_TYPE_WORDS = {
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "boolean": "true or false",
    "null": "null",
    "array": "a list",
    "object": "a mapping (key: value)",
}


def describe(value: Any) -> str:
    """How a YAML value reads back to the user, e.g. ``the string '32'``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value!r}"
    return "a list" if isinstance(value, list) else "a mapping"


def _same(a: Any, b: Any) -> bool:
    """JSON equality: true is not 1."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def _key_noun(parent: KeyPath) -> str:
    if parent == ("search", "space") or (len(parent) == 3 and parent[:2] == ("search", "per_strategy")):
        return "parameter"
    if (len(parent) == 3 and parent[:2] == ("search", "space")) or (
        len(parent) == 4 and parent[:2] == ("search", "per_strategy")
    ):
        return "distribution"
    if parent == ("resources", "slurm", "extra"):
        return "sbatch option"
    return "key"


def _type_message(err: ValidationError, path: KeyPath) -> str:
    expected = err.validator_value if isinstance(err.validator_value, list) else [err.validator_value]
    value = err.instance
    if path == () and value is None:
        return "the file is empty; a study needs at least study, models and datasets"
    msg = f"expected {' or '.join(_TYPE_WORDS[t] for t in expected)}, got {describe(value)}"
    if isinstance(value, str) and any(t in ("integer", "number", "boolean") for t in expected):
        return msg + "; write it without quotes"
    if isinstance(value, str) and "array" in expected:
        return msg + f"; write [{value}]"
    return msg


def _pattern_message(err: ValidationError, path: KeyPath) -> str:
    value = err.instance
    if path == ("study",):
        return f"invalid study name {value!r}: use {STUDY_RULE}"
    return f"{value!r}: {sbatch_problem(value) or 'does not match ' + err.validator_value}"


def _enum_message(err: ValidationError, path: KeyPath) -> str:
    value, allowed = err.instance, [str(v) for v in err.validator_value]
    msg = f"{value!r} is not allowed; {did_you_mean(str(value), allowed)}"
    if path == ("search", "method") and value == "tpe":
        msg += " (adaptive search is not available yet)"
    return msg


def _translate(err: ValidationError, report: Reporter) -> list[KeyPath]:
    """Report one jsonschema error; return the key paths it invalidates."""
    path: KeyPath = tuple(err.absolute_path)
    kind, value = err.validator, err.instance
    if kind == "additionalProperties":
        known = list(err.schema.get("properties", {}))
        extras = [k for k in value if k not in known]
        noun = _key_noun(path)
        for k in extras:
            report.error((*path, k), f"unknown {noun} {k!r}; {did_you_mean(k, known)}", key=True)
        return [(*path, k) for k in extras]
    if kind == "required":
        missing = [k for k in err.validator_value if k not in value]
        for k in missing:
            where = "at top level" if not path else "here"
            report.error((*path, k), f"missing required key {k!r} ({where})")
        return [(*path, k) for k in missing]
    if kind == "uniqueItems":
        for j, item in enumerate(value):
            i = next((i for i in range(j) if _same(value[i], item)), None)
            if i is not None:
                report.error((*path, j), f"{item!r} is listed twice (first at [{i}])")
        return [path]
    if kind == "type":
        msg = _type_message(err, path)
    elif kind == "enum":
        msg = _enum_message(err, path)
    elif kind == "pattern":
        msg = _pattern_message(err, path)
    elif kind in ("minItems", "maxItems") and err.schema.get("minItems") == err.schema.get("maxItems") == 2:
        msg = f"expected two values [low, high], got {len(value)}"
    elif kind == "minItems":
        msg = "must not be empty" if err.validator_value == 1 else f"needs at least {err.validator_value} items"
    elif kind == "minLength":
        msg = "must not be empty"
    elif kind in ("minProperties", "maxProperties"):
        options = ", ".join(err.schema.get("properties", {}))
        msg = f"give exactly one of {options}"
    elif kind == "minimum":
        msg = f"must be >= {err.validator_value}, got {value}"
    elif kind == "maximum":
        msg = f"must be <= {err.validator_value}, got {value}"
    else:  # pragma: no cover - keywords the schema does not use today
        msg = err.message
    report.error(path, msg)
    return [path]


def check_schema(data: Any, report: Reporter) -> set[KeyPath]:
    """Report every schema violation in ``data``; return the key paths that are not to be trusted."""
    bad: set[KeyPath] = set()
    for err in _validator().iter_errors(data):
        bad.update(_translate(err, report))
    return bad
