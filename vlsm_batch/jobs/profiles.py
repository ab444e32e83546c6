"""Site profiles: ``slurm/profiles/<name>.yaml`` (or ``$VLSM_SLURM_PROFILES``), named by ``resources.slurm.profile``.

A profile holds what a site needs on every job (partition, account, qos, constraint, allow-listed ``extra`` options)
plus ``setup`` shell lines (``module load ...``) written into the sbatch script. Keys a study sets override the
profile's. Setup lines are trusted (the profile is the site's file, not the study's); the other values go through the
same safe-character rule as the study file.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SubmissionError
from ..spec.types import SlurmSpec

REPO_PROFILES = Path(__file__).resolve().parents[2] / "slurm" / "profiles"
_SAFE = re.compile(r"^[A-Za-z0-9_.,:=@+%/\[\]&|*-]{1,256}$")
_KEYS = ("partition", "account", "qos", "constraint")


@dataclass(frozen=True)
class SlurmOptions:
    """The study's Slurm options after applying its profile."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    setup: tuple[str, ...] = ()
    profile: str | None = None
    profile_path: str | None = None


def profile_dirs() -> list[Path]:
    dirs = [Path(p) for p in os.environ.get("VLSM_SLURM_PROFILES", "").split(os.pathsep) if p]
    return [*dirs, REPO_PROFILES]


def find_profile(name: str) -> Path | None:
    for d in profile_dirs():
        for suffix in (".yaml", ".yml"):
            if (d / f"{name}{suffix}").is_file():
                return d / f"{name}{suffix}"
    return None


def _extra_allowed() -> set[str]:
    schema = Path(__file__).resolve().parents[1] / "schema" / "study.schema.json"
    props = json.loads(schema.read_text())["properties"]["resources"]["properties"]["slurm"]["properties"]
    return set(props["extra"]["properties"])


def load_profile(name: str) -> tuple[dict[str, Any], Path]:
    import yaml

    path = find_profile(name)
    if path is None:
        where = ", ".join(str(d) for d in profile_dirs())
        raise SubmissionError(f"Slurm profile {name!r} not found (looked for {name}.yaml in {where})")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise SubmissionError(f"{path}: a profile is a mapping of partition, account, qos, constraint, extra, setup")
    problems = []
    unknown = set(data) - {*_KEYS, "extra", "setup", "description"}
    if unknown:
        problems.append(f"unknown keys {sorted(unknown)}")
    for key in _KEYS:
        value = data.get(key)
        if value is not None and not _SAFE.match(str(value)):
            problems.append(f"{key}: {value!r} has characters sbatch values may not use")
    extra = data.get("extra") or {}
    allowed = _extra_allowed()
    for key, value in extra.items():
        if key not in allowed:
            problems.append(f"extra.{key}: not an allowed sbatch option ({', '.join(sorted(allowed))})")
        elif not _SAFE.match(str(value)):
            problems.append(f"extra.{key}: {value!r} has characters sbatch values may not use")
    setup = data.get("setup") or []
    if not isinstance(setup, list) or not all(isinstance(s, str) and "\n" not in s for s in setup):
        problems.append("setup: a list of one-line shell commands")
    if problems:
        raise SubmissionError(f"{path}: " + "; ".join(problems))
    return data, path


def resolve_options(slurm: SlurmSpec) -> SlurmOptions:
    """The study's options over its profile's (no profile: the study's own)."""
    if not slurm.profile:
        return SlurmOptions(slurm.partition, slurm.account, slurm.qos, slurm.constraint, dict(slurm.extra))
    data, path = load_profile(slurm.profile)
    merged = {k: getattr(slurm, k) or data.get(k) for k in _KEYS}
    extra = {**{k: str(v) for k, v in (data.get("extra") or {}).items()}, **slurm.extra}
    return SlurmOptions(
        **merged,
        extra=extra,
        setup=tuple(data.get("setup") or ()),
        profile=slurm.profile,
        profile_path=str(path),
    )
