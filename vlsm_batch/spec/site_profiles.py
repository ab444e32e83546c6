"""Site profiles: ``<name>.yaml`` in ``$VLSM_SLURM_PROFILES`` folders, then the package's ``vlsm_batch/profiles/``,
named by ``resources.slurm.profile``.

A profile holds what a site needs on every job (partition, account, qos, constraint, allow-listed ``extra`` options)
plus ``setup`` shell lines (``module load ...``) written into the sbatch script, and optional ``limits``: the largest
``timeout_min``, ``mem_gb``, ``cpus_per_task`` and ``gpus_per_task`` a study using the profile may ask for (checked by
``validate``). Keys a study sets override the profile's. Setup lines are trusted (the profile is the site's file, not
the study's); the other values go through the same safe-character rule as the study file.

Part of the spec stage (``validate`` checks a profile's limits), so it imports nothing from ``jobs``; a profile is
read by the same safe YAML reader as the study file (no tags, no duplicate keys).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SpecError, SubmissionError
from .schema import load_schema, sbatch_problem
from .types import SlurmSpec
from .yamlsafe import read_yaml

PACKAGE_PROFILES = Path(__file__).resolve().parents[1] / "profiles"  # package data (pyproject package-data)
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # the schema's rule for resources.slurm.profile
_KEYS = ("partition", "account", "qos", "constraint")
LIMIT_KEYS = ("timeout_min", "mem_gb", "cpus_per_task", "gpus_per_task")  # resources keys a profile may cap


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
    return [*dirs, PACKAGE_PROFILES]


def find_profile(name: str) -> Path | None:
    if not _NAME.fullmatch(name):  # never a path: "../x" or "a/b" name no profile
        return None
    for d in profile_dirs():
        for suffix in (".yaml", ".yml"):
            if (d / f"{name}{suffix}").is_file():
                return d / f"{name}{suffix}"
    return None


def available_profiles() -> list[str]:
    """Names of every profile in the profile folders (first folder wins), sorted."""
    names: set[str] = set()
    for d in profile_dirs():
        try:
            files = list(d.iterdir())
        except OSError:
            continue
        names.update(f.stem for f in files if f.suffix in (".yaml", ".yml") and _NAME.fullmatch(f.stem) and f.is_file())
    return sorted(names)


def not_found_message(name: str) -> str:
    """Which profile is missing, where it was looked for, and which profiles exist."""
    where = ", ".join(str(d) for d in profile_dirs())
    names = available_profiles()
    known = f"profiles that exist: {', '.join(names)}" if names else "no profile exists there"
    return (
        f"Slurm profile {name!r} not found (looked for {name}.yaml in {where}); {known}. Fix the name, add "
        f"{name}.yaml to a folder listed in $VLSM_SLURM_PROFILES, or remove profile"
    )


def _extra_allowed() -> set[str]:
    props = load_schema()["properties"]["resources"]["properties"]["slurm"]["properties"]
    return set(props["extra"]["properties"])


def load_profile(name: str) -> tuple[dict[str, Any], Path]:
    path = find_profile(name)
    if path is None:
        raise SubmissionError(not_found_message(name))
    try:
        data = read_yaml(path.read_text(encoding="utf-8"), str(path)).data or {}
    except (OSError, UnicodeDecodeError) as exc:
        raise SubmissionError(f"{path}: cannot read this Slurm profile ({exc})") from None
    except SpecError as exc:
        raise SubmissionError(f"cannot read this Slurm profile: {'; '.join(exc.errors)}") from None
    if not isinstance(data, dict):
        raise SubmissionError(f"{path}: a profile is a mapping of partition, account, qos, constraint, extra, setup")
    problems = []
    unknown = set(data) - {*_KEYS, "extra", "setup", "description", "limits"}
    if unknown:
        problems.append(f"unknown keys {sorted(unknown)}")
    for key in _KEYS:
        value = data.get(key)
        if value is not None and sbatch_problem(str(value)):
            problems.append(f"{key}: {value!r} has characters sbatch values may not use")
    extra = data.get("extra") or {}
    allowed = _extra_allowed()
    for key, value in extra.items():
        if key not in allowed:
            problems.append(f"extra.{key}: not an allowed sbatch option ({', '.join(sorted(allowed))})")
        elif sbatch_problem(str(value)):
            problems.append(f"extra.{key}: {value!r} has characters sbatch values may not use")
    problems += _limit_problems(data.get("limits"))
    setup = data.get("setup") or []
    if not isinstance(setup, list) or not all(isinstance(s, str) and "\n" not in s for s in setup):
        problems.append("setup: a list of one-line shell commands")
    if problems:
        raise SubmissionError(f"{path}: " + "; ".join(problems))
    return data, path


def _limit_problems(limits: Any) -> list[str]:
    if limits is None:
        return []
    if not isinstance(limits, dict):
        return [f"limits: a mapping of {', '.join(LIMIT_KEYS)} to their largest allowed values"]
    problems = []
    for key, value in limits.items():
        if key not in LIMIT_KEYS:
            problems.append(f"limits.{key}: not a limit a profile may set ({', '.join(LIMIT_KEYS)})")
        elif not isinstance(value, int) or isinstance(value, bool) or value < (0 if key == "gpus_per_task" else 1):
            problems.append(f"limits.{key}: {value!r} is not a positive integer")
    return problems


def profile_limits(name: str) -> tuple[dict[str, int], Path]:
    """The ``limits`` a profile declares (resources key -> largest allowed value) and the profile's path."""
    data, path = load_profile(name)
    return dict(data.get("limits") or {}), path


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
