"""Non-fatal notes that point at a place in the study file (``FILE:LINE:COL: key.path: note``), for keys and forms
that still work but have a new spelling: editors jump to the line, the text says what to write instead."""

from __future__ import annotations

from .context import CheckContext
from .report import KeyPath, format_line


def note_at(ctx: CheckContext, path: KeyPath, message: str, *, key: bool = False) -> None:
    """Record ``message`` as a note positioned at ``path`` (its key when ``key``)."""
    pos = ctx.report.doc.where(path, key=key)
    ctx.report.note(format_line(ctx.report.filename, pos, path, message))
