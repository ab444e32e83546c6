"""Trial states as recorded in ``status.json``, and how to read them robustly.

pending → running → done | failed | cancelled. The task process writes running/done/failed/cancelled;
``submit`` writes pending before launching. A "running" marker whose local process no longer exists is
reported as failed (lost), so a crashed or killed trial never looks alive forever.
"""

from __future__ import annotations

import datetime as _dt
import os
import socket
from pathlib import Path
from typing import Any

from ..layout import TrialPaths, atomic_write_json, read_json

PENDING, RUNNING, DONE, FAILED, CANCELLED = "pending", "running", "done", "failed", "cancelled"
STATES = (PENDING, RUNNING, DONE, FAILED, CANCELLED)
NEW = "new"  # in trials.jsonl but never submitted (no status.json)


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def write_status(paths: TrialPaths, state: str, durable: bool = True, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into the existing status and write it atomically (``durable=False``: no fsync, bulk writes)."""
    status = read_json(paths.status) or {}
    status.update(fields)
    status["state"] = state
    status["updated_at"] = now_iso()
    atomic_write_json(paths.status, status, durable=durable)
    return status


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_status(paths: TrialPaths) -> dict[str, Any]:
    """The trial's status; a local 'running' whose process is gone becomes 'failed' (lost)."""
    status = read_json(paths.status)
    if status is None:
        return {"state": NEW}
    if (
        status.get("state") == RUNNING
        and status.get("executor") == "local"
        and status.get("host") == socket.gethostname()
        and isinstance(status.get("pid"), int)
        and not _pid_alive(status["pid"])
    ):
        status = {
            **status,
            "state": FAILED,
            "error": {
                "class": "LostProcess",
                "message": f"process {status['pid']} ended without recording a result (killed?)",
            },
        }
    return status


def tail_lines(path: Path, n: int = 20, max_bytes: int = 64_000) -> list[str]:
    """Last ``n`` lines of a text file without reading all of it."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return []
    return data.decode("utf-8", "replace").splitlines()[-n:]
