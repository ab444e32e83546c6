"""Decoded, resized split arrays on disk: each (dataset, split, image size) is decoded once, then memory-mapped.

A cache entry is a folder ``<cache root>/<split>-<size>px-<key>/`` holding

- ``images.npy``  (n_images, 3, S, S) uint8 RGB, bicubic-resized; each distinct image once (CheXlocalize and CAMUS
  have several samples per image, the natural datasets one per image x class);
- ``image_index.npy`` (n_samples,) int32: the image of each sample;
- ``masks.npy``   (n_samples, ceil(S*S/8)) uint8: the mask at model resolution, one bit per pixel (binarised at
  0.5 of the original, resized bilinearly, binarised at 0.5 again);
- for evaluation splits ``original_bits.npy`` + ``original_index.npy`` (n_samples, 3: bit offset, height,
  width): the binary mask at its original resolution (test metrics are computed there);
- ``meta.json`` (written last): format version, size, counts, and the byte size and content hash of every array
  file (BLAKE2b of 8 MiB chunks, hashed in threads, then of their digests).

``key`` is a SHA-256 of the format version, the size, whether originals are kept, and every sample's image and
mask path (relative to the dataset folder), byte size and modification time: editing or replacing a file makes
a new entry. The root is ``$VLSM_CACHE/<dataset>-<hash of its path>`` when set, else ``<data_root>/.vlsm_cache/
<dataset>`` (next to the data), else ``~/.cache/vlsm-batch/...`` when the data folder is read-only (entries
already next to the data are still read from there).

Every read checks the entry against its ``meta.json`` (sizes and hashes: a truncated copy, a half-written
``meta.json`` or flipped bits are caught before a trial trains on them); a damaged entry is rebuilt once, with a
warning naming it, and an entry that cannot be rebuilt is an error that names the folder to delete.

Several array tasks may build the same entry at once: each builds into a hidden temporary folder (files fsynced,
``meta.json`` last) and renames it into place (the first rename wins; the others discard theirs), and an advisory
``flock`` on ``<entry>.lock`` makes the later ones wait and reuse instead of decoding again where the file system
supports it. Folders and files follow the umask (a group-shared data folder works for every member of the group).
numpy + PIL only (no torch).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..atomic import atomic_write_text
from ..errors import VlsmBatchError
from ..tempdirs import build_dir, sweep_stale
from .medvlsm import DatasetContentError, Sample
from .paths import share_like_mkdir

CACHE_VERSION = 2  # 2: meta.json records each array file's size and content hash
HASH_CHUNK = 8 << 20
HASH_NAME = "blake2b-128 of the blake2b-128 digests of 8 MiB chunks and the byte count"
REQUIRED_FILES = ("images.npy", "image_index.npy", "masks.npy")
ORIGINAL_FILES = ("original_bits.npy", "original_index.npy")


class CacheEntryError(VlsmBatchError):
    """A cache entry on disk is incomplete or damaged; ``path`` is its folder."""

    def __init__(self, path: Path, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"cache entry {path} is damaged: {reason}")


@dataclass
class SplitArrays:
    """One split's decoded pixels (memory-mapped when read from disk)."""

    size: int
    images: np.ndarray  # (n_images, 3, S, S) uint8
    image_index: np.ndarray  # (n_samples,) int32
    masks: np.ndarray  # (n_samples, ceil(S*S/8)) uint8, packed bits
    original_bits: np.ndarray | None = None  # flat packed bits of every original-resolution mask
    original_index: np.ndarray | None = None  # (n_samples, 3) int64: bit offset, height, width
    path: Path | None = None  # the cache entry, None when built in memory

    def __len__(self) -> int:
        return len(self.image_index)

    def mask(self, i: int) -> np.ndarray:
        """(S, S) uint8 0/1 at model resolution."""
        s = self.size
        return np.unpackbits(self.masks[i], count=s * s).reshape(s, s)

    def original(self, i: int) -> np.ndarray:
        """(H, W) bool at the original resolution (evaluation splits only)."""
        if self.original_bits is None or self.original_index is None:
            raise ValueError("this split was cached without original-resolution masks")
        offset, h, w = (int(v) for v in self.original_index[i])
        start, n = offset // 8, h * w
        return np.unpackbits(self.original_bits[start : start + (n + 7) // 8], count=n).reshape(h, w).astype(bool)


# -- decoding ----------------------------------------------------------------------------------------------------


def _unreadable(kind: str, path: Path, exc: Exception) -> DatasetContentError:
    return DatasetContentError(
        f"cannot read {kind} {path} ({type(exc).__name__}: {exc}); replace the file with a readable copy or remove "
        "its annotation entry (`vlsm-batch data verify` lists every unreadable file)"
    )


def read_image(path: Path, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """((3, S, S) uint8 RGB, bicubic as the original's albumentations Resize; the source (width, height))."""
    try:
        with Image.open(path) as im:
            source = im.size
            rgb = im.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    except MemoryError:
        raise
    except Exception as exc:  # any decoder failure (truncated, not an image, too large): name the file
        raise _unreadable("image", path, exc) from exc
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1), source


def decode_image(path: Path, size: int) -> np.ndarray:
    """(3, S, S) uint8 RGB, bicubic (as the original's albumentations Resize)."""
    return read_image(path, size)[0]


def read_mask(path: Path) -> np.ndarray:
    """The (H, W) bool mask at its own resolution: grey value / 255 > 0.5, so soft JPEG masks become binary."""
    try:
        with Image.open(path) as m:
            return np.asarray(m.convert("L")) > 127
    except MemoryError:
        raise
    except Exception as exc:
        raise _unreadable("mask", path, exc) from exc


def _model_mask(binary: np.ndarray, size: int) -> np.ndarray:
    small = Image.fromarray(binary.astype(np.uint8) * 255).resize((size, size), Image.Resampling.BILINEAR)
    return (np.asarray(small) > 127).astype(np.uint8)


def decode_mask(path: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(original bool mask, (S, S) uint8 0/1): grey value / 255 > 0.5 once, so soft JPEG masks become binary."""
    binary = read_mask(path)
    return binary, _model_mask(binary, size)


def fit_mask(binary: np.ndarray, sample: Sample, image_size: tuple[int, int]) -> np.ndarray:
    """The mask itself when it has its image's size; resized (nearest) when the dataset declares resized masks;
    otherwise refused: a mask that does not cover its image pixel for pixel gives wrong labels and metrics."""
    (iw, ih), (mh, mw) = image_size, binary.shape
    if (mw, mh) == (iw, ih):
        return binary
    if sample.resize_mask:
        return np.asarray(Image.fromarray(binary).resize((iw, ih), Image.Resampling.NEAREST))
    raise DatasetContentError(
        f"mask {sample.mask} is {mw}x{mh} pixels but its image {sample.image} is {iw}x{ih}: a mask must cover its "
        "image pixel for pixel. Fix the mask (or the annotation entry that pairs them); a dataset known to ship "
        "masks at another resolution can declare resize_masks, and then they are resized to the image. "
        "`vlsm-batch data verify` lists every mismatch."
    )


def _threads(threads: int | None) -> int:
    if threads:
        return threads
    try:
        available = len(os.sched_getaffinity(0))  # what Slurm (or taskset) gave this process, not the node's count
    except (AttributeError, OSError):
        available = os.cpu_count() or 1
    return min(8, available)


def build_arrays(
    samples: Sequence[Sample], size: int, keep_original: bool, out: Path | None = None, threads: int | None = None
) -> SplitArrays:
    """Decode a split; into ``.npy`` files under ``out`` (memory-mapped while writing) or, without ``out``, memory.

    Raises DatasetContentError naming the file for an unreadable image or mask and for a mask whose size differs
    from its image's (unless the sample may be resized). With ``out``, ``meta.json`` is written last.
    """
    unique: dict[Path, int] = {}
    for s in samples:
        unique.setdefault(s.image, len(unique))
    image_index = np.array([unique[s.image] for s in samples], dtype=np.int32)
    n_bytes = (size * size + 7) // 8
    shape = (len(unique), 3, size, size)
    images: np.ndarray  # a memmap (flushed below) when writing to out
    if out is not None:
        images = np.lib.format.open_memmap(out / "images.npy", mode="w+", dtype=np.uint8, shape=shape)
    else:
        images = np.empty(shape, dtype=np.uint8)
    masks = np.empty((len(samples), n_bytes), dtype=np.uint8)
    source_sizes: list[tuple[int, int]] = [(0, 0)] * len(unique)
    originals: list[np.ndarray] = []
    index = np.zeros((len(samples), 3), dtype=np.int64)

    def put_image(item: tuple[Path, int]) -> None:  # PIL releases the GIL while decoding and resizing
        images[item[1]], source_sizes[item[1]] = read_image(item[0], size)

    def one_mask(s: Sample) -> tuple[np.ndarray, np.ndarray | None, tuple[int, int]]:
        full = fit_mask(read_mask(s.mask), s, source_sizes[unique[s.image]])
        small = _model_mask(full, size)
        return np.packbits(small.ravel()), (np.packbits(full.ravel()) if keep_original else None), full.shape

    with ThreadPoolExecutor(_threads(threads)) as pool:
        list(pool.map(put_image, unique.items()))
        offset = 0
        for i, (packed, orig, (h, w)) in enumerate(pool.map(one_mask, samples)):
            masks[i] = packed
            if orig is not None:
                originals.append(orig)
                index[i] = (offset, h, w)
                offset += len(orig) * 8  # each mask starts on a byte boundary
    bits = np.concatenate(originals) if originals else np.zeros(0, dtype=np.uint8)
    result = SplitArrays(size, images, image_index, masks)
    if keep_original:
        result.original_bits, result.original_index = bits, index
    if out is not None:
        if isinstance(images, np.memmap):
            images.flush()
        del images
        np.save(out / "image_index.npy", image_index)
        np.save(out / "masks.npy", masks)
        if keep_original:
            np.save(out / "original_bits.npy", bits)
            np.save(out / "original_index.npy", index)
        meta: dict[str, Any] = {
            "version": CACHE_VERSION,
            "size": size,
            "n_samples": len(samples),
            "n_images": len(unique),
            "keep_original": keep_original,
            "hash": HASH_NAME,
            "files": {},
            "samples": [[str(s.image), str(s.mask)] for s in samples],
        }
        for name in REQUIRED_FILES + (ORIGINAL_FILES if keep_original else ()):
            _fsync(out / name)
            meta["files"][name] = {"bytes": (out / name).stat().st_size, "hash": file_digest(out / name, threads)}
        _write_meta(out, meta)
    return result


# -- integrity -----------------------------------------------------------------------------------------------------


def file_digest(path: Path, threads: int | None = None) -> str:
    """BLAKE2b of a file, chunk by chunk in threads (hashlib releases the GIL): ~1.5 GB/s on 2 cores, more with more.

    Not a security measure (whoever can write the cache can rewrite ``meta.json``): it catches truncation, a copy
    or a write that went wrong, and bit rot.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        chunks = max(1, -(-size // HASH_CHUNK))

        def one(i: int) -> bytes:
            h, offset, end = hashlib.blake2b(digest_size=16), i * HASH_CHUNK, min(size, (i + 1) * HASH_CHUNK)
            while offset < end:
                data = os.pread(fd, end - offset, offset)
                if not data:
                    raise OSError(errno.EIO, f"{path} shrank while being read")
                h.update(data)
                offset += len(data)
            return h.digest()

        workers = min(chunks, _threads(threads))
        if workers > 1:
            with ThreadPoolExecutor(workers) as pool:
                parts = list(pool.map(one, range(chunks)))
        else:
            parts = [one(i) for i in range(chunks)]
    finally:
        os.close(fd)
    return hashlib.blake2b(b"".join(parts) + size.to_bytes(8, "little"), digest_size=16).hexdigest()


def _fsync(path: Path) -> None:
    """Flush a file (or folder) to disk: a crash after the rename must not leave an entry of empty files."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:  # some file systems cannot fsync a folder
        if exc.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def _write_meta(out: Path, meta: dict) -> None:
    atomic_write_text(out / "meta.json", json.dumps(meta) + "\n")


def _read_meta(path: Path) -> dict:
    try:
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CacheEntryError(path, "it has no meta.json (an interrupted copy or build)") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CacheEntryError(path, f"meta.json is unreadable or cut short ({type(exc).__name__}: {exc})") from exc
    if not isinstance(meta, dict) or meta.get("version") != CACHE_VERSION or not isinstance(meta.get("files"), dict):
        version = meta.get("version") if isinstance(meta, dict) else None
        raise CacheEntryError(path, f"meta.json is not a format-{CACHE_VERSION} entry (version {version!r})")
    return meta


def check_entry(path: Path, meta: dict, verify: bool = True, threads: int | None = None) -> None:
    """Raise CacheEntryError unless every array file has the size (and, with ``verify``, the hash) ``meta`` records."""
    names = REQUIRED_FILES + (ORIGINAL_FILES if meta.get("keep_original") else ())
    for name in names:
        recorded = meta["files"].get(name)
        if not isinstance(recorded, dict):
            raise CacheEntryError(path, f"meta.json does not describe {name}")
        try:
            actual = (path / name).stat().st_size
        except OSError as exc:
            raise CacheEntryError(path, f"{name} is missing or unreadable ({exc.strerror or exc})") from exc
        if actual != recorded.get("bytes"):
            raise CacheEntryError(path, f"{name} has {actual} bytes, meta.json records {recorded.get('bytes')}")
    if verify:
        for name in names:
            try:
                digest = file_digest(path / name, threads)
            except OSError as exc:
                raise CacheEntryError(path, f"{name} cannot be read ({exc})") from exc
            if digest != meta["files"][name].get("hash"):
                raise CacheEntryError(path, f"{name} does not match the hash in meta.json (its content changed)")


# -- the on-disk entry ---------------------------------------------------------------------------------------------


def _beside(dataset_root: Path) -> Path:
    return dataset_root.parent / ".vlsm_cache" / dataset_root.name


def _tag(dataset_root: Path) -> str:
    return f"{dataset_root.name}-{hashlib.sha256(str(dataset_root).encode()).hexdigest()[:8]}"


def default_cache_root(dataset_root: Path) -> Path:
    """Where a dataset's cache entries are built (see the module docstring)."""
    dataset_root = Path(dataset_root).absolute()
    if os.environ.get("VLSM_CACHE"):
        return Path(os.environ["VLSM_CACHE"]) / _tag(dataset_root)
    beside = _beside(dataset_root)
    probe = beside if beside.exists() else dataset_root.parent
    if os.access(probe, os.W_OK):
        return beside
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "vlsm-batch" / _tag(dataset_root)


def entry_key(samples: Sequence[Sample], size: int, keep_original: bool, dataset_root: Path) -> str:
    h = hashlib.sha256(f"v{CACHE_VERSION}|{size}|{int(keep_original)}".encode())
    root = Path(dataset_root).absolute()
    for s in samples:
        for p in (s.image, s.mask):
            st = p.stat()
            rel = os.path.relpath(Path(p).absolute(), root)
            h.update(f"|{rel}|{st.st_size}|{st.st_mtime_ns}".encode())
        if s.resize_mask:
            h.update(b"|resized")
    return h.hexdigest()[:16]


def load_entry(path: Path, verify: bool = True, threads: int | None = None) -> SplitArrays:
    """A complete entry, memory-mapped; raises CacheEntryError (naming the folder) when it is incomplete, damaged
    (sizes, and with ``verify`` the content hashes, differ from ``meta.json``) or of another format version."""
    path = Path(path)
    meta = _read_meta(path)
    check_entry(path, meta, verify, threads)
    try:
        arrays = SplitArrays(
            size=int(meta["size"]),
            images=np.load(path / "images.npy", mmap_mode="r"),
            image_index=np.load(path / "image_index.npy"),
            masks=np.load(path / "masks.npy", mmap_mode="r"),
            path=path,
        )
        if meta["keep_original"]:
            arrays.original_bits = np.load(path / "original_bits.npy", mmap_mode="r")
            arrays.original_index = np.load(path / "original_index.npy")
        n_images, n_samples = int(meta["n_images"]), int(meta["n_samples"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CacheEntryError(path, f"an array file does not load ({type(exc).__name__}: {exc})") from exc
    if arrays.images.shape[0] != n_images or len(arrays.image_index) != n_samples or len(arrays.masks) != n_samples:
        raise CacheEntryError(path, "array shapes differ from the counts in meta.json")
    return arrays


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def cached_split(
    samples: Sequence[Sample],
    size: int,
    keep_original: bool,
    dataset_root: Path,
    split: str,
    cache_root: Path | None = None,
    threads: int | None = None,
) -> SplitArrays:
    """The split's arrays from the cache, built first when absent and rebuilt once when damaged (safe with
    concurrent builders). Without ``cache_root``, an entry next to the data that this user cannot write is still
    read from there."""
    key = entry_key(samples, size, keep_original, dataset_root)
    name = f"{split}-{size}px-{key}"
    if cache_root is None:
        cache_root = default_cache_root(dataset_root)
        shared = _beside(Path(dataset_root).absolute()) / name
        # next to the data but not writable for us (built by a colleague): read it rather than decode again
        if not os.environ.get("VLSM_CACHE") and shared.parent != cache_root and shared.is_dir():
            try:
                return load_entry(shared, threads=threads)
            except CacheEntryError as exc:
                _warn(f"{exc}; this user cannot replace it, so a private copy is built in {cache_root} (its owner "
                      f"should delete {shared})")  # fmt: skip
    return _entry(Path(cache_root), name, samples, size, keep_original, threads)


def _entry(
    root: Path, name: str, samples: Sequence[Sample], size: int, keep_original: bool, threads: int | None
) -> SplitArrays:
    final = root / name
    sweep_stale(root, name)  # what a killed earlier build (or discard) left behind
    if os.path.lexists(final):
        with contextlib.suppress(CacheEntryError):  # damaged: decided again under the lock, then rebuilt
            return load_entry(final, threads=threads)
    root.mkdir(parents=True, exist_ok=True)
    rebuilt = False
    with _lock(root / f".{name}.lock"):
        if os.path.lexists(final):  # built (or repaired) by another task while we waited, or still damaged
            try:
                return load_entry(final, threads=threads)
            except CacheEntryError as exc:
                _warn(f"{exc}; rebuilding it")
                _discard(final, exc)
                rebuilt = True
        tmp = build_dir(root, name)
        try:
            share_like_mkdir(tmp)
            build_arrays(samples, size, keep_original, out=tmp, threads=threads)
            _fsync(tmp)
            try:
                os.rename(tmp, final)
                mine = True
            except OSError as exc:  # another builder renamed first (no working lock): use theirs
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                mine = False
            _fsync(root)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    try:
        return load_entry(final, verify=rebuilt or not mine, threads=threads)
    except CacheEntryError as exc:
        raise CacheEntryError(
            final,
            f"{exc.reason}, even after it was rebuilt. Delete the folder {final} and run again; if this repeats, "
            f"the file system under {root} is losing writes: point VLSM_CACHE at a folder on another disk",
        ) from exc


def _discard(final: Path, damage: CacheEntryError) -> None:
    """Move a damaged entry aside (renamed into a hidden build folder, so a crash here is swept later) and delete it;
    other processes that still map its files keep them until they close them."""
    aside = build_dir(final.parent, final.name)
    try:
        os.rename(final, aside)
    except FileNotFoundError:
        pass  # someone else discarded it first
    except OSError as exc:
        shutil.rmtree(aside, ignore_errors=True)
        raise CacheEntryError(
            final,
            f"{damage.reason}, and it cannot be replaced ({exc.strerror or exc}). Delete the folder {final} (as a "
            "user who may write there), or set VLSM_CACHE to a folder of your own",
        ) from exc
    shutil.rmtree(aside, ignore_errors=True)


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An advisory exclusive lock where the file system has one; without it, the rename alone keeps things safe.

    A lock file made by another user that this one may only read still locks (flock needs no write access)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    try:
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o666)
    except PermissionError:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            yield
            return
    except OSError:
        yield
        return
    try:
        with contextlib.suppress(OSError):  # e.g. a file system without locks
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
