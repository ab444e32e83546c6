"""Write the strategy-parameter blocks of ``study.schema.json`` from the strategy catalog.

Why: a parameter is declared once, in its ``StrategyInfo`` (``vlsm_batch.strategies``); the schema's ``train``
entries (fix a parameter for the study) and ``$defs.space`` entries (search it) follow from that declaration. Only
those blocks are generated: everything else in the schema is hand-written and kept as the file has it now (each
run re-reads both copies and splices the blocks in, so concurrent hand edits elsewhere are never overwritten).

    python -m vlsm_batch.schema.generate          # rewrite both copies where they differ
    python -m vlsm_batch.schema.generate --check  # exit 1 and name the stale copies
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..strategies import STRATEGIES, ParamSpec

COMMAND = "python -m vlsm_batch.schema.generate"
PACKAGE_COPY = Path(__file__).with_name("study.schema.json")
ROOT_COPY = PACKAGE_COPY.parents[2] / "schema" / "study.schema.json"  # the repository's copy (absent when installed)
_KIND_TO_TYPE = {"float": "number", "int": "integer", "bool": "boolean", "str": "string"}
_FIX = "Fix {name} for every strategy that takes it"


def catalog_params() -> list[ParamSpec]:
    """One spec per parameter name, in registration order (the first declaration names its type and help)."""
    seen: dict[str, ParamSpec] = {}
    for strategy in STRATEGIES.in_order():
        for spec in STRATEGIES.get(strategy).params:
            seen.setdefault(spec.name, spec)
    return list(seen.values())


def fixed_entry(spec: ParamSpec) -> dict[str, Any]:
    """``train.<name>``: the value every strategy that takes the parameter gets."""
    kind = _KIND_TO_TYPE[spec.kind]
    return {
        "type": [kind, "null"] if spec.nullable else kind,
        "description": f"{_FIX.format(name=spec.name)} ({spec.help}); unset: each strategy's own default.",
    }


def space_entry(spec: ParamSpec) -> dict[str, Any]:
    """``$defs.space.<name>``: a search dimension (shared space and per_strategy)."""
    return {"$ref": "#/$defs/distribution", "description": f"Search {spec.name}: {spec.help}."}


def _generated(key: str, entry: Any) -> bool:
    """A ``train`` entry this script wrote (also one for a parameter the catalog no longer declares)."""
    return isinstance(entry, dict) and str(entry.get("description", "")).startswith(_FIX.format(name=key))


def splice(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its parameter blocks replaced by the catalog's; every other key is kept as it is."""
    params = catalog_params()
    train = schema["properties"]["train"]
    kept = {k: v for k, v in train["properties"].items() if not _generated(k, v)}
    train["properties"] = {**kept, **{p.name: fixed_entry(p) for p in params}}
    schema["$defs"]["space"]["properties"] = {p.name: space_entry(p) for p in params}
    return schema


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def generated_text(text: str) -> str:
    """The file content ``text`` should have: its own hand-written parts with the catalog's parameter blocks."""
    return render(splice(json.loads(text)))


def copies() -> list[Path]:
    return [p for p in (ROOT_COPY, PACKAGE_COPY) if p.is_file()]


def stale_copies() -> list[Path]:
    """Copies whose parameter blocks differ from the catalog's (each read fresh)."""
    return [p for p in copies() if generated_text(p.read_text(encoding="utf-8")) != p.read_text(encoding="utf-8")]


def write() -> list[Path]:
    """Splice the blocks into each copy as it is on disk now; returns the copies rewritten."""
    changed = []
    for path in copies():
        text = path.read_text(encoding="utf-8")
        new = generated_text(text)
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when a copy is stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_copies()
        for path in stale:
            print(f"{path}: strategy parameter blocks differ from the catalog; run `{COMMAND}`", file=sys.stderr)
        return 1 if stale else 0
    for path in write():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
