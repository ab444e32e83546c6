"""Optional extras: a clear refusal when a command needs packages that a light install left out.

``pip install vlsm-batch`` brings only what validate, plan, submit (to Slurm), status, cancel and logs need;
training and analysis come with the ``[train]`` and ``[analysis]`` extras. A command that needs a missing
extra calls :func:`require_extra` before its first heavy import, so the user sees one actionable sentence and
exit code 2 instead of an ImportError traceback (or, for a local run, every trial failing the same way).
"""

from __future__ import annotations

import importlib.util

from .errors import VlsmBatchError

# extra -> the import names that prove it is installed (found without importing: torch alone takes seconds)
EXTRAS: dict[str, tuple[str, ...]] = {
    "train": ("torch", "torchvision", "pytorch_lightning", "transformers", "open_clip"),
    "analysis": ("polars", "matplotlib"),
}


class MissingExtraError(VlsmBatchError):
    """A command needs an optional extra that is not installed (the CLI prints the message, exit code 2)."""


def missing_modules(extra: str) -> list[str]:
    """The import names of ``extra`` that cannot be found in this environment (nothing is imported)."""
    return [name for name in EXTRAS[extra] if importlib.util.find_spec(name) is None]


def require_extra(extra: str, what: str | None = None) -> None:
    """Raise MissingExtraError naming the pip command when any package of ``extra`` is missing.

    ``what`` names the task in the message ("a local training run"); it defaults to the extra's name.
    """
    missing = missing_modules(extra)
    if missing:
        raise MissingExtraError(
            f"{what or extra} needs the [{extra}] extra: pip install 'vlsm-batch[{extra}]' "
            f"(not installed here: {', '.join(missing)}; or 'vlsm-batch[all]' for everything)"
        )
