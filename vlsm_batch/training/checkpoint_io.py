"""A trial's checkpoints on disk: durable writes, study-relative state, safe loads and the choice of where to resume.

* **Durable**: every checkpoint is serialised in memory, written to a temporary file in the trial's own
  ``checkpoints/`` folder, fsynced, renamed over the target and the folder fsynced. A failed write (ENOSPC, EDQUOT,
  EIO) leaves the previous file as it was and raises an ``OSError`` with the original errno and the target path as
  its filename, so the jobs layer can report it (DiskFull naming the file). Lightning's own writer goes through
  fsspec's transaction (a write elsewhere and a copy), which is neither atomic across file systems nor fsynced.
* **A previous good last checkpoint**: before ``last.ckpt`` is replaced, the current one is kept as
  ``last.prev.ckpt`` (a hard link, so ``last.ckpt`` never disappears). :func:`select_resume` validates ``last.ckpt``
  and falls back to ``last.prev.ckpt``, or restarts the trial from scratch with a warning naming the file(s).
  The cost is one more checkpoint on disk (kilobytes for prompt tuning, the whole model for ``finetune``).
* **Relocatable**: :class:`TrialCheckpoint` stores the paths of its state (best, k-th best, last) relative to its
  folder and re-roots them on load, so a study moved with ``mv`` (or copied) resumes with the same best checkpoint
  and score, inside the new folder.
* **No code from files**: every load is ``torch.load(weights_only=True)``, Lightning's resume and predict included
  (:class:`DurableCheckpointIO` is the trainer's checkpoint plugin). A checkpoint that needs arbitrary unpickling is
  refused with ``UnsafeCheckpointError``; this module never writes one (callback state is tensors and plain values).
"""

from __future__ import annotations

import errno
import io
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint

from ..models.checkpoints import UnsafeCheckpointError, first_sentence, load_tensors_file

LAST = "last.ckpt"
PREVIOUS = "last.prev.ckpt"  # the last checkpoint before the current one: the fallback when last.ckpt is damaged
DAMAGED_SUFFIX = ".damaged"  # a damaged checkpoint is renamed aside (kept for a look, never read again)
_RESUME_KEYS = ("state_dict", "epoch", "loops", "callbacks")
_DIR_FSYNC_UNSUPPORTED = {errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF}  # file systems that cannot fsync a folder


def named_os_error(exc: OSError, path: Path | str) -> OSError:
    """The same errno and message, but naming ``path`` (the file the user knows), not a temporary name."""
    return OSError(exc.errno, exc.strerror or str(exc), str(path))


