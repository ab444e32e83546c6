"""What every semantic check reads: the schema-shaped data, the reporter, and which parts failed the schema."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..models import MODELS, ModelInfo
from ..strategies import STRATEGIES, StrategyInfo
from .report import KeyPath, Reporter


@dataclass
class CheckContext:
    data: dict[str, Any]
    report: Reporter
    bad: set[KeyPath]  # paths the schema rejected: checks skip anything that overlaps them

    def ok(self, *paths: KeyPath) -> bool:
        """True when no schema error lies at, above or below any of ``paths`` (the whole value is sound)."""
        return not any(b[: len(p)] == p or p[: len(b)] == b for p in paths for b in self.bad)

    def section(self, *path: str) -> dict[str, Any]:
        """The mapping at ``path`` ({} when absent or itself rejected); check each child with ``ok`` before use."""
        node: Any = self.data
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        sound = not any(tuple(path)[: len(b)] == b for b in self.bad)
        return node if isinstance(node, dict) and sound else {}

    def items(self, key: str) -> list[tuple[int, str]]:
        """(index, name) of a top-level name list, schema-valid entries only."""
        values = self.data.get(key, [])
        if not isinstance(values, list):
            return []
        return [(i, v) for i, v in enumerate(values) if isinstance(v, str) and self.ok((key, i))]

    def models(self) -> list[ModelInfo]:
        """Listed models that exist in the catalog."""
        return [MODELS.get(m) for _, m in self.items("models") if m in MODELS]

    def strategies(self) -> list[StrategyInfo]:
        """Listed prompt strategies and baselines that exist, each in its right list."""
        out = [STRATEGIES.get(s) for _, s in self.items("strategies") if s in STRATEGIES]
        out += [STRATEGIES.get(s) for _, s in self.items("baselines") if s in STRATEGIES]
        seen: dict[str, StrategyInfo] = {}
        for info in out:
            seen.setdefault(info.name, info)
        return list(seen.values())

    def listed_names(self) -> list[str]:
        """Names written under strategies and baselines, known or not."""
        return [s for _, s in self.items("strategies")] + [s for _, s in self.items("baselines")]
