"""Reading a study file safely: a regular file of at most ``MAX_SPEC_BYTES``, refused at once otherwise.

Why: ``read_bytes()`` on a FIFO blocks forever, on ``/dev/zero`` it eats memory, and a 50 MB file took 50 s to parse.
The file is examined with ``os.stat`` before it is opened, opened non-blocking (a FIFO swapped in after the stat
cannot block), checked again with ``fstat`` and read with a cap, so no input can hang ``validate`` or exhaust memory.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..errors import SpecError
from .report import format_line

MAX_SPEC_BYTES = 1 << 20  # 1 MiB: a study is a few KB; a 1 MiB file of values already takes seconds to parse
_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def file_kind(mode: int) -> str:
    """``a directory``, ``a FIFO (named pipe)``, ... for anything that is not a regular file."""
    return next((word for test, word in _KINDS if test(mode)), "not a regular file")


def _size_text(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB" if n >= 1 << 20 else f"{n:,} bytes"


def _too_big(filename: str, size: int, limit: int) -> SpecError:
    return SpecError(
        [
            f"{filename}: the file is {_size_text(size)}; a study file may be at most {_size_text(limit)} "
            "(a study is a few KB: list values in the spec, not data)"
        ]
    )


def read_bytes_capped(path: Path, filename: str, limit: int = MAX_SPEC_BYTES) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes, or SpecError saying what the path is instead."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise SpecError([f"{filename}: cannot read study file: {exc.strerror or exc}"]) from None
    if not stat.S_ISREG(st.st_mode):
        raise SpecError(
            [f"{filename}: is {file_kind(st.st_mode)}, not a regular file; give the path of a YAML study file"]
        )
    if st.st_size > limit:
        raise _too_big(filename, st.st_size, limit)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise SpecError([f"{filename}: cannot read study file: {exc.strerror or exc}"]) from None
    try:
        st = os.fstat(fd)  # the path may have been replaced between stat and open
        if not stat.S_ISREG(st.st_mode):
            raise SpecError(
                [f"{filename}: is {file_kind(st.st_mode)}, not a regular file; give the path of a YAML study file"]
            )
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(fd, min(1 << 16, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise SpecError([f"{filename}: cannot read study file: {exc.strerror or exc}"]) from None
    finally:
        os.close(fd)
    if total > limit:  # it grew after the stat
        raise _too_big(filename, total, limit)
    return b"".join(chunks)


def read_spec_text(path: Path, filename: str, limit: int = MAX_SPEC_BYTES) -> str:
    """The UTF-8 text of a study file; errors name the file (and the line and column of a bad byte)."""
    raw = read_bytes_capped(path, filename, limit)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise SpecError([format_line(filename, (line, col), None, "not UTF-8 text")]) from None
