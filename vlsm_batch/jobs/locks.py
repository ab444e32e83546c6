"""File locks that work on a shared (NFS) study folder: the study lock, per-trial record locks and claims.

``fcntl.lockf`` (POSIX record locks) is the primitive: it works over NFSv3 (lockd) and NFSv4, and the kernel (or
the NFS server's lease) releases it when the holding process dies, even by SIGKILL, so a crashed holder never
leaves a stale lock behind. Where the file system refuses POSIX locks (``ENOLCK``/``EOPNOTSUPP``: some FUSE and
old NFS mounts without lockd) an ``O_CREAT|O_EXCL`` lock file is used instead, which is atomic on NFSv3+; it is
stale when its holder (host and pid written inside) is this host and that pid is gone, or it is older than
:data:`EXCL_STALE_S` seconds without being refreshed.

POSIX locks belong to a process, not to a file descriptor: closing *any* descriptor of a locked file drops the
process's lock on it. Every lock here therefore opens its own file once and keeps the descriptor until release,
and nothing else in the project opens these files.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

EXCL_STALE_S = 6 * 3600.0
_NO_POSIX_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)
_BUSY = (errno.EACCES, errno.EAGAIN)
_IN_PROCESS: dict[str, threading.Lock] = {}  # POSIX locks do not exclude threads of one process: these do
_IN_PROCESS_GUARD = threading.Lock()
_HELD: set[str] = set()  # locks this process holds: is_locked must never test (and so drop) one of them


class LockBusy(Exception):
    """The lock is held by another live process; ``holder`` is what that process wrote about itself."""

    def __init__(self, path: Path, holder: dict[str, Any]):
        self.path, self.holder = path, holder
        super().__init__(f"{path} is held by {describe_holder(holder)}")


def describe_holder(holder: dict[str, Any]) -> str:
    if not holder:
        return "another process"
    what = holder.get("what") or "a process"
    return f"{what} (pid {holder.get('pid', '?')} on {holder.get('host', '?')}, since {holder.get('since', '?')})"


def _me(what: str) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        "what": what,
        "argv": sys.argv[:6],
    }


def _read_holder(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (one owned by another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _thread_lock(path: Path) -> threading.Lock:
    with _IN_PROCESS_GUARD:
        return _IN_PROCESS.setdefault(str(path), threading.Lock())


class FileLock:
    """An exclusive lock on ``path`` (created if missing) with who-holds-it info for messages.

    ``acquire(timeout_s=0)`` tries once; a positive timeout polls until then. Raises :class:`LockBusy`.
    Use as a context manager for the blocking form.
    """

    def __init__(self, path: Path, what: str = "a process", timeout_s: float = 60.0):
        self.path = Path(path)
        self.what = what
        self.timeout_s = timeout_s
        self._fd: int | None = None
        self._excl = False
        self._thread: threading.Lock | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, timeout_s: float | None = None) -> FileLock:
        timeout = self.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + max(0.0, timeout)
        thread_lock = _thread_lock(self.path)
        if not thread_lock.acquire(timeout=timeout if timeout > 0 else 0.001):
            raise LockBusy(self.path, {"what": "another thread of this process", "pid": os.getpid()})
        self._thread = thread_lock
        try:
            delay = 0.02
            while True:
                if self._try_once():
                    _HELD.add(str(self.path))
                    self.write_info()
                    return self
                if time.monotonic() >= deadline:
                    raise LockBusy(self.path, _read_holder(self._info_path()))
                time.sleep(delay)
                delay = min(0.5, delay * 1.5)
        except BaseException:
            self._thread = None
            thread_lock.release()
            raise

    def _info_path(self) -> Path:
        return self.path if not self._excl else self.path.with_name(self.path.name + ".excl")

    def _try_once(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self._excl:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in _BUSY:
                    return False
                if exc.errno not in _NO_POSIX_LOCKS:
                    raise
                self._excl = True  # this file system has no POSIX locks: fall back to an O_EXCL file
            else:
                self._fd = fd
                return True
        return self._try_excl()

    def _try_excl(self) -> bool:
        excl = self._info_path()
        try:
            fd = os.open(excl, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            holder = _read_holder(excl)
            try:
                age = time.time() - excl.stat().st_mtime
            except FileNotFoundError:
                return False
            same_host = holder.get("host") == socket.gethostname()
            dead = same_host and isinstance(holder.get("pid"), int) and not pid_alive(holder["pid"])
            if dead or age > EXCL_STALE_S:
                with contextlib.suppress(FileNotFoundError):
                    excl.unlink()
            return False
        self._fd = fd
        return True

    def write_info(self, **extra: Any) -> None:
        """Record who holds the lock (read by the process that finds it busy)."""
        if self._fd is None:
            return
        info = json.dumps({**_me(self.what), **extra}).encode()
        with contextlib.suppress(OSError):  # the message is a courtesy: a full disk must not break the lock
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, info, 0)

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            _HELD.discard(str(self.path))
            if self._excl:
                with contextlib.suppress(FileNotFoundError):
                    self._info_path().unlink()
            else:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
                    fcntl.lockf(fd, fcntl.LOCK_UN)
            os.close(fd)
        if self._thread is not None:
            thread, self._thread = self._thread, None
            thread.release()

    def __enter__(self) -> FileLock:
        return self if self.held else self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def is_locked(path: Path) -> bool | None:
    """Whether another live process holds the lock on ``path`` (None: the file system cannot tell).

    A lock this process holds answers True without touching the file (testing it would drop it).
    """
    if str(path) in _HELD:
        return True
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    except OSError:
        return None
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        return True if exc.errno in _BUSY else None
    else:
        fcntl.lockf(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
