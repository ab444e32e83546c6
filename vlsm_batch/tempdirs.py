"""Hidden build folders that are renamed into place when complete, and the sweeping of ones a crash left behind.

A builder that is killed (SIGKILL, node failure) cannot clean up after itself. Its folder is named
``.<name>.<host>.<pid>.<random>.tmp`` so that the next builder can tell a leftover from a build in progress: on the
same host a folder whose process is gone is stale at once; any folder (another host on a shared file system, a
reused pid) once it has not changed for ``STALE_AFTER_S``.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

STALE_AFTER_S = 24 * 3600


def _host() -> str:
    return socket.gethostname().split(".")[0] or "host"


def build_dir(parent: Path, name: str) -> Path:
    """A new hidden folder in ``parent`` for building ``name`` (rename it to ``parent / name`` when complete)."""
    return Path(tempfile.mkdtemp(dir=parent, prefix=f".{name}.{_host()}.{os.getpid()}.", suffix=".tmp"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def is_stale(folder: Path, name: str, now: float | None = None) -> bool:
    rest = folder.name[len(name) + 2 :]  # after ".<name>."
    host, _, tail = rest.partition(".")
    pid_text = tail.partition(".")[0]
    try:
        age = (now or time.time()) - folder.stat().st_mtime
    except OSError:
        return False  # gone already
    if age > STALE_AFTER_S:  # also covers a dead builder whose pid has been reused since
        return True
    return host == _host() and pid_text.isdigit() and int(pid_text) != os.getpid() and not _alive(int(pid_text))


def sweep_stale(parent: Path, name: str) -> list[Path]:
    """Remove the leftover build folders of ``name`` in ``parent``; returns what was removed."""
    removed: list[Path] = []
    try:
        candidates = [p for p in parent.glob(f".{name}.*.tmp") if p.is_dir()]
    except OSError:
        return removed
    for folder in candidates:
        if is_stale(folder, name):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed
