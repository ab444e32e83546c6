"""Atomic file replacement: one context manager for every writer, whoever produces the bytes.

A temporary file in the target's folder (so the rename never crosses a file system), made readable as the umask
says, renamed over the target only when the writer finished; on any error it is removed and the old file stays.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def umask() -> int:
    """The process umask, read without changing it where Linux reports it (``os.umask`` sets it, briefly, for every
    thread), so files another user of a shared folder must read get the group/other bits the user chose."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass  # not Linux: fall back to setting and restoring it
    current = os.umask(0o022)
    os.umask(current)
    return current


@contextmanager
def atomic_path(path: Path, durable: bool = True, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary name next to ``path``; write it (any library), and on a clean exit it replaces ``path``.

    ``durable`` fsyncs the file before the rename (survives a node crash); bulk writes of thousands of small files
    skip it, since a re-run rewrites whatever a crash lost. ``suffix`` ends the temporary name (a writer that picks
    its format from the extension wants ``.tmp.png``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    tmp = Path(name)
    try:
        try:
            os.fchmod(fd, 0o666 & ~umask())  # mkstemp makes 0600; collaborators on a shared cluster must read results
        finally:
            os.close(fd)
        yield tmp
        if durable:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str, durable: bool = True) -> None:
    """Readers never see half a file (see ``atomic_path``)."""
    with atomic_path(path, durable) as tmp:
        tmp.write_text(text, encoding="utf-8")
