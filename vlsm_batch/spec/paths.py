"""Path fields: ``${VAR}`` / ``${VAR:-default}`` expansion and resolution to absolute paths.

Only path fields (output_dir, data_root, weights values) are expanded, so a ``$`` in any other string stays literal
and nothing in a study file is ever evaluated.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

_REF = re.compile(r"\$\{([^}]*)\}|\$")
_NAME = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)


class ExpandError(ValueError):
    """A path field refers to an unset variable or uses ``$`` other than as ``${VAR}``."""


def expand_vars(text: str, env: Mapping[str, str]) -> str:
    """Shell-like: ``${VAR}``; ``${VAR:-default}`` uses the default when VAR is unset or empty."""

    def one(match: re.Match[str]) -> str:
        inner = match.group(1)
        parsed = _NAME.fullmatch(inner) if inner is not None else None
        if parsed is None:
            raise ExpandError(f"{match.group(0)!r}: a '$' in a path must start ${{VAR}} or ${{VAR:-default}}")
        name, default = parsed.group(1), parsed.group(2)
        value = env.get(name)
        if default is not None:
            return value if value else default
        if value is None:
            raise ExpandError(f"environment variable {name} is not set; set it or write ${{{name}:-default}}")
        return value

    return _REF.sub(one, text)


def absolute(text: str, base_dir: Path) -> Path:
    """``~`` expanded, relative paths joined to ``base_dir``, ``..`` folded (symlinks left alone)."""
    path = Path(text).expanduser()
    return Path(os.path.normpath(path if path.is_absolute() else base_dir / path))


CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors", ".pkl", ".tar")
PATH_RULE = (
    "a local path starts with /, ./, ../, . or ~, has more than one /, ends with a checkpoint suffix ("
    + " ".join(CHECKPOINT_SUFFIXES)
    + ") or exists; anything else is a Hugging Face id org/name"
)
_HUB_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_HUB_ID = re.compile(rf"{_HUB_PART}/{_HUB_PART}")
HUB_ID_MAX = 96


def path_reason(value: str, base_dir: Path) -> str | None:
    """Why an (expanded) weights value is a local path rather than a Hugging Face id (``org/name``), or None.

    A path: it starts with ``/``, ``.`` (so ``./`` and ``../``) or ``~``; or has a checkpoint suffix (``.pth``,
    ``.ckpt``, ...); or has more than one ``/`` (hub ids have exactly one); or exists relative to ``base_dir``.
    Anything else, such as ``CIDAS/clipseg-rd64`` (also as the default of ``${CLIPSEG_WEIGHTS:-CIDAS/clipseg-rd64}``),
    is a hub id, which ``hub_id_problem`` checks.
    """
    if value.startswith(("/", ".", "~")):
        return f"it starts with {value[0]!r}"
    suffix = next((s for s in CHECKPOINT_SUFFIXES if value.lower().endswith(s)), None)
    if suffix:
        return f"it ends with {suffix}"
    if value.count("/") > 1:
        return "it has more than one '/'"
    if os.sep in value.replace("/", ""):
        return f"it contains {os.sep!r}"
    if (base_dir / value).exists():
        return f"{base_dir / value} exists"
    return None


def looks_like_path(value: str, base_dir: Path) -> bool:
    """Whether an (expanded) weights value is a local path (see ``path_reason``) rather than a hub id."""
    return path_reason(value, base_dir) is not None


def hub_id_problem(value: str) -> str | None:
    """Why ``value`` is not a well-formed Hugging Face model id (Hub rules), or None."""
    if len(value) > HUB_ID_MAX:
        return f"a Hugging Face id is at most {HUB_ID_MAX} characters (this is {len(value)})"
    if "/" not in value:
        return "it is no existing local path and no Hugging Face id (those are org/name)"
    if "--" in value or ".." in value:
        return "a Hugging Face id may not contain '--' or '..'"
    if not _HUB_ID.fullmatch(value):
        return (
            "a Hugging Face id is org/name: letters, digits, '-', '_' and '.', each part starting and ending with a "
            "letter or digit"
        )
    return None
