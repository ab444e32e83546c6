"""``vlsm-batch data prepare voc2012|cityscapes --from RAW --to DIR``: official downloads -> the image_dir layout.

One binary mask (0/255 PNG) per (image, class present), under ``annotations/<split>/<class>/<id>.png``; the class
name is the prompt. Splits, unlike the original (which tested on its validation split):

- ``test`` = the official validation split (the official test labels are not public);
- ``validation`` = a deterministic held-out part of the official training split (VOC: images whose SHA-256 of the
  id falls in the first ``val_fraction``; Cityscapes: whole cities, chosen in SHA-256 order of their names until
  ``val_fraction`` of the images, so no street scene leaks between training and validation);
- ``training`` = the rest of the official training split.

The output is built in a hidden temporary folder next to ``--to`` and renamed into place, with ``prepared.json``
recording the source, the rule and the per-split counts (``verify`` checks against them). Images are hard-linked
when source and destination share a file system, copied otherwise.

Nothing a download lists can read or write outside its folders: an id in ``ImageSets/Segmentation/*.txt`` must be a
plain file name (``../../x`` is refused naming the list and its line), and a source image or label that is a
symlink out of its folder is refused. No existing file is ever overwritten: preparing into a folder that already
holds this preparation changes nothing and says so (a file deleted since is put back); one that holds anything
different is refused, naming what differs, before a file is written.
"""

from __future__ import annotations

import errno
import filecmp
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .medvlsm import DatasetContentError, DatasetLayoutError, DatasetPathError, shown_paths, symlink_escapes
from .paths import share_like_mkdir
from .readers import IMAGE_DIR_SPLITS

PREPARE_VERSION = 1
VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)  # fmt: skip  (palette indices 1..20; 0 background, 255 void border)
# The 19 Cityscapes evaluation classes (ignoreInEval False), by labelId (not trainId).
CITYSCAPES_CLASSES = {
    7: "road", 8: "sidewalk", 11: "building", 12: "wall", 13: "fence", 17: "pole", 19: "traffic light",
    20: "traffic sign", 21: "vegetation", 22: "terrain", 23: "sky", 24: "person", 25: "rider", 26: "car",
    27: "truck", 28: "bus", 31: "train", 32: "motorcycle", 33: "bicycle",
}  # fmt: skip

# (split, image id, image path, {class name: bool mask} producer)
Item = tuple[str, str, Path, Callable[[], dict[str, np.ndarray]]]
# An image id becomes a file name in the output: a plain name, nothing that could climb out of its folder.
IMAGE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,200}")
ID_RULE = "letters, digits, '_', '.' and '-', starting with a letter or digit (VOC ids look like 2007_000032)"


def _fraction_of(key: str) -> float:
    """A stable number in [0, 1) from a string (SHA-256; independent of Python's hash seed)."""
    return int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:12], 16) / 16**12


def _find(raw: Path, marker: str) -> Path:
    """``raw`` or the folder below it that holds ``marker`` (accepts VOCdevkit/, VOCdevkit/VOC2012, ...)."""
    for cand in (raw, raw / "VOC2012", raw / "VOCdevkit" / "VOC2012", *sorted(raw.glob("*/*"))):
        if (cand / marker).exists():
            return cand
    raise DatasetLayoutError(f"{raw}: no {marker} found (looked in it and two levels below)")


def _check_sources(pairs: Iterable[tuple[Path, Path, str]], images: Path, labels: Path) -> None:
    """Refuse source images (labels) that, symlinks followed, lead out of ``images`` (``labels``); ``pairs`` holds
    (image, label, where it is listed)."""
    escapes = symlink_escapes(((image, label, f" ({where})") for image, label, where in pairs), images, labels)
    if escapes:
        raise DatasetPathError(
            f"{len(escapes)} source file(s) lead outside their folder ({images} or {labels}) through a symlink:\n"
            f"  {shown_paths(escapes)}\nCopy those files into the download (or let the whole folder be the symlink); "
            "nothing was written."
        )


def voc_ids(path: Path) -> list[tuple[int, str]]:
    """(line number, image id) of a VOC list; an id that is not a plain file name is refused naming its line."""
    out = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        image_id = line.strip()
        if not image_id:
            continue
        if not IMAGE_ID.fullmatch(image_id):
            raise DatasetPathError(
                f"{path}:{lineno}: image id {image_id!r} is not a plain file name ({ID_RULE}); an id names "
                "JPEGImages/<id>.jpg and the output files, so it may not lead elsewhere. Fix or remove that line; "
                "nothing was written."
            )
        out.append((lineno, image_id))
    return out


