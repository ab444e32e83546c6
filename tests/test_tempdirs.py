"""Leftover build folders of killed builders are removed; folders of live builders are not."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from vlsm_batch.datasets.synthetic import ensure_synthetic
from vlsm_batch.tempdirs import STALE_AFTER_S, _host, build_dir, sweep_stale


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_sweep_removes_dead_builders_and_old_foreign_ones_only(tmp_path: Path) -> None:
    mine = build_dir(tmp_path, "entry")  # this (live) process
    dead = tmp_path / f".entry.{_host()}.{_dead_pid()}.abc.tmp"
    foreign_new = tmp_path / ".entry.otherhost.123.abc.tmp"
    foreign_old = tmp_path / ".entry.otherhost.456.abc.tmp"
    unrelated = tmp_path / ".other.otherhost.1.abc.tmp"
    for folder in (dead, foreign_new, foreign_old, unrelated):
        folder.mkdir()
    old = time.time() - STALE_AFTER_S - 60
    os.utime(foreign_old, (old, old))
    os.utime(unrelated, (old, old))
    assert sorted(sweep_stale(tmp_path, "entry")) == sorted([dead, foreign_old])
    assert mine.is_dir() and foreign_new.is_dir() and unrelated.is_dir()


def test_synthetic_build_cleans_what_a_killed_build_left(tmp_path: Path) -> None:
    leftover = tmp_path / f".synthetic.{_host()}.{_dead_pid()}.xyz.tmp"
    (leftover / "images").mkdir(parents=True)
    root = ensure_synthetic(tmp_path)
    assert (root / "anns" / "test.json").is_file()
    assert not leftover.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["synthetic"]
