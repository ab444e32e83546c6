"""``vlsm-batch data verify``: is a dataset where the registry says, complete, readable and well-formed?

Checks, per dataset: the folder and annotation files exist and parse; every name stays inside its folder (no
``..``, absolute path or symlink out: the readers refuse them, so a trial would too); per-split counts match the
registry (or, for prepared natural datasets, ``prepared.json``); every image and mask named exists; prompts exist
under the prompt key (and are not empty). The deep part (``quick=False``) also decodes every file: unreadable
(e.g. truncated) files, image/mask size mismatches (the errors a trial would stop on), masks that are not binary
(0/255 or 0/1). Soft values in JPEG masks are a warning only (Kvasir and BKAI ship JPEG masks; training binarises
them at 0.5 once), as are size mismatches in a dataset that declares ``resize_masks``.

PIL and numpy only: ``submit`` runs the quick part as a preflight on a login node.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from . import DatasetInfo
from .medvlsm import DatasetLayoutError, DatasetPathError, Sample
from .readers import SPLITS, read_samples

ERROR, WARNING = "error", "warning"
LOSSY_MASK_SUFFIXES = (".jpg", ".jpeg")
SHOWN = 3  # examples listed per kind of finding


@dataclass
class Finding:
    severity: str  # error | warning
    kind: str  # short tag: missing, count, unreadable, size, resized, not-binary, soft-jpeg, prompt, path, layout
    message: str


@dataclass
class DatasetReport:
    name: str
    root: Path
    counts: dict[str, int | None] = field(default_factory=dict)
    expected: dict[str, int] | None = None
    findings: list[Finding] = field(default_factory=list)
    checked_files: bool = False

    @property
    def ok(self) -> bool:
        return not any(f.severity == ERROR for f in self.findings)

    def add(self, severity: str, kind: str, message: str) -> None:
        self.findings.append(Finding(severity, kind, message))


def expected_counts(info: DatasetInfo, root: Path) -> dict[str, int] | None:
    """Registry counts, or for a prepared dataset the per-split sample counts its ``prepared.json`` records."""
    if info.split_counts is not None:
        return dict(zip(SPLITS, info.split_counts, strict=True))
    manifest = root / "prepared.json"
    if info.layout == "image_dir" and manifest.is_file():
        try:
            counts = json.loads(manifest.read_text(encoding="utf-8"))["counts"]
            return {split: int(counts[split]["samples"]) for split in SPLITS}
        except (ValueError, KeyError, TypeError):
            return None
    return None


def verify_dataset(
    info: DatasetInfo, root: Path, *, quick: bool = False, prompt_key: str | None = None, threads: int | None = None
) -> DatasetReport:
    """All findings for one dataset folder (never raises on a malformed dataset: that is a finding)."""
    root = Path(root)
    report = DatasetReport(info.name, root)
    if not root.is_dir():
        report.add(ERROR, "missing", f"dataset folder not found: {root}")
        return report
    report.expected = expected_counts(info, root)
    if report.expected is None and info.layout == "image_dir":
        report.add(WARNING, "count", f"no prepared.json in {root}: counts not checked")
    per_split: dict[str, list[Sample]] = {}
    for split in SPLITS:
        try:
            samples = read_samples(info, root, split, prompt_key, check_files=False)
        except DatasetLayoutError as exc:
            kind = "path" if isinstance(exc, DatasetPathError) else "prompt" if "prompt" in str(exc) else "layout"
            report.add(ERROR, kind, f"{split}: {exc}")
            report.counts[split] = None
            continue
        per_split[split] = samples
        report.counts[split] = len(samples)
        if report.expected is not None and len(samples) != report.expected[split]:
            report.add(ERROR, "count", f"{split}: {len(samples)} samples, expected {report.expected[split]}")
        empty = [s.image.name for s in samples if not any(p.strip() for p in s.prompts)]
        if empty:
            report.add(ERROR, "prompt", f"{split}: {len(empty)} empty prompt(s), e.g. {', '.join(empty[:SHOWN])}")
        missing = sorted({str(p) for s in samples for p in (s.image, s.mask) if not p.is_file()})
        if missing:
            report.add(ERROR, "missing", f"{split}: {len(missing)} file(s) missing, e.g. {', '.join(missing[:SHOWN])}")
    if not quick:
        report.checked_files = True
        _check_contents(report, root, per_split, threads or min(8, os.cpu_count() or 1))
    return report


def _check_contents(report: DatasetReport, root: Path, per_split: dict[str, list[Sample]], threads: int) -> None:
    """Decode every image and mask once (shared files once): readability, sizes, binary masks."""
    pairs = {(s.image, s.mask, s.resize_mask) for samples in per_split.values() for s in samples}
    present = sorted(p for p in pairs if p[0].is_file() and p[1].is_file())
    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(lambda pair: _inspect_pair(pair, root), present))
    by_kind: dict[tuple[str, str], list[str]] = {}
    for problems in results:
        for severity, kind, text in problems:
            by_kind.setdefault((severity, kind), []).append(text)
    for (severity, kind), texts in sorted(by_kind.items()):
        label = {
            "unreadable": "unreadable file(s)",
            "size": "image/mask size mismatch(es) (a trial refuses them: fix the masks)",
            "resized": "mask(s) of another size than their image (resized to it when loaded, as the dataset declares)",
            "not-binary": "mask(s) not binary (values other than 0/255 or 0/1)",
            "soft-jpeg": "JPEG mask(s) with soft values (binarised at 0.5 when loaded)",
        }[kind]
        report.add(severity, kind, f"{len(texts)} {label}, e.g. {'; '.join(texts[:SHOWN])}")


def _shown(path: Path, root: Path) -> str:
    """A file as the message names it: relative to the dataset folder when inside it."""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _inspect_pair(pair: tuple[Path, Path, bool], root: Path) -> list[tuple[str, str, str]]:
    import numpy as np
    from PIL import Image

    image_path, mask_path, resize = pair
    out: list[tuple[str, str, str]] = []
    sizes = []
    for path in (image_path, mask_path):
        try:
            with Image.open(path) as im:
                im.load()
                sizes.append(im.size)
                if path == mask_path:
                    values = np.unique(np.asarray(im.convert("L")))
        except Exception as exc:  # any decoder failure is the finding
            out.append((ERROR, "unreadable", f"{path} ({type(exc).__name__}: {exc})"))
    if len(sizes) < 2:
        return out
    if sizes[0] != sizes[1]:
        (iw, ih), (mw, mh) = sizes
        text = f"{_shown(image_path, root)} {iw}x{ih} vs mask {_shown(mask_path, root)} {mw}x{mh}"
        out.append((WARNING, "resized", text) if resize else (ERROR, "size", text))
    allowed = {0, 255} if values.max(initial=0) > 1 else {0, 1}
    if not set(values.tolist()) <= allowed:
        lossy = mask_path.suffix.lower() in LOSSY_MASK_SUFFIXES
        kind, severity = ("soft-jpeg", WARNING) if lossy else ("not-binary", ERROR)
        shown = ", ".join(str(v) for v in values[:6].tolist()) + (", ..." if len(values) > 6 else "")
        out.append((severity, kind, f"{mask_path.name} has values {shown}"))
    return out


def format_reports(reports: list[DatasetReport]) -> str:
    """A table (one row per dataset) and the findings below it."""
    from ..textable import render

    rows = []
    for r in reports:
        found = "/".join("-" if r.counts.get(s) is None else str(r.counts[s]) for s in SPLITS) if r.counts else "-"
        expected = "/".join(str(r.expected[s]) for s in SPLITS) if r.expected else "-"
        errors = sum(f.severity == ERROR for f in r.findings)
        warnings = sum(f.severity == WARNING for f in r.findings)
        state = "ok" if r.ok else "PROBLEMS"
        rows.append([r.name, found, expected, "decoded" if r.checked_files else "names only", state, errors, warnings])
    lines = [render(["dataset", "train/val/test", "expected", "files", "state", "errors", "warnings"], rows)]
    for r in reports:
        for f in r.findings:
            lines.append(f"{r.name}: {f.severity}: {f.message}")
    return "\n".join(lines)
