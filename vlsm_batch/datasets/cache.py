"""Decoded, resized split arrays on disk: each (dataset, split, image size) is decoded once, then memory-mapped.

A cache entry is a folder ``<cache root>/<split>-<size>px-<key>/`` holding

- ``images.npy``  (n_images, 3, S, S) uint8 RGB, bicubic-resized; each distinct image once (CheXlocalize and CAMUS
  have several samples per image, the natural datasets one per image x class);
- ``image_index.npy`` (n_samples,) int32: the image of each sample;
- ``masks.npy``   (n_samples, ceil(S*S/8)) uint8: the mask at model resolution, one bit per pixel (binarised at
  0.5 of the original, resized bilinearly, binarised at 0.5 again);
- for evaluation splits ``original_bits.npy`` + ``original_index.npy`` (n_samples, 3: bit offset, height,
  width): the binary mask at its original resolution (test metrics are computed there);
- ``meta.json``: format version, size, counts, file names.

``key`` is a SHA-256 of the format version, the size, whether originals are kept, and every sample's image and
mask path (relative to the dataset folder), byte size and modification time: editing or replacing a file makes
a new entry. The root is ``$VLSM_CACHE/<dataset>-<hash of its path>`` when set, else ``<data_root>/.vlsm_cache/
<dataset>`` (next to the data), else ``~/.cache/vlsm-batch/...`` when the data folder is read-only.

Several array tasks may build the same entry at once: each builds into a hidden temporary folder and renames it
into place (the first rename wins; the others discard theirs), and an advisory ``flock`` on ``<entry>.lock``
makes the later ones wait and reuse instead of decoding again where the file system supports it.
numpy + PIL only (no torch).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..tempdirs import build_dir, sweep_stale
from .medvlsm import Sample

CACHE_VERSION = 1


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


def decode_image(path: Path, size: int) -> np.ndarray:
    """(3, S, S) uint8 RGB, bicubic (as the original's albumentations Resize)."""
    with Image.open(path) as im:
        rgb = im.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)


def decode_mask(path: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(original bool mask, (S, S) uint8 0/1): grey value / 255 > 0.5 once, so soft JPEG masks become binary."""
    with Image.open(path) as m:
        binary = np.asarray(m.convert("L")) > 127
    small = Image.fromarray(binary.astype(np.uint8) * 255).resize((size, size), Image.Resampling.BILINEAR)
    return binary, (np.asarray(small) > 127).astype(np.uint8)


def _threads(threads: int | None) -> int:
    return threads or min(8, os.cpu_count() or 1)


def build_arrays(
    samples: Sequence[Sample], size: int, keep_original: bool, out: Path | None = None, threads: int | None = None
) -> SplitArrays:
    """Decode a split; into ``.npy`` files under ``out`` (memory-mapped while writing) or, without ``out``, memory."""
    unique: dict[Path, int] = {}
    for s in samples:
        unique.setdefault(s.image, len(unique))
    image_index = np.array([unique[s.image] for s in samples], dtype=np.int32)
    n_bytes = (size * size + 7) // 8
    shape = (len(unique), 3, size, size)
    if out is not None:
        images = np.lib.format.open_memmap(out / "images.npy", mode="w+", dtype=np.uint8, shape=shape)
    else:
        images = np.empty(shape, dtype=np.uint8)
    masks = np.empty((len(samples), n_bytes), dtype=np.uint8)
    originals: list[np.ndarray] = []
    index = np.zeros((len(samples), 3), dtype=np.int64)

    def put_image(item: tuple[Path, int]) -> None:  # PIL releases the GIL while decoding and resizing
        images[item[1]] = decode_image(item[0], size)

    def one_mask(s: Sample) -> tuple[np.ndarray, np.ndarray | None, tuple[int, int]]:
        full, small = decode_mask(s.mask, size)
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
        images.flush()
        del images
        np.save(out / "image_index.npy", image_index)
        np.save(out / "masks.npy", masks)
        if keep_original:
            np.save(out / "original_bits.npy", bits)
            np.save(out / "original_index.npy", index)
        meta = {
            "version": CACHE_VERSION,
            "size": size,
            "n_samples": len(samples),
            "n_images": len(unique),
            "keep_original": keep_original,
            "samples": [[str(s.image), str(s.mask)] for s in samples],
        }
        (out / "meta.json").write_text(json.dumps(meta) + "\n", encoding="utf-8")
    return result


# -- the on-disk entry ---------------------------------------------------------------------------------------------


def default_cache_root(dataset_root: Path) -> Path:
    """Where a dataset's cache entries live (see the module docstring)."""
    dataset_root = Path(dataset_root).absolute()
    tag = f"{dataset_root.name}-{hashlib.sha256(str(dataset_root).encode()).hexdigest()[:8]}"
    if os.environ.get("VLSM_CACHE"):
        return Path(os.environ["VLSM_CACHE"]) / tag
    beside = dataset_root.parent / ".vlsm_cache" / dataset_root.name
    probe = beside if beside.exists() else dataset_root.parent
    if os.access(probe, os.W_OK):
        return beside
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "vlsm-batch" / tag


def entry_key(samples: Sequence[Sample], size: int, keep_original: bool, dataset_root: Path) -> str:
    h = hashlib.sha256(f"v{CACHE_VERSION}|{size}|{int(keep_original)}".encode())
    root = Path(dataset_root).absolute()
    for s in samples:
        for p in (s.image, s.mask):
            st = p.stat()
            rel = os.path.relpath(Path(p).absolute(), root)
            h.update(f"|{rel}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def load_entry(path: Path) -> SplitArrays:
    """A complete entry, memory-mapped (raises ValueError for another format version)."""
    meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    if meta.get("version") != CACHE_VERSION:
        raise ValueError(f"{path}: cache format {meta.get('version')}, this build reads {CACHE_VERSION}")
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
    return arrays


def cached_split(
    samples: Sequence[Sample],
    size: int,
    keep_original: bool,
    dataset_root: Path,
    split: str,
    cache_root: Path | None = None,
    threads: int | None = None,
) -> SplitArrays:
    """The split's arrays from the cache, built first when absent (safe with concurrent builders)."""
    cache_root = Path(cache_root) if cache_root is not None else default_cache_root(dataset_root)
    key = entry_key(samples, size, keep_original, dataset_root)
    final = cache_root / f"{split}-{size}px-{key}"
    sweep_stale(cache_root, final.name)  # what a killed earlier build left behind
    if (final / "meta.json").is_file():
        return load_entry(final)
    cache_root.mkdir(parents=True, exist_ok=True)
    with _lock(cache_root / f".{final.name}.lock"):
        if (final / "meta.json").is_file():  # another task built it while we waited
            return load_entry(final)
        tmp = build_dir(cache_root, final.name)
        try:
            build_arrays(samples, size, keep_original, out=tmp, threads=threads)
            try:
                os.rename(tmp, final)
            except OSError as exc:  # another builder renamed first (no working lock): use theirs
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not (final / "meta.json").is_file():
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return load_entry(final)


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An advisory exclusive lock where the file system has one; without it, the rename alone keeps things safe."""
    try:
        import fcntl

        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o666)
    except (ImportError, OSError):
        yield
        return
    try:
        with contextlib.suppress(OSError):  # e.g. a file system without locks
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
