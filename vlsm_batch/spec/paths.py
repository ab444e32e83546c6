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


def looks_like_path(value: str, base_dir: Path) -> bool:
    """Whether an (expanded) weights value is a local path rather than a Hugging Face id (``org/name``).

    A path: it starts with ``/``, ``.`` or ``~``; or has a checkpoint suffix (``.pth``, ``.ckpt``, ...); or has more
    than one ``/`` (hub ids have at most one); or exists relative to ``base_dir``. Anything else, such as
    ``CIDAS/clipseg-rd64`` (also as the default of ``${CLIPSEG_WEIGHTS:-CIDAS/clipseg-rd64}``), is a hub id.
    """
    if value.startswith(("/", ".", "~")) or value.lower().endswith(CHECKPOINT_SUFFIXES):
        return True
    return value.count("/") > 1 or os.sep in value.replace("/", "") or (base_dir / value).exists()
