"""The import graph of ``vlsm_batch`` runs one way: leaves, then catalogs, then the stages in pipeline order, then the
command line. A module may import its own top-level package and any package earlier in ``ORDER``, never a later one,
so each layer can be read, tested and reused without the layers built on it.

Every module is parsed with ``ast`` (nothing is imported): module-level and function-level imports both count, as
do ``importlib.import_module("vlsm_batch....")`` calls with a literal name.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "vlsm_batch"

# Leaves: plain helpers that import no catalog and no stage (``__init__`` is vlsm_batch/__init__.py: the version).
LEAVES = (
    "__init__", "errors", "objectives", "registry", "atomic", "layout", "tempdirs", "textable", "extras", "weights",
)  # fmt: skip
# Catalogs: what can be named in a spec. They import leaves, and earlier catalogs only (models may import
# strategies, strategies must not import models). Then ``schema``: study.schema.json, generated from the catalogs
# and read by the spec layer.
CATALOGS = ("strategies", "models", "datasets", "schema")
# Stages, in pipeline order: a spec expands into trials; search asks Optuna for the adaptive ones; metrics are what
# training computes and writes; jobs launch, run (the worker calls training) and track trials; analysis reads the
# study folder. Last the command line, which may import anything and which nothing imports.
STAGES = ("spec", "trials", "search", "metrics", "training", "jobs", "analysis")
TOP = ("cli", "__main__")
ORDER = (*LEAVES, *CATALOGS, *STAGES, *TOP)
RANK = {name: i for i, name in enumerate(ORDER)}

Edge = tuple[str, int, str, str, str]  # (file, line, imported module, importing package, imported package)


def _module_parts(path: Path) -> list[str]:
    parts = ["vlsm_batch", *path.relative_to(PACKAGE).with_suffix("").parts]
    return parts[:-1] if parts[-1] == "__init__" else parts


def _top(module: str) -> str | None:
    """The top-level package (or module) of vlsm_batch that ``module`` belongs to; None outside vlsm_batch."""
    parts = module.split(".")
    if parts[0] != "vlsm_batch":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def _imported(node: ast.AST, path: Path) -> list[str]:
    """The dotted modules (or module.attribute) that one node imports."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            here = _module_parts(path)
            base = here if path.name == "__init__.py" else here[:-1]
            base = base[: len(base) - (node.level - 1)]
            module = ".".join(base + ([node.module] if node.module else []))
        else:
            module = node.module or ""
        if module == "vlsm_batch":  # `from vlsm_batch import cli` names a package; `import __version__` the root
            return [f"vlsm_batch.{a.name}" if (PACKAGE / a.name).exists() or (PACKAGE / f"{a.name}.py").exists()
                    else module for a in node.names]  # fmt: skip
        return [module]
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute | ast.Name)
        and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ):
        return [node.args[0].value]
    return []


def import_edges() -> list[Edge]:
    """Every import from one top-level package of vlsm_batch into another."""
    edges = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = _top(".".join(_module_parts(path)))
        assert source is not None
        if path == PACKAGE / "__init__.py":
            source = "__init__"
        rel = path.relative_to(PACKAGE.parent).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            for module in _imported(node, path):
                target = _top(module)
                if target is not None and target != source:
                    edges.append((rel, node.lineno, module, source, target))
    return edges


def _show(edges: list[Edge]) -> str:
    return "\n".join(f"{f}:{line}: {src} imports {mod} ({dst})" for f, line, mod, src, dst in edges)


def test_every_package_has_a_place_in_the_order() -> None:
    names = {p.stem for p in PACKAGE.glob("*.py")} | {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    missing = sorted(names - set(ORDER))
    assert not missing, f"add {missing} to LEAVES, CATALOGS, STAGES or TOP in {__file__}"


def test_the_scan_sees_imports() -> None:
    """Guards the scanner itself: known forward edges, relative and function-level, are found."""
    found = {(src, dst) for _, _, _, src, dst in import_edges()}
    assert {("trials", "spec"), ("jobs", "training"), ("cli", "analysis"), ("__main__", "cli")} <= found
    assert ("cli", "__init__") in found  # `from .. import __version__`


def test_imports_run_one_way() -> None:
    backward = [e for e in import_edges() if e[4] in RANK and e[3] in RANK and RANK[e[4]] > RANK[e[3]]]
    assert not backward, (
        f"imports against the order {' -> '.join(ORDER)} (a module may import only earlier packages):\n"
        + _show(backward)
    )


def test_nothing_imports_the_command_line() -> None:
    into_cli = [e for e in import_edges() if e[4] == "cli" and e[3] != "__main__"]
    assert not into_cli, "only vlsm_batch/__main__.py may import vlsm_batch.cli:\n" + _show(into_cli)
