"""Where a study writes and what it reads: ``output_dir`` usable, ``data_root`` a folder, local weights present.

These checks only look (``stat``, ``listdir``, ``access``): ``load_spec`` runs them, so ``validate``, ``plan`` and
``submit`` refuse an unusable place before anything is written. ``output_dir_problem`` is public so a submit that
takes the study lock can run it again under the lock.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..errors import SpecError
from ..layout import StudyLayout
from .source import file_kind, read_spec_text

SYSTEM_TREES = ("/proc", "/sys", "/dev")
NOT_SYSTEM = ("/dev/shm",)  # a plain tmpfs under /dev
TOOL_PREFIX = ".vlsm"  # the tool's own hidden files (write probes, locks) do not make a folder "used"
CONTROL = {chr(c) for c in range(32)} | {"\x7f"}


def control_problem(text: str) -> str | None:
    """A newline, tab or other control character in a path breaks sbatch lines and logs."""
    bad = next((c for c in text if c in CONTROL), None)
    return None if bad is None else f"the path contains the control character {bad!r}; remove it"


def system_tree(path: Path) -> str | None:
    """``/proc``, ``/sys`` or ``/dev`` when ``path`` (as written, or with symlinks resolved) lies in one."""
    for p in dict.fromkeys([os.path.normpath(path), os.path.realpath(path)]):
        if any(p == ok or p.startswith(ok + "/") for ok in NOT_SYSTEM):
            continue
        for root in SYSTEM_TREES:
            if p == root or p.startswith(root + "/"):
                return root
    return None


def unusable_place(path: Path, advice: str) -> str | None:
    """A control character in ``path``, or ``path`` under /proc, /sys or /dev (``advice`` follows the tree's name):
    the checks every place a study reads or writes starts with."""
    problem = control_problem(str(path))
    if problem:
        return problem
    root = system_tree(path)
    return f"{path} is under {root}{advice}" if root else None


def _tool_entries(layout: StudyLayout) -> set[str]:
    """Names a partly written study folder may hold before its study.yaml (write_study's order)."""
    return {
        p.name
        for p in (
            layout.trials_manifest,
            layout.submissions,
            layout.submitit,
            layout.trials_dir,
            layout.analysis,
            layout.lock,
            layout.spec_versions,
            layout.spec_version_copy("x").parent,
        )
    }


def study_name_in(spec_copy: Path) -> str | None:
    """The ``study:`` of a study folder's ``study.yaml``, read with the same safe reader; None when unreadable."""
    from .yamlsafe import read_yaml

    try:
        doc = read_yaml(read_spec_text(spec_copy, str(spec_copy)), str(spec_copy))
    except SpecError:
        return None
    name = doc.data.get("study") if isinstance(doc.data, dict) else None
    return name if isinstance(name, str) else None


def _creatable(path: Path) -> str | None:
    """Why ``path`` (absent) cannot be created: its nearest existing ancestor is a file or not writable."""
    parent = path.parent
    while True:
        try:
            st = os.stat(parent)
        except FileNotFoundError:
            if os.path.islink(parent):
                return f"{parent} is a broken symbolic link, so {path} cannot be created"
            if parent == parent.parent:
                return f"no part of {path} exists"
            parent = parent.parent
            continue
        except NotADirectoryError:
            parent = parent.parent
            continue
        except OSError as exc:
            return f"{parent} cannot be examined ({exc.strerror or exc})"
        if not stat.S_ISDIR(st.st_mode):
            what = "a file" if stat.S_ISREG(st.st_mode) else file_kind(st.st_mode)
            return f"{parent} is {what}, so {path} cannot be created under it"
        if not os.access(parent, os.W_OK | os.X_OK):
            return f"{path} cannot be created: {parent} is not writable by you"
        return None


def output_dir_problem(path: Path, study: str | None) -> str | None:
    """Why ``path`` cannot be the folder of study ``study``, or None (``study`` None: the name is not compared).

    Usable: absent (its nearest existing folder writable), an empty folder (the tool's own ``.vlsm*`` files aside),
    a study folder (``trials.jsonl``) whose ``study.yaml`` names ``study``, or the partial folder an interrupted
    submit leaves (only the tool's own names, no study.yaml yet). Never a file, a device, anything under /proc,
    /sys or /dev, and never a folder holding anything else: that folder is not written into.
    """
    hint = "choose another output_dir (a new or empty folder)"
    problem = unusable_place(path, f", which holds system files, not studies; {hint} on a normal file system")
    if problem:
        return problem
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            return f"{path} is a broken symbolic link; remove it or {hint}"
        problem = _creatable(path)
        return None if problem is None else f"{problem}; {hint}"
    except NotADirectoryError:
        problem = _creatable(path)
        return f"{problem or f'a part of {path} is not a folder'}; {hint}"
    except OSError as exc:
        return f"{path} cannot be examined ({exc.strerror or exc}); {hint}"
    if not stat.S_ISDIR(st.st_mode):
        what = "a file" if stat.S_ISREG(st.st_mode) else file_kind(st.st_mode)
        return f"{path} is {what}, not a folder; {hint}"
    try:
        entries = sorted(e for e in os.listdir(path) if not e.startswith(TOOL_PREFIX))
    except OSError as exc:
        return f"{path} cannot be listed ({exc.strerror or exc}); {hint}"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"{path} is not writable by you; {hint}"
    if not entries:
        return None
    layout = StudyLayout(path)
    shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
    if layout.spec_copy.name not in entries:
        if set(entries) <= _tool_entries(layout):
            return None  # a submit was interrupted before it wrote study.yaml: the same submit completes it
        return (
            f"{path} already exists and is not a vlsm-batch study folder (it holds {shown}, but not both "
            f"{layout.trials_manifest.name} and {layout.spec_copy.name}): nothing is written into a folder that is "
            f"not a study; {hint}"
        )
    if not layout.trials_manifest.is_file():
        return (
            f"{path} holds a {layout.spec_copy.name} but no {layout.trials_manifest.name}, so it is not a study folder "
            f"(is it your own spec?); submitting would overwrite that file. Keep specs outside output_dir, or {hint}"
        )
    name = study_name_in(layout.spec_copy)
    if name is None:
        return (
            f"{path} is a study folder whose {layout.spec_copy.name} cannot be read as a study, so it cannot be "
            f"recognised as study {study!r}; {hint}"
        )
    if study is not None and name != study:
        return (
            f"{path} is the folder of study {name!r}, not {study!r}; rename this study to {name!r} to extend that one, "
            f"or {hint}"
        )
    return None


def data_root_problem(path: Path) -> str | None:
    """data_root, when it exists, is a folder; it may not be under /proc, /sys or /dev."""
    problem = unusable_place(path, ", which holds system files, not datasets; point data_root at your data folder")
    if problem:
        return problem
    try:
        st = os.stat(path)
    except OSError:
        return None  # absent: `vlsm-batch data prepare` or the synthetic generator creates it
    if not stat.S_ISDIR(st.st_mode):
        what = "a file" if stat.S_ISREG(st.st_mode) else file_kind(st.st_mode)
        return f"{path} is {what}, not a folder; point data_root at the folder that holds one folder per dataset"
    return None


def weights_path_problem(path: Path) -> str | None:
    """A local weights path exists, is a regular file or a folder, readable, and not under /proc, /sys or /dev."""
    problem = unusable_place(path, "; give the path of a checkpoint file or folder")
    if problem:
        return problem
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"local weights {path} do not exist; download or copy the checkpoint there, or fix the path"
    except OSError as exc:
        return f"local weights {path} cannot be examined ({exc.strerror or exc})"
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        return f"local weights {path} is {file_kind(st.st_mode)}; give a checkpoint file or folder"
    if not os.access(path, os.R_OK | (os.X_OK if stat.S_ISDIR(st.st_mode) else 0)):
        return f"local weights {path} are not readable by you"
    return None
