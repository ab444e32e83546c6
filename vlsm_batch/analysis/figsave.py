"""Writing figures for a paper: 300 dpi PNG, PDF (TrueType fonts) and SVG (text kept as text), each to a temporary
name and renamed, cropped to everything drawn, skipped when the figure did not change since the last run.

Rendering the three formats is most of ``analyze``'s time, so where the machine has spare cores (Linux) the PNGs
are rendered by forked processes while this one writes the PDFs and SVGs: a fork shares the drawn figures with
no pickling, and a child that fails is redone here, so the files never depend on it.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from ..atomic import atomic_path, atomic_write_text

if TYPE_CHECKING:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.transforms import Bbox

DPI = 300
FORMATS = (".png", ".pdf", ".svg")
FIGURE_VERSION = "3"  # bump when the drawing code changes, so unchanged data is drawn again once
OPTIONS: dict[str, dict[str, Any]] = {".png": {"dpi": DPI}, ".pdf": {}, ".svg": {"metadata": {"Date": None}}}
MAX_WORKERS = 3  # processes at most (this one included): PNG rendering split over up to two children


def figure_key(fig: Figure) -> str:
    """A digest of what the figure shows (data rounded to 3 decimals, ~1 px at 300 dpi on a Dice axis; texts;
    size): equal keys, pictures that differ by less than a pixel.

    A figure whose content did not change since the last run (a study polled while trials finish elsewhere) is
    not drawn again.
    """
    import hashlib

    import numpy as np
    from matplotlib.text import Text

    h = hashlib.sha256(f"{FIGURE_VERSION}|{tuple(fig.get_size_inches())}".encode())

    def arr(a: object) -> None:
        try:
            h.update(np.round(np.ma.filled(np.ma.asarray(a, dtype=float), np.nan), 3).tobytes())
        except (TypeError, ValueError):
            h.update(repr(a).encode())

    for ax in fig.axes:
        h.update(f"ax|{ax.get_xlabel()}|{ax.get_ylabel()}".encode())
        arr([*ax.get_position().bounds, *ax.get_ylim(), *ax.get_xlim()])
        for line in ax.lines:
            arr(line.get_xydata())
            h.update(f"{line.get_color()}{line.get_linestyle()}{line.get_marker()}".encode())
        for patch in ax.patches:  # bars: their data-space rectangle (display coordinates would shift with noise)
            get = [getattr(patch, f"get_{k}", None) for k in ("x", "y", "width", "height")]
            arr([g() for g in get if g is not None] if all(get) else patch.get_path().vertices)
            h.update(str(patch.get_facecolor()).encode())
        for coll in ax.collections:
            for seg in getattr(coll, "get_segments", lambda: [])():
                arr(seg)
            arr(coll.get_offsets())
        for image in ax.images:
            arr(image.get_array())
        arr(ax.get_xticks())
        h.update("|".join(lbl.get_text() for lbl in ax.get_xticklabels()).encode())
    for t in fig.findobj(Text):
        h.update(t.get_text().encode())
    return h.hexdigest()[:20]


def _marker(stem: Path) -> Path:
    return stem.with_name(f".{stem.name}.key")


def _up_to_date(fig: Figure, stem: Path) -> tuple[bool, str]:
    key = figure_key(fig)
    try:
        same = _marker(stem).read_text(encoding="utf-8") == key
    except OSError:
        same = False
    return same and all(stem.with_suffix(ext).is_file() for ext in FORMATS), key


@dataclass
class _Job:
    fig: Figure
    stem: Path
    key: str
    box: Bbox


def _close(fig: Figure) -> None:
    import matplotlib.pyplot as plt

    plt.close(fig)


def _prepare(fig: Figure, stem: Path) -> _Job | None:
    """What to write for ``fig`` (None, and the figure closed, when the files on disk already show it)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    same, key = _up_to_date(fig, stem)
    if same:
        _close(fig)
        return None
    _marker(stem).unlink(missing_ok=True)  # a crash below must not leave a key that vouches for half-written files
    # one tight box for the three formats (bbox_inches="tight" would draw the figure twice per format)
    canvas = cast("FigureCanvasAgg", fig.canvas)  # plots._plt selects the Agg backend
    box = fig.get_tightbbox(canvas.get_renderer()).padded(0.05)
    # tight_layout() leaves a placeholder layout engine, and any engine makes savefig draw the figure once more
    # before drawing it for real; the layout is final by now
    fig.set_layout_engine(None)
    return _Job(fig, stem, key, box)