def _fsync_folder(folder: Path) -> None:
    """Make a rename durable (the folder entry); skipped where the file system does not support it."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _DIR_FSYNC_UNSUPPORTED:
            raise
    finally:
        os.close(fd)


def _keep_previous(path: Path, previous: Path) -> None:
    """``previous`` becomes the current ``path``: a hard link (``path`` stays in place), else a rename."""
    link = previous.with_name(f".{previous.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        os.link(path, link)
        os.replace(link, previous)
    except OSError:
        link.unlink(missing_ok=True)
        os.replace(path, previous)  # no hard links on this file system: path is absent until the new one lands


def write_durably(path: Path, data: bytes | memoryview, previous: Path | None = None) -> None:
    """Write ``data`` to ``path`` atomically and durably (temporary file in the same folder, fsync, rename,
    folder fsync); with ``previous``, the file being replaced is kept under that name.

    On failure the old ``path`` is untouched, the temporary file removed, and the ``OSError`` names ``path``.
    """
    path = Path(path)
    folder = path.parent
    tmp = folder / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # O_EXCL with mode 0o666: the umask applies (a group-shared study stays readable by the group)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as exc:
        raise named_os_error(exc, path) from exc
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view[: 1 << 24])
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)  # NFS may report a failed write only here
        if previous is not None and path.is_file():
            _keep_previous(path, previous)
        os.replace(tmp, path)
        _fsync_folder(folder)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise named_os_error(exc, path) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_checkpoint(checkpoint: dict[str, Any], path: Path) -> None:
    """``torch.save`` to memory, then :func:`write_durably`; ``last.ckpt`` keeps its predecessor as
    ``last.prev.ckpt``."""
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    write_durably(path, buffer.getbuffer(), previous=path.with_name(PREVIOUS) if path.name == LAST else None)


def _study_file_refusal(path: Path, exc: UnsafeCheckpointError) -> UnsafeCheckpointError:
    after = (
        "the trial is then evaluated on its last checkpoint, with a warning"
        if path.name.startswith("best")
        else f"the trial then resumes from {PREVIOUS} or starts over"
    )
    return UnsafeCheckpointError(
        f"checkpoint {str(path)!r} of this trial is refused: {exc.reason}, and loading it could run code stored in "
        "it. This tool only writes tensors and plain values, so the file was replaced or written by another "
        f"program. Delete it ({after}) or restore it from a copy you trust",
        exc.reason,
    )


def read_checkpoint(path: Path, *, mmap: bool = False) -> dict[str, Any]:
    """A checkpoint of this trial, loaded with ``weights_only=True`` (CPU tensors): never runs code from it."""
    path = Path(path)
    try:
        obj = load_tensors_file(path, mmap=mmap)
    except UnsafeCheckpointError as exc:
        raise _study_file_refusal(path, exc) from exc
    if not isinstance(obj, dict):
        raise ValueError(f"holds a {type(obj).__name__}, not a checkpoint dict")
    return obj


def checkpoint_problem(path: Path, required: tuple[str, ...] = _RESUME_KEYS) -> str | None:
    """Why ``path`` cannot be resumed from (damaged, truncated, empty, missing keys), or None when it can.

    A file that needs arbitrary unpickling is not "damaged": ``UnsafeCheckpointError`` propagates. So does a
    ``PermissionError`` (starting over would not fix it).
    """
    try:
        if path.stat().st_size == 0:
            return "it is empty (0 bytes)"
        ckpt = read_checkpoint(path, mmap=True)
    except (UnsafeCheckpointError, PermissionError):
        raise
    except Exception as exc:  # EOFError, RuntimeError (zip), OSError, UnpicklingError (damaged), ValueError...
        return f"it cannot be read ({type(exc).__name__}: {first_sentence(str(exc)) or 'truncated'})"
    missing = [k for k in required if k not in ckpt]
    return f"it lacks {', '.join(missing)}" if missing else None


def checkpoint_epochs(path: Path) -> int:
    """Epochs finished in a checkpoint written at an epoch end (Lightning stores the 0-based current epoch)."""
    return int(read_checkpoint(path, mmap=True)["epoch"]) + 1


@dataclass(frozen=True)
class ResumePoint:
    """Where a trial attempt starts: ``path`` to resume from (None: from scratch) and what happened on the way."""

    path: Path | None
    fell_back: bool = False  # last.ckpt was damaged; resuming from last.prev.ckpt
    restarted: bool = False  # every last checkpoint was damaged; starting over (history must be reset)


def _set_aside(path: Path) -> Path:
    target = path.with_name(path.name + DAMAGED_SUFFIX)
    os.replace(path, target)
    return target


def _remove_stale_temporaries(folder: Path) -> None:
    """Temporary files of a writer that was killed mid-write (one trainer per trial: none is in use now)."""
    for tmp in folder.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def select_resume(folder: Path, log: Callable[[str], None] = print) -> ResumePoint:
    """Validate ``last.ckpt`` (then ``last.prev.ckpt``) and say where to resume; damaged files are renamed to
    ``*.damaged`` and named in a printed warning. With no readable last checkpoint but a damaged one, the trial
    starts over: the best checkpoint of the lost history is removed too (the caller resets history.csv)."""
    folder = Path(folder)
    if not folder.is_dir():
        return ResumePoint(None)
    _remove_stale_temporaries(folder)
    damaged: list[tuple[Path, str]] = []
    for path in (folder / LAST, folder / PREVIOUS):
        if not path.is_file():
            continue
        problem = checkpoint_problem(path)
        if problem is None:
            if damaged:
                for bad, _ in damaged:
                    _set_aside(bad)
                log(
                    f"warning: {_describe(damaged)}; resuming from the previous checkpoint {path} (epoch "
                    f"{checkpoint_epochs(path)}): the epochs after it run again",
                )
            return ResumePoint(path, fell_back=bool(damaged))
        damaged.append((path, problem))
    if not damaged:
        return ResumePoint(None)
    for bad, _ in damaged:
        _set_aside(bad)
    for best in folder.glob("best*.ckpt"):
        best.unlink()
    log(f"warning: {_describe(damaged)} and no earlier checkpoint is readable: the trial starts over from epoch 1")
    return ResumePoint(None, restarted=True)


def _describe(damaged: list[tuple[Path, str]]) -> str:
    return "; ".join(f"checkpoint {p} is unusable, {why} (kept as {p.name}{DAMAGED_SUFFIX})" for p, why in damaged)


class DurableCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint plugin: :func:`write_checkpoint` to save, ``weights_only=True`` always to load."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        write_checkpoint(checkpoint, Path(path))

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        """Whatever the caller asks (Lightning passes None: torch's default, which an environment variable can
        turn off), never unpickle objects."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Checkpoint file not found: {path}")
        return read_checkpoint(path)


class TrialCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose saved state names files relative to its folder (``best.ckpt``), re-rooted on load
    to the folder it has now: a moved trial keeps its best path, score and top-k inside the new folder.

    Checkpoints written before this (absolute paths under the old folder) are re-rooted the same way.
    """

    _PATH_KEYS = ("best_model_path", "kth_best_model_path", "last_model_path")

    def _relative(self, path: str) -> str:
        if not path or not self.dirpath or not os.path.isabs(path):
            return path
        rel = os.path.relpath(path, self.dirpath)
        return path if rel.startswith("..") else rel

    def _reroot(self, path: str, stored_dir: Any) -> str:
        if not path or not self.dirpath:
            return path
        if os.path.isabs(path):
            if not (isinstance(stored_dir, str) and os.path.isabs(stored_dir)):
                return path
            rel = os.path.relpath(path, stored_dir)
            if rel.startswith(".."):
                return path  # outside the trial's folder: not ours to move
            path = rel
        return os.path.join(str(self.dirpath), path)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        for key in self._PATH_KEYS:
            state[key] = self._relative(state.get(key) or "")
        state["best_k_models"] = {self._relative(k): v for k, v in state.get("best_k_models", {}).items()}
        state["dirpath"] = "."  # the paths above are relative to the folder holding this checkpoint's callback
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore score, top-k and paths whatever folder the checkpoint was written in (Lightning keeps only
        ``best_model_path``, still absolute in the old folder, when the folder changed)."""
        stored_dir = state_dict.get("dirpath")
        self.best_model_score = state_dict["best_model_score"]
        self.kth_value = state_dict.get("kth_value", self.kth_value)
        self.best_k_models = {self._reroot(k, stored_dir): v for k, v in state_dict.get("best_k_models", {}).items()}
        self.kth_best_model_path = self._reroot(state_dict.get("kth_best_model_path", ""), stored_dir)
        self.last_model_path = self._reroot(state_dict.get("last_model_path", ""), stored_dir)
        self.best_model_path = self._reroot(state_dict["best_model_path"], stored_dir)

    def _generate_state_key(self, **kwargs: Any) -> str:
        """Lightning's key for plain ``ModelCheckpoint``: checkpoints of earlier runs keep restoring their state."""
        return f"ModelCheckpoint{kwargs!r}"