def voc_items(raw: Path, val_fraction: float) -> tuple[list[Item], dict[str, object]]:
    root = _find(Path(raw), "ImageSets/Segmentation/train.txt")
    lists = root / "ImageSets" / "Segmentation"
    images, labels = root / "JPEGImages", root / "SegmentationClass"

    items: list[Item] = []
    seen: dict[str, str] = {}
    sources = []
    for official in ("train", "val"):
        path = lists / f"{official}.txt"
        for lineno, image_id in voc_ids(path):
            where = f"{path}:{lineno}"
            if image_id in seen:
                raise DatasetLayoutError(
                    f"{where}: image id {image_id!r} is listed again (first at {seen[image_id]}); an image in two "
                    "splits (or twice in one) would leak between them or be written twice. Remove the repeat."
                )
            seen[image_id] = where
            if official == "val":
                split = "test"
            else:
                split = "val" if _fraction_of(f"voc2012/{image_id}") < val_fraction else "train"
            image, label = images / f"{image_id}.jpg", labels / f"{image_id}.png"
            sources.append((image, label, where))
            items.append((split, image_id, image, _voc_masks(label)))
    _check_sources(sources, images, labels)
    rule: dict[str, object] = {
        "test": "official val.txt",
        "validation": f"official train.txt ids with sha256('voc2012/<id>') in the first {val_fraction:.0%}",
        "training": "the rest of official train.txt",
        "void": "the 255 border/void label counts as background in every class mask",
    }
    return items, rule


def _read_label(label: Path) -> tuple[str, np.ndarray]:
    """(mode, pixel array) of a label PNG; a missing or unreadable one is an error naming it."""
    if not label.is_file():
        raise DatasetLayoutError(f"label not found: {label}")
    try:
        with Image.open(label) as im:
            return im.mode, np.asarray(im)
    except MemoryError:
        raise
    except Exception as exc:
        raise DatasetContentError(
            f"cannot read label {label} ({type(exc).__name__}: {exc}); replace it with a good copy of the download"
        ) from exc


def _voc_masks(label: Path) -> Callable[[], dict[str, np.ndarray]]:
    def load() -> dict[str, np.ndarray]:
        mode, index = _read_label(label)
        if mode != "P":
            raise DatasetLayoutError(f"{label}: expected a palette PNG (mode P), got mode {mode}")
        return {VOC_CLASSES[c - 1]: index == c for c in np.unique(index).tolist() if 1 <= c <= len(VOC_CLASSES)}

    return load


def cityscapes_items(raw: Path, val_fraction: float) -> tuple[list[Item], dict[str, object]]:
    root = _find(Path(raw), "gtFine/train")
    items: list[Item] = []
    train_by_city: dict[str, list[Path]] = {}
    for label in sorted((root / "gtFine" / "train").glob("*/*_gtFine_labelIds.png")):
        train_by_city.setdefault(label.parent.name, []).append(label)
    total = sum(len(v) for v in train_by_city.values())
    held_out: set[str] = set()
    count = 0
    for city in sorted(train_by_city, key=lambda c: _fraction_of(f"cityscapes/{c}")):
        if count >= val_fraction * total or len(held_out) == len(train_by_city) - 1:
            break
        held_out.add(city)
        count += len(train_by_city[city])
    official_val = sorted((root / "gtFine" / "val").glob("*/*_gtFine_labelIds.png"))
    sources = []
    for official, labels in (("train", [p for v in train_by_city.values() for p in v]), ("val", official_val)):
        for label in labels:
            city = label.parent.name
            image_id = label.name[: -len("_gtFine_labelIds.png")]  # <city>_<seq>_<frame>
            image = root / "leftImg8bit" / official / city / f"{image_id}_leftImg8bit.png"
            split = "test" if official == "val" else ("val" if city in held_out else "train")
            sources.append((image, label, f"found under {root / 'gtFine'}"))
            items.append((split, image_id, image, _cityscapes_masks(label)))
    _check_sources(sources, root / "leftImg8bit", root / "gtFine")
    rule: dict[str, object] = {
        "test": "official val",
        "validation": f"whole cities of official train, in sha256 order, until {val_fraction:.0%} of its images: "
        + ", ".join(sorted(held_out)),
        "training": "the other cities of official train",
        "classes": "19 evaluation classes, binarised by labelId",
    }
    return items, rule