def _write(job: _Job, ext: str) -> Path:
    path = job.stem.with_suffix(ext)
    with atomic_path(path, durable=False, suffix=f".tmp{ext}") as tmp:
        job.fig.savefig(tmp, bbox_inches=job.box, **OPTIONS[ext])
    return path


def _write_part(part: list[tuple[_Job, str]]) -> None:
    for job, ext in part:
        _write(job, ext)


def _finish(job: _Job) -> None:
    marker = _marker(job.stem)
    atomic_write_text(marker, job.key, durable=False)
    _close(job.fig)


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_workers() -> int:
    """Processes to render with: forking is used on Linux only (elsewhere it is unsafe or unavailable)."""
    if sys.platform != "linux" or not hasattr(os, "fork"):
        return 1
    return max(1, min(MAX_WORKERS, usable_cpus()))


def _fork(work: Callable[[], None]) -> int:
    """Run ``work`` in a forked child that leaves with ``os._exit`` (no parent cleanup runs twice); its pid."""
    with warnings.catch_warnings():
        # Python >= 3.12 warns about forking a multi-threaded process (polars keeps a thread pool): the child
        # only renders figures with matplotlib and writes files, touching no lock another thread may hold
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover (the child's coverage is not collected)
        code = 1
        try:
            work()
            code = 0
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def _split(jobs: list[tuple[_Job, str]], n: int) -> list[list[tuple[_Job, str]]]:
    """``n`` bins of about equal pixel area (longest first, each into the emptiest bin)."""
    bins: list[list[tuple[_Job, str]]] = [[] for _ in range(n)]
    load = [0.0] * n
    for job in sorted(jobs, key=lambda j: -j[0].box.width * j[0].box.height):
        i = load.index(min(load))
        bins[i].append(job)
        load[i] += job[0].box.width * job[0].box.height
    return [b for b in bins if b]


def save_all(items: list[tuple[Figure, Path]], workers: int | None = None) -> list[list[Path]]:
    """Write every figure in the three formats (unchanged ones are skipped) and close it; the paths per figure.

    With ``workers`` > 1 (default: up to 3 on Linux, by the usable CPUs) the PNGs, the slowest format at 300 dpi,
    are rendered by ``workers - 1`` forked children while this process writes the PDFs and SVGs.
    """
    jobs = [job for fig, stem in items if (job := _prepare(fig, stem)) is not None]
    n = default_workers() if workers is None else max(1, workers)
    pngs = [(job, ".png") for job in jobs]
    mine = [(job, ext) for job in jobs for ext in FORMATS if ext != ".png"]
    if n < 2 or len(jobs) < 2:
        mine, pngs = pngs + mine, []
    children = []
    try:
        for part in _split(pngs, n - 1) if pngs else []:
            try:
                children.append((_fork(partial(_write_part, part)), part))
            except OSError:  # no process to spare (EAGAIN, ENOMEM): this one draws that part too
                mine = part + mine
        for job, ext in mine:
            _write(job, ext)
    finally:
        failed = []
        for pid, part in children:
            _, status = os.waitpid(pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                failed += part
    for job, ext in failed:  # redone here: an error is raised in this process, with its own traceback
        _write(job, ext)
    for job in jobs:
        _finish(job)
    return [[stem.with_suffix(ext) for ext in FORMATS] for _, stem in items]


def save(fig: Figure, stem: Path) -> list[Path]:
    """PNG (300 dpi), PDF and SVG of one figure next to each other (see ``save_all``); closes the figure."""
    return save_all([(fig, stem)], workers=1)[0]
