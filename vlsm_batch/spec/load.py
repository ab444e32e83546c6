"""``load_spec``: study file -> validated ``StudySpec``, or one ``SpecError`` that lists every problem found.

Order: safe YAML (positions, no tags, no duplicates) -> JSON Schema -> semantic checks on the parts the schema
accepted -> path fields (env expansion, absolute paths) -> typed result. Nothing here imports torch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from ..errors import SpecError
from .build import build_spec
from .checks import run_checks
from .context import CheckContext
from .paths import ExpandError, absolute, expand_vars, looks_like_path
from .report import Reporter, format_line
from .schema import check_schema
from .types import StudySpec
from .yamlsafe import read_yaml


def _read(path: Path, filename: str) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SpecError([f"{filename}: cannot read study file: {exc.strerror or exc}"]) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise SpecError([format_line(filename, (line, col), None, "not UTF-8 text")]) from None


class _PathFields:
    """Expands and resolves output_dir, data_root and weights values, reporting problems at their values."""

    def __init__(self, ctx: CheckContext, env: Mapping[str, str], base_dir: Path):
        self.ctx, self.env, self.base_dir = ctx, env, base_dir

    def expand(self, path: tuple[str, ...], raw: str) -> str | None:
        try:
            return expand_vars(raw, self.env)
        except ExpandError as exc:
            self.ctx.report.error(path, str(exc))
            return None

    def directory(self, key: str, default: str) -> Path | None:
        if not self.ctx.ok((key,)):
            return None
        text = self.expand((key,), self.ctx.data.get(key, default))
        if text == "":
            self.ctx.report.error((key,), "expands to an empty path")
            return None
        return None if text is None else absolute(text, self.base_dir)

    def custom_paths(self) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for name, d in self.ctx.section("custom_datasets").items():
            if not self.ctx.ok(("custom_datasets", name)) or not isinstance(d, dict) or "path" not in d:
                continue
            text = self.expand(("custom_datasets", name, "path"), d["path"])
            if text == "":
                self.ctx.report.error(("custom_datasets", name, "path"), "expands to an empty path")
            elif text is not None:
                out[name] = absolute(text, self.base_dir)
        return out

    def weights(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for model, raw in self.ctx.section("weights").items():
            if not self.ctx.ok(("weights", model)):
                continue
            text = self.expand(("weights", model), raw)
            if text is not None:
                out[model] = str(absolute(text, self.base_dir)) if looks_like_path(text, self.base_dir) else text
        return out


def load_spec(path: str | Path, *, env: Mapping[str, str] | None = None, base_dir: Path | None = None) -> StudySpec:
    """Read and validate a study file.

    ``env`` (default ``os.environ``) feeds ``${VAR}`` in path fields; relative paths resolve against ``base_dir``
    (default: the working directory). Raises ``SpecError`` whose ``errors`` are ``FILE:LINE:COL: path: message``.
    """
    filename = str(path)
    text = _read(Path(path), filename)
    doc = read_yaml(text, filename)
    report = Reporter(filename, doc)
    bad = check_schema(doc.data, report)
    if not isinstance(doc.data, dict):
        raise SpecError(report.errors)

    ctx = CheckContext(doc.data, report, bad)
    run_checks(ctx)
    base = Path(base_dir).absolute() if base_dir is not None else Path.cwd()
    fields = _PathFields(ctx, os.environ if env is None else env, base)
    study = doc.data.get("study", "study")
    output_dir = fields.directory("output_dir", f"runs/{study}")
    data_root = fields.directory("data_root", "data")
    weights = fields.weights()
    custom_paths = fields.custom_paths()
    if report.errors:
        raise SpecError(report.errors)
    assert output_dir is not None and data_root is not None
    return build_spec(
        doc.data,
        path=Path(os.path.abspath(path)),
        text=text,
        output_dir=output_dir,
        data_root=data_root,
        weights=weights,
        notes=report.notes,
        custom_paths=custom_paths,
    )