def _cityscapes_masks(label: Path) -> Callable[[], dict[str, np.ndarray]]:
    def load() -> dict[str, np.ndarray]:
        _mode, ids = _read_label(label)
        if ids.ndim != 2:
            raise DatasetLayoutError(f"{label}: expected a single-channel labelIds PNG, got shape {ids.shape}")
        present = set(np.unique(ids).tolist())
        return {name: ids == lid for lid, name in CITYSCAPES_CLASSES.items() if lid in present}

    return load


RECIPES = {"voc2012": voc_items, "cityscapes": cityscapes_items}


@dataclass
class Prepared:
    """What ``prepare`` did: ``written`` files new in ``out``, ``unchanged`` ones already there with the same
    content, ``foreign`` files in an existing ``out`` that this preparation does not produce (left as they are)."""

    manifest: dict[str, object]
    out: Path
    written: int = 0
    unchanged: int = 0
    foreign: list[str] = field(default_factory=list)


MANIFEST = "prepared.json"


def prepare(name: str, raw: Path, out: Path, val_fraction: float = 0.1, progress: bool = False) -> dict[str, object]:
    """Write the image_dir layout of dataset ``name`` from its official download ``raw`` into ``out``; returns
    the manifest. See ``prepare_dataset``."""
    return prepare_dataset(name, raw, out, val_fraction, progress).manifest


