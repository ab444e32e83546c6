"""One atomic writer: the old file survives a failed write, no temporary is left, and the umask sets the mode."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from vlsm_batch.atomic import atomic_path, atomic_write_text


def test_a_failed_writer_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer died")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_replaces_with_the_umask_mode_and_keeps_the_suffix(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        with atomic_path(tmp_path / "sub" / "plot.png", durable=False, suffix=".tmp.png") as tmp:
            assert tmp.parent == tmp_path / "sub" and tmp.name.endswith(".tmp.png")
            tmp.write_bytes(b"png")
        atomic_write_text(tmp_path / "a.txt", "text")
    finally:
        os.umask(old)
    assert (tmp_path / "sub" / "plot.png").read_bytes() == b"png"
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["plot.png"]
