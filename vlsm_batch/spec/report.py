"""One format for every spec problem, ``FILE:LINE:COL: key.path[2].sub: message``, so editors can jump to it."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .yamlsafe import YamlDoc

KeyPath = tuple[str | int, ...]
Pos = tuple[int, int]  # 1-based line, column

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_\-/]+")


def format_path(path: KeyPath) -> str:
    """``search.space.lr``, ``strategies[2]``; odd keys are quoted: ``weights['a b']``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


def format_line(filename: str, pos: Pos, path: KeyPath | None, message: str) -> str:
    where = f"{filename}:{pos[0]}:{pos[1]}:"
    shown = format_path(path) if path is not None else ""
    return f"{where} {shown}: {message}" if shown else f"{where} {message}"


class Reporter:
    """Collects errors (with positions from the YAML document) and non-fatal notes while a spec is checked."""

    def __init__(self, filename: str, doc: YamlDoc):
        self.filename = filename
        self.doc = doc
        self._errors: list[tuple[Pos, str]] = []
        self.notes: list[str] = []

    def error(self, path: KeyPath, message: str, *, key: bool = False, at: KeyPath | None = None) -> None:
        """Record ``message`` for ``path``, positioned at ``at`` (default ``path``; its key when ``key``)."""
        pos = self.doc.where(path if at is None else at, key=key)
        line = format_line(self.filename, pos, path, message)
        if all(line != seen for _, seen in self._errors):
            self._errors.append((pos, line))

    def note(self, message: str) -> None:
        if message not in self.notes:
            self.notes.append(message)

    @property
    def errors(self) -> list[str]:
        """Errors in file order."""
        return [line for _, line in sorted(self._errors, key=lambda e: e[0])]
