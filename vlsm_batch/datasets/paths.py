"""Names a dataset file lists (annotation entries, VOC id lists) stay inside the folder they are relative to, and
folders and files this package creates follow the process umask.

An annotation file or a downloaded id list is data, not a path a user chose: an entry ``../../etc/hostname``, an
absolute path, or a symlink in the dataset that leads out of its folder would make a trial read (and the cache
store, maybe in a group-shared folder) a file of someone else's; in ``data prepare`` it would write outside
``--to``. The folder itself may be a symlink (``images -> /big/disk/images``): containment is checked against
where the folder resolves to. numpy/PIL-free.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath

from ..layout import umask

NAME_RULE = "a relative path inside its folder: no '..' component, not absolute, no NUL"


def name_problem(name: object) -> str | None:
    """Why ``name`` (an entry read from a dataset file) is not a safe relative path, or None when it is."""
    if not isinstance(name, str):
        return f"is {type(name).__name__}, not text"
    if not name or not name.strip():
        return "is empty"
    if "\0" in name:
        return "contains a NUL character"
    if name.startswith(("/", "\\")) or PurePosixPath(name).is_absolute():
        return "is an absolute path"
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        return "has a '..' component"
    return None


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


class Containment:
    """Answers "does this file, symlinks followed, stay inside ``root``?" with one ``lstat`` per file (the
    resolved parent folders are remembered: most files of a dataset share a few)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.real_root = os.path.realpath(root)
        self._parents: dict[str, str] = {}

    def escape(self, path: Path) -> str | None:
        """Where ``path`` really leads when that is outside the root; None when inside or absent (a missing file
        is reported by whoever checks presence)."""
        parent = os.path.dirname(os.fspath(path))
        real_parent = self._parents.get(parent)
        if real_parent is None:
            real_parent = self._parents[parent] = os.path.realpath(parent)
        if not _inside(real_parent, self.real_root):
            return real_parent
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            return None
        if stat.S_ISLNK(mode):
            target = os.path.realpath(path)
            if not _inside(target, self.real_root):
                return target
        return None


def share_like_mkdir(folder: Path) -> None:
    """Give a folder made by ``tempfile.mkdtemp`` (always 0700) the mode ``mkdir`` would have given it: 0777 less
    the umask, keeping a setgid bit inherited from a group-shared parent. Without this, the other members of a
    shared data folder's group get PermissionError on every cache entry and generated dataset."""
    mode = os.stat(folder).st_mode
    os.chmod(folder, (0o777 & ~umask()) | (mode & stat.S_ISGID))
