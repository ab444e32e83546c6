"""Validate plain spec data against ``study.schema.json`` and turn jsonschema errors into positioned, actionable lines.

The schema file is the single source of truth for key names, types and defaults; this module only words its
errors (unknown keys with close matches, missing keys at their parent, duplicates at the second occurrence).
Two rules JSON Schema means but Python's jsonschema does not apply are enforced here: ``pattern`` matches the whole
value with ECMA-262 semantics (Python's ``$`` also matches before a final newline, so ``study: "x\\n"`` passed), and
every number is finite (``.nan`` slips through ``minimum``) and every integer within +-2^53.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator, ValidationError, validators

from ..registry import did_you_mean
from .report import KeyPath, Reporter

SBATCH_ALLOWED = "letters, digits and _ . , : = @ + % / - [ ] & | *"  # words the schema's sbatchValue pattern
STUDY_RULE = "1-64 letters, digits, '_', '.', '-', starting with a letter or digit"
MAX_INT = 2**53  # beyond this an integer has no exact float; nothing in a study needs one (float() may overflow)


@cache
def load_schema() -> dict[str, Any]:
    """The study schema shipped in the package (identical to the repository's ``schema/study.schema.json``)."""
    text = resources.files("vlsm_batch").joinpath("schema").joinpath("study.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


def _is_int(_checker: Any, value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def ecma_pattern(pattern: str) -> str:
    """``pattern`` for Python's ``re`` with JSON Schema's (ECMA-262) meaning: ``$`` outside a class becomes ``\\Z``.

    In ECMA-262 (no multiline flag) ``$`` matches only at the end of the input; Python's ``$`` also matches before a
    final newline, so jsonschema's ``re.search`` accepted ``"x\\n"`` for ``^[a-z]+$``.
    """
    out: list[str] = []
    i, in_class = 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            head = "[^" if pattern.startswith("[^", i) else "["
            if pattern.startswith("]", i + len(head)):  # a leading ']' is a literal member of the class
                head += "]"
            out.append(head)
            i += len(head)
            continue
        elif c == "$":
            c = r"\Z"
        out.append(c)
        i += 1
    return "".join(out)


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(ecma_pattern(pattern))


def pattern_matches(pattern: str, value: str) -> bool:
    """Whether ``value`` satisfies a schema ``pattern`` (ECMA-262 semantics: no match before a final newline)."""
    return _compiled(pattern).search(value) is not None


def _pattern(validator: Any, pattern: str, instance: Any, schema: dict[str, Any]) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not pattern_matches(pattern, instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


# JSON Schema calls 1.0 an integer; a YAML file that says `max_epochs: 1.0` should be told it is not.
_StrictValidator = validators.extend(
    Draft202012Validator,
    validators={"pattern": _pattern},
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_int),
)


@cache
def _validator() -> Any:
    return _StrictValidator(load_schema())


@cache
def _sbatch_rule() -> tuple[re.Pattern[str], int]:
    """The character class and length limit of the schema's ``$defs.sbatchValue``: the one definition of what
    sbatch may be given (spec values, site profiles and their ``extra`` options all check against it)."""
    pattern = load_schema()["$defs"]["sbatchValue"]["pattern"]
    rule = re.fullmatch(r"\^(\[.+\])\{1,(\d+)\}\$", pattern)
    if rule is None:
        raise ValueError(f"$defs.sbatchValue.pattern {pattern!r} is not ^[...]{{1,N}}$")
    return re.compile(rule.group(1)), int(rule.group(2))


def sbatch_problem(value: str) -> str | None:
    """Why ``value`` may not be passed to sbatch, or None when it is safe (the schema's own pattern)."""
    char, limit = _sbatch_rule()
    if not value:
        return "must not be empty"
    bad = next((c for c in value if not char.fullmatch(c)), None)
    if bad is not None:
        return f"character {bad!r} is not allowed in an sbatch value; allowed: {SBATCH_ALLOWED}"
    if len(value) > limit:
        return f"longer than {limit} characters ({len(value)})"
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


def _newline_hint(value: str) -> str:
    if value != value.rstrip():
        return "; remove the trailing newline or spaces (a quoted or block scalar keeps them)"
    return ""


def _pattern_message(err: ValidationError, path: KeyPath) -> str:
    value = err.instance
    if path == ("study",):
        return f"invalid study name {value!r}: use {STUDY_RULE}{_newline_hint(value)}"
    if path[:2] == ("resources", "slurm"):
        return f"{value!r}: {sbatch_problem(value) or 'does not match ' + err.validator_value}"
    if path and path[-1] == "prompt_key":
        return f"invalid prompt key {value!r}: use p followed by digits, e.g. p1{_newline_hint(value)}"
    return f"{value!r} does not match {err.validator_value}{_newline_hint(value)}"


def _name_message(err: ValidationError) -> str:
    """A ``propertyNames`` pattern failure: the offending key is the instance."""
    return (
        f"invalid dataset name {err.instance!r}: use 1-64 lower-case letters, digits, '_' and '-', starting with a "
        f"letter or digit{_newline_hint(err.instance)}"
    )


def _enum_message(err: ValidationError, path: KeyPath) -> str:
    value, allowed = err.instance, [str(v) for v in err.validator_value]
    msg = f"{value!r} is not allowed; {did_you_mean(str(value), allowed)}"
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
    if kind == "pattern" and "propertyNames" in err.schema_path:
        report.error((*path, value), _name_message(err), key=True)
        return [(*path, value)]
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
    elif kind == "anyOf":  # train.loggers: one name or a list of names
        names: list[Any] = next((o["enum"] for o in err.validator_value if "enum" in o), [])
        shown = repr(value) if isinstance(value, list) else describe(value)
        msg = f"{shown} is not valid: give one of {', '.join(map(str, names))}, or a list of them (each once)"
    elif kind == "oneOf" and path == ("resources", "pack"):
        msg = (
            f"{describe(value)} is not valid: give a whole number of trials per pack from 1 to 64 (1 = one trial per "
            'process, the default), or "auto" (as many as the device memory allows, up to 16)'
        )
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
        msg = f"must be <= {err.validator_value}, got {value}{_MAXIMUM_HINTS.get(path, '')}"
    else:  # pragma: no cover - keywords the schema does not use today
        msg = err.message
    report.error(path, msg)
    return [path]


_MAXIMUM_HINTS: dict[KeyPath, str] = {
    ("resources", "timeout_min"): (
        " (30 days; Slurm reads far larger values as UNLIMITED). A trial that hits its limit is requeued and resumes "
        "from its checkpoint, so a shorter limit loses nothing"
    ),
    ("resources", "mem_gb"): " (GB per trial)",
    ("resources", "cpus_per_task"): " (cores per trial)",
    ("resources", "gpus_per_task"): " (GPUs per trial)",
}


def _unusable_numbers(node: Any, path: KeyPath = ()) -> Iterator[tuple[KeyPath, str]]:
    """Every .nan / .inf, and every integer beyond +-2^53, with why."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _unusable_numbers(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _unusable_numbers(value, (*path, i))
    elif isinstance(node, float) and not math.isfinite(node):
        shown = ".nan" if math.isnan(node) else ("-.inf" if node < 0 else ".inf")
        yield path, f"{shown} is not a finite number; write a plain number (a study never needs .nan or .inf)"
    elif isinstance(node, int) and not isinstance(node, bool) and abs(node) > MAX_INT:
        yield (
            path,
            f"this {len(str(abs(node)))}-digit integer is too large (the limit is +-2^53); write a smaller number",
        )


def check_schema(data: Any, report: Reporter) -> set[KeyPath]:
    """Report every schema violation in ``data``; return the key paths that are not to be trusted."""
    bad: set[KeyPath] = set()
    numbers = dict(_unusable_numbers(data))
    for path, msg in numbers.items():
        report.error(path, msg)
    bad.update(numbers)
    for err in _validator().iter_errors(data):
        if tuple(err.absolute_path) in numbers:  # already reported, e.g. `.inf` above a maximum
            continue
        bad.update(_translate(err, report))
    return bad
