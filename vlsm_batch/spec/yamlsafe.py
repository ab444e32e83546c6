"""Read YAML as plain data plus the position of every key and value, and refuse anything but plain data.

Why not ``YAML(typ="safe").load``: it would accept ``!!str``-style tags, silently keep the last of two duplicate
keys, expand alias bombs without limit and forget where each value came from. Here the document is composed into
nodes (nothing is constructed), scalars are resolved with the YAML 1.2 core schema by our own rules, duplicate keys
are found by ruamel.yaml's own ``check_mapping_key`` (every one of them, not just the first), and every problem is
reported with its line and column.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.constructor import DuplicateKeyError, SafeConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ..errors import SpecError
from .report import KeyPath, Pos, format_line

MAX_NODES = 100_000  # after alias expansion: a spec is a few hundred nodes, a "billion laughs" is not
MAX_DEPTH = 64

# YAML 1.2 core schema (https://yaml.org/spec/1.2.2/#1032-tag-resolution), plain scalars only.
_NULL = re.compile(r"(?:null|Null|NULL|~|)")
_TRUE = re.compile(r"(?:true|True|TRUE)")
_FALSE = re.compile(r"(?:false|False|FALSE)")
_INT10 = re.compile(r"[-+]?[0-9]+")
_INT8 = re.compile(r"0o[0-7]+")
_INT16 = re.compile(r"0x[0-9a-fA-F]+")
_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")
_INF = re.compile(r"[-+]?\.(?:inf|Inf|INF)")
_NAN = re.compile(r"\.(?:nan|NaN|NAN)")


def resolve_plain(text: str) -> Any:
    """The value of an untagged, unquoted scalar under the YAML 1.2 core schema (``1e-5`` is a float)."""
    if _NULL.fullmatch(text):
        return None
    if _TRUE.fullmatch(text):
        return True
    if _FALSE.fullmatch(text):
        return False
    try:
        if _INT10.fullmatch(text):
            return int(text, 10)
        if _INT8.fullmatch(text):
            return int(text[2:], 8)
        if _INT16.fullmatch(text):
            return int(text[2:], 16)
    except ValueError:  # more digits than Python converts (int_max_str_digits): leave it as text
        return text
    if _FLOAT.fullmatch(text):
        return float(text)
    if _INF.fullmatch(text):
        return -math.inf if text.startswith("-") else math.inf
    if _NAN.fullmatch(text):
        return math.nan
    return text


@dataclass
class YamlDoc:
    """Plain data (dict / list / str / int / float / bool / None) and 1-based positions by key path."""

    data: Any
    values: dict[KeyPath, Pos] = field(default_factory=dict)  # where each value / list item starts
    keys: dict[KeyPath, Pos] = field(default_factory=dict)  # where each mapping key starts

    def where(self, path: KeyPath, *, key: bool = False) -> Pos:
        """Position of ``path`` (its key when ``key``), else of its nearest ancestor's key; (1, 1) at worst."""
        p = tuple(path)
        while True:
            if key and p in self.keys:
                return self.keys[p]
            if p in self.values:
                return self.values[p]
            if p in self.keys:
                return self.keys[p]
            if not p:
                return (1, 1)
            p, key = p[:-1], True


def _pos(node: Node) -> Pos:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


