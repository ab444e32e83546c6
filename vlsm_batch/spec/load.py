"""``load_spec``: study file -> validated ``StudySpec``, or one ``SpecError`` that lists every problem found.

Order: the file itself (a regular file of at most 1 MiB) -> safe YAML (positions, no tags, no duplicates) -> JSON
Schema (whole-value patterns, finite numbers) -> semantic checks on the parts the schema accepted (names, parameters,
context_init tokens, Slurm profile) -> path fields (env expansion, absolute paths, output_dir usable, data_root a
folder, local weights present, hub ids well-formed) -> typed result. Nothing here writes a file or imports torch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from ..errors import SpecError
from ..weights import deprecation_message, parse_weights
from .build import build_spec
from .checks import run_checks
from .context import CheckContext
from .deprecations import note_at
from .paths import PATH_RULE, ExpandError, absolute, expand_vars, hub_id_problem, path_reason
from .places import control_problem, data_root_problem, output_dir_problem, weights_path_problem
from .report import Reporter
from .schema import check_schema
from .source import read_spec_text
from .types import StudySpec
from .yamlsafe import read_yaml


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
            elif text is not None and control_problem(text):
                self.ctx.report.error(("custom_datasets", name, "path"), str(control_problem(text)))
            elif text is not None:
                out[name] = absolute(text, self.base_dir)
        return out

    def weights(self) -> dict[str, str]:
        """Local paths must exist (file or folder); anything else must be a well-formed hub id (org/name)."""
        out: dict[str, str] = {}
        for model, raw in self.ctx.section("weights").items():
            where = ("weights", model)
            if not self.ctx.ok(where):
                continue
            text = self.expand(where, raw)
            if text is None:
                continue
            shown = f"{raw!r}" if text == raw else f"{raw!r} (= {text!r})"
            ref = parse_weights(text)  # hf-hub:ORG/NAME or ./ ../ / ~ path; a bare value is guessed (deprecated)
            if ref.kind == "hub":
                problem = control_problem(ref.value) or hub_id_problem(ref.value)
                if problem:
                    self.ctx.report.error(where, f"{shown} names a Hugging Face id: {problem}")
                out[model] = ref.value
                continue
            reason = path_reason(text, self.base_dir) or ("it starts with ./, ../, / or ~" if ref.kind else None)
            if ref.kind is None:
                note_at(self.ctx, where, deprecation_message(text, "path" if reason else "hub", raw))
            if reason:
                path = absolute(text, self.base_dir)
                problem = weights_path_problem(path)
                if problem:
                    self.ctx.report.error(where, f"{shown} is a local path ({reason}): {problem}")
                out[model] = str(path)
            else:
                problem = control_problem(text) or hub_id_problem(text)
                if problem:
                    self.ctx.report.error(where, f"{shown} is read as a Hugging Face id: {problem} ({PATH_RULE})")
                out[model] = text
        return out

    def check_output_dir(self, output_dir: Path | None) -> None:
        study = self.ctx.data.get("study") if self.ctx.ok(("study",)) else None
        if output_dir is None:
            return
        problem = output_dir_problem(output_dir, study if isinstance(study, str) else None)
        if problem:
            written = "output_dir" in self.ctx.data
            at = ("output_dir",) if written else ("study",)
            self.ctx.report.error(("output_dir",), problem if written else f"(default runs/<study>) {problem}", at=at)

    def check_data_root(self, data_root: Path | None) -> None:
        problem = None if data_root is None else data_root_problem(data_root)
        if problem:
            written = "data_root" in self.ctx.data
            at = ("data_root",) if written else ("study",)
            self.ctx.report.error(("data_root",), problem if written else f"(default data) {problem}", at=at)


def load_spec(path: str | Path, *, env: Mapping[str, str] | None = None, base_dir: Path | None = None) -> StudySpec:
    """Read and validate a study file.

    ``env`` (default ``os.environ``) feeds ``${VAR}`` in path fields; relative paths resolve against ``base_dir``
    (default: the working directory). Raises ``SpecError`` whose ``errors`` are ``FILE:LINE:COL: path: message``.
    """
    filename = str(path)
    text = read_spec_text(Path(path), filename)
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
    fields.check_output_dir(output_dir)
    fields.check_data_root(data_root)
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