def prepare_dataset(name: str, raw: Path, out: Path, val_fraction: float = 0.1, progress: bool = False) -> Prepared:
    """``prepare``, saying what changed. An ``out`` that holds this same preparation is left as it is (files missing
    from it are added); one that holds anything else is refused before any file is written."""
    if name not in RECIPES:
        raise DatasetLayoutError(f"no preparation recipe for {name!r}; available: {', '.join(sorted(RECIPES))}")
    if not 0 < val_fraction < 1:
        raise ValueError("val_fraction must be between 0 and 1")
    out = Path(out).absolute()
    _check_existing(out, name)
    items, rule = RECIPES[name](Path(raw), val_fraction)
    if not items:
        raise DatasetLayoutError(f"{raw}: no labelled images found for {name}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        share_like_mkdir(tmp)
        counts = _write(tmp, items, progress)
        manifest = {
            "dataset": name,
            "version": PREPARE_VERSION,
            "source": str(Path(raw).absolute()),
            "layout": "image_dir",
            "splits": rule,
            "counts": counts,
        }
        with open(tmp / MANIFEST, "x", encoding="utf-8") as f:
            f.write(json.dumps(manifest, indent=1) + "\n")
        written = sum(1 for p in tmp.rglob("*") if p.is_file())
        try:
            os.rename(tmp, out)  # out absent (or an empty folder): the whole result appears at once
            return Prepared(manifest, out, written=written)
        except OSError as exc:  # a folder holding files, or a mount point: merged file by file, never overwriting
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR, errno.EBUSY, errno.EXDEV):
                raise
        return _merge(tmp, out, manifest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _check_existing(out: Path, name: str) -> None:
    """Before any work: an existing ``out`` must be a folder that is empty or holds a preparation of ``name``."""
    again = "remove it (or choose another --to) to prepare again"
    if not os.path.lexists(out):
        return
    if out.is_symlink() and not out.is_dir():
        raise DatasetLayoutError(f"{out} already exists as a symlink that is not a folder; {again}")
    if not out.is_dir():
        raise DatasetLayoutError(f"{out} already exists and is not a folder; {again}")
    if not any(out.iterdir()):
        return
    manifest = out / MANIFEST
    if not manifest.is_file():
        raise DatasetLayoutError(f"{out} already exists and is not a prepared dataset (no {MANIFEST}); {again}")
    try:
        previous = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetLayoutError(f"{out} already exists and its {MANIFEST} is unreadable ({exc}); {again}") from exc
    if not isinstance(previous, dict) or previous.get("dataset") != name:
        what = previous.get("dataset") if isinstance(previous, dict) else None
        raise DatasetLayoutError(f"{out} already exists and holds a preparation of {what!r}, not {name!r}; {again}")


def _same_content(a: Path, b: Path) -> bool:
    """Same bytes (or the same file); for PNGs also the same pixels (another Pillow may compress differently)."""
    try:
        if os.path.samefile(a, b) or filecmp.cmp(a, b, shallow=False):
            return True
    except OSError:
        return False
    if a.suffix.lower() != ".png":
        return False
    try:
        with Image.open(a) as x, Image.open(b) as y:
            return x.mode == y.mode and x.size == y.size and np.array_equal(np.asarray(x), np.asarray(y))
    except Exception:  # an unreadable existing file is simply different
        return False


def _merge(tmp: Path, out: Path, manifest: dict[str, object]) -> Prepared:
    """Put the files of ``tmp`` into the existing ``out`` without overwriting any: all checked first, then the
    missing ones linked in (``os.link`` refuses an existing name), ``prepared.json`` last."""
    _check_existing(out, str(manifest["dataset"]))  # again: it may have appeared since the first look
    real_out = os.path.realpath(out)
    conflicts, missing, unchanged = [], [], 0
    previous_path = out / MANIFEST
    if previous_path.is_file():
        previous = json.loads(previous_path.read_text(encoding="utf-8"))
        keys = sorted(k for k in set(previous) | set(manifest) if k != "source" and previous.get(k) != manifest.get(k))
        if keys:
            conflicts.append(f"{previous_path} differs in {', '.join(keys)}")
    produced = set()
    for src in sorted(p for p in tmp.rglob("*") if p.is_file()):
        rel = src.relative_to(tmp)
        produced.add(rel)
        if rel == Path(MANIFEST):
            continue
        dest = out / rel
        parent = os.path.realpath(dest.parent)
        if parent != real_out and not parent.startswith(real_out + os.sep):
            conflicts.append(f"{dest.parent} leads outside {out} (a symlink)")
        elif not os.path.lexists(dest):
            missing.append(rel)
        elif dest.is_symlink() or not dest.is_file():
            conflicts.append(f"{dest} is not a regular file")
        elif _same_content(src, dest):
            unchanged += 1
        else:
            conflicts.append(f"{dest} differs")
    if conflicts:
        raise DatasetLayoutError(
            f"{out} already exists and holds a different preparation ({len(conflicts)} difference(s)):\n  "
            f"{shown_paths(conflicts)}"
            "\nNothing was changed; remove it (or choose another --to) to prepare again."
        )
    foreign = sorted(
        str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.relative_to(out) not in produced
    )
    if not previous_path.is_file():
        missing.append(Path(MANIFEST))
    for rel in missing:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        _link_or_copy(tmp / rel, out / rel)
    return Prepared(manifest, out, written=len(missing), unchanged=unchanged, foreign=foreign)


def _write(out: Path, items: Iterable[Item], progress: bool) -> dict[str, dict[str, int]]:
    counts = {split: {"images": 0, "samples": 0, "images_without_class": 0} for split in IMAGE_DIR_SPLITS}
    for n, (split, image_id, image, masks) in enumerate(items, 1):
        folder = IMAGE_DIR_SPLITS[split]
        if not IMAGE_ID.fullmatch(image_id):
            raise DatasetPathError(f"image id {image_id!r} (of {image}) is not a plain file name ({ID_RULE})")
        if not image.is_file():
            raise DatasetLayoutError(f"image not found: {image}")
        present = masks()
        counts[split]["images"] += 1
        if not present:
            counts[split]["images_without_class"] += 1
            continue  # no class present: no sample (a background-only image has nothing to prompt for)
        dest = out / "images" / folder / f"{image_id}{image.suffix.lower()}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        _link_or_copy(image, dest)
        for cls, mask in sorted(present.items()):
            target = out / "annotations" / folder / cls / f"{image_id}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "xb") as f:  # "x": an id written twice is an error, never an overwrite
                Image.fromarray(mask.astype(np.uint8) * 255, "L").save(f, format="PNG")
            counts[split]["samples"] += 1
        if progress and n % 500 == 0:
            print(f"  {n} images", flush=True)
    return counts


def _link_or_copy(src: Path, dest: Path) -> None:
    """Hard link, else copy; both refuse an existing ``dest`` (FileExistsError) instead of replacing it."""
    try:
        os.link(src, dest)
    except FileExistsError:
        raise
    except OSError:
        with open(src, "rb") as fin, open(dest, "xb") as fout:
            shutil.copyfileobj(fin, fout)