class _Walker:
    """Turns composed nodes into plain data, recording positions and collecting problems."""

    def __init__(self, doc: YamlDoc):
        self.doc = doc
        self.constructor = SafeConstructor()
        self.constructor.allow_duplicate_keys = False  # raise, never the "future" warning
        self.problems: list[tuple[Pos, KeyPath | None, str]] = []
        self.count = 0
        self.stack: set[int] = set()

    def walk(self, node: Node, path: KeyPath) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise _TooBig(_pos(node), path)
        self.doc.values.setdefault(path, _pos(node))
        if id(node) in self.stack:
            self.problems.append((_pos(node), path, "recursive alias: a node cannot contain itself"))
            return None
        if isinstance(node, ScalarNode):
            return node.value if node.style else resolve_plain(node.value)
        self.stack.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                return [self.walk(item, (*path, i)) for i, item in enumerate(node.value)]
            if isinstance(node, MappingNode):
                return self._mapping(node, path)
        finally:
            self.stack.discard(id(node))
        raise AssertionError(f"unexpected YAML node {node!r}")  # pragma: no cover

    def _mapping(self, node: MappingNode, path: KeyPath) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                self.problems.append((_pos(key_node), path, "mapping keys must be plain text"))
                continue
            key = key_node.value  # keys are always text: `1:` is the key "1"
            if key == "<<" and not key_node.style:
                self.problems.append(
                    (_pos(key_node), path, "merge keys (<<) are not supported; refer to a whole mapping with *alias")
                )
                continue
            here = (*path, key)
            try:  # ruamel.yaml's own duplicate check (DuplicateKeyError carries the duplicate's line and column)
                self.constructor.check_mapping_key(node, key_node, out, key, None)
            except DuplicateKeyError as dup:
                line, col = self.doc.keys[here]
                mark = dup.problem_mark
                pos = (mark.line + 1, mark.column + 1) if mark is not None else _pos(key_node)
                self.problems.append((pos, here, f"duplicate key {key!r} (first at line {line}, col {col})"))
                self.count += 1
                continue
            self.doc.keys[here] = _pos(key_node)
            out[key] = self.walk(value_node, here)
        return out


class _TooBig(Exception):
    def __init__(self, pos: Pos, path: KeyPath):
        self.pos, self.path = pos, path


def _yaml() -> YAML:
    y = YAML(typ="safe", pure=True)
    y.max_depth = MAX_DEPTH
    return y


def _explicit_tags(text: str) -> Iterator[tuple[Pos, str]]:
    """Every explicit tag (``!!python/...``, ``!foo``, ``!!str``, ``!``) with the position of its node."""
    for event in _yaml().parse(text):
        tag = getattr(event, "tag", None)
        if tag is not None:
            shown = str(tag).replace("tag:yaml.org,2002:", "!!", 1)  # as written: !!python/..., not the URI
            yield (event.start_mark.line + 1, event.start_mark.column + 1), shown


def _syntax_error(filename: str, exc: YAMLError) -> SpecError:
    if isinstance(exc, MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem:
            problem = f"{problem} ({exc.context})"
        pos = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        return SpecError([format_line(filename, pos, None, f"YAML syntax error: {problem}")])
    return SpecError([format_line(filename, (1, 1), None, f"YAML error: {exc}")])


def read_yaml(text: str, filename: str) -> YamlDoc:
    """Parse ``text``; raise SpecError (``filename:line:col: ...`` lines) on syntax errors, tags or duplicates."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a reused anchor name is legal YAML; ruamel only warns
            tags = list(_explicit_tags(text)) if "!" in text else []  # a tag needs a '!': skip the second parse
            root = _yaml().compose(text)
    except YAMLError as exc:
        raise _syntax_error(filename, exc) from None
    except RecursionError:
        raise SpecError([format_line(filename, (1, 1), None, "YAML nested too deeply")]) from None

    doc = YamlDoc(data=None)
    walker = _Walker(doc)
    if root is not None:
        try:
            doc.data = walker.walk(root, ())
        except _TooBig as big:
            msg = f"more than {MAX_NODES} YAML nodes after expanding aliases; a study file never needs that many"
            raise SpecError([format_line(filename, big.pos, big.path, msg)]) from None
    by_pos = {pos: path for path, pos in [*doc.keys.items(), *doc.values.items()]}
    problems = [
        (pos, by_pos.get(pos), f"explicit YAML tag {tag!r} is not allowed (plain data only); remove it")
        for pos, tag in tags
    ]
    problems += walker.problems
    if problems:
        problems.sort(key=lambda p: p[0])
        raise SpecError([format_line(filename, pos, path, msg) for pos, path, msg in problems])
    return doc
