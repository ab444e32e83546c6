"""A small generic registry: register / get / list with fnmatch / contains, and errors with close matches."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Iterator
from typing import Generic, TypeVar

from .errors import UnknownNameError

T = TypeVar("T")


def close_matches(name: str, names: list[str]) -> list[str]:
    """Up to three names similar to ``name`` (for "did you mean" hints)."""
    return difflib.get_close_matches(name, names, n=3, cutoff=0.6)


def did_you_mean(name: str, names: list[str]) -> str:
    """`` did you mean 'x'?`` or a list of the valid names when nothing is close."""
    matches = close_matches(name, names)
    if matches:
        return "did you mean " + " or ".join(repr(m) for m in matches) + "?"
    return "valid: " + ", ".join(sorted(names))


class Registry(Generic[T]):
    """Name → record. Records are light (no torch); implementations are imported lazily by their users."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T) -> T:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        self._items[name] = item
        return item

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(f"unknown {self.kind} {name!r}; {did_you_mean(name, list(self._items))}") from None

    def unregister(self, name: str) -> T:
        """Remove a record (tests register toy entries and take them out again)."""
        return self._items.pop(name)

    def in_order(self) -> list[str]:
        """Names in registration order (generated files list records as their catalog declares them)."""
        return list(self._items)

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._items if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))
