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
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from .medvlsm import DatasetLayoutError
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


def _fraction_of(key: str) -> float:
    """A stable number in [0, 1) from a string (SHA-256; independent of Python's hash seed)."""
    return int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:12], 16) / 16**12


def _find(raw: Path, marker: str) -> Path:
    """``raw`` or the folder below it that holds ``marker`` (accepts VOCdevkit/, VOCdevkit/VOC2012, ...)."""
    for cand in (raw, raw / "VOC2012", raw / "VOCdevkit" / "VOC2012", *sorted(raw.glob("*/*"))):
        if (cand / marker).exists():
            return cand
    raise DatasetLayoutError(f"{raw}: no {marker} found (looked in it and two levels below)")


def voc_items(raw: Path, val_fraction: float) -> tuple[list[Item], dict[str, object]]:
    root = _find(Path(raw), "ImageSets/Segmentation/train.txt")
    lists = root / "ImageSets" / "Segmentation"

    def ids(name: str) -> list[str]:
        return [line.strip() for line in (lists / name).read_text().splitlines() if line.strip()]

    items: list[Item] = []
    for official, ids_ in (("train", ids("train.txt")), ("val", ids("val.txt"))):
        for image_id in ids_:
            if official == "val":
                split = "test"
            else:
                split = "val" if _fraction_of(f"voc2012/{image_id}") < val_fraction else "train"
            label = root / "SegmentationClass" / f"{image_id}.png"
            items.append((split, image_id, root / "JPEGImages" / f"{image_id}.jpg", _voc_masks(label)))
    rule = {
        "test": "official val.txt",
        "validation": f"official train.txt ids with sha256('voc2012/<id>') in the first {val_fraction:.0%}",
        "training": "the rest of official train.txt",
        "void": "the 255 border/void label counts as background in every class mask",
    }
    return items, rule


def _voc_masks(label: Path) -> Callable[[], dict[str, np.ndarray]]:
    def load() -> dict[str, np.ndarray]:
        with Image.open(label) as im:
            if im.mode != "P":
                raise DatasetLayoutError(f"{label}: expected a palette PNG (mode P), got mode {im.mode}")
            index = np.asarray(im)
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
    for official, labels in (("train", [p for v in train_by_city.values() for p in v]), ("val", official_val)):
        for label in labels:
            city = label.parent.name
            image_id = label.name[: -len("_gtFine_labelIds.png")]  # <city>_<seq>_<frame>
            image = root / "leftImg8bit" / official / city / f"{image_id}_leftImg8bit.png"
            split = "test" if official == "val" else ("val" if city in held_out else "train")
            items.append((split, image_id, image, _cityscapes_masks(label)))
    rule = {
        "test": "official val",
        "validation": f"whole cities of official train, in sha256 order, until {val_fraction:.0%} of its images: "
        + ", ".join(sorted(held_out)),
        "training": "the other cities of official train",
        "classes": "19 evaluation classes, binarised by labelId",
    }
    return items, rule


def _cityscapes_masks(label: Path) -> Callable[[], dict[str, np.ndarray]]:
    def load() -> dict[str, np.ndarray]:
        with Image.open(label) as im:
            ids = np.asarray(im)
        if ids.ndim != 2:
            raise DatasetLayoutError(f"{label}: expected a single-channel labelIds PNG, got shape {ids.shape}")
        present = set(np.unique(ids).tolist())
        return {name: ids == lid for lid, name in CITYSCAPES_CLASSES.items() if lid in present}

    return load


RECIPES = {"voc2012": voc_items, "cityscapes": cityscapes_items}


def prepare(name: str, raw: Path, out: Path, val_fraction: float = 0.1, progress: bool = False) -> dict[str, object]:
    """Write the image_dir layout of dataset ``name`` from its official download ``raw`` into ``out``.

    Refuses an ``out`` that already exists (delete it to prepare again); returns the manifest.
    """
    if name not in RECIPES:
        raise DatasetLayoutError(f"no preparation recipe for {name!r}; available: {', '.join(sorted(RECIPES))}")
    if not 0 < val_fraction < 1:
        raise ValueError("val_fraction must be between 0 and 1")
    out = Path(out).absolute()
    if out.exists():
        raise DatasetLayoutError(f"{out} already exists; remove it (or choose another --to) to prepare again")
    items, rule = RECIPES[name](Path(raw), val_fraction)
    if not items:
        raise DatasetLayoutError(f"{raw}: no labelled images found for {name}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        counts = _write(tmp, items, progress)
        manifest = {
            "dataset": name,
            "version": PREPARE_VERSION,
            "source": str(Path(raw).absolute()),
            "layout": "image_dir",
            "splits": rule,
            "counts": counts,
        }
        (tmp / "prepared.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        os.rename(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _write(out: Path, items: Iterable[Item], progress: bool) -> dict[str, dict[str, int]]:
    counts = {split: {"images": 0, "samples": 0, "images_without_class": 0} for split in IMAGE_DIR_SPLITS}
    for n, (split, image_id, image, masks) in enumerate(items, 1):
        folder = IMAGE_DIR_SPLITS[split]
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
            Image.fromarray(mask.astype(np.uint8) * 255, "L").save(target)
            counts[split]["samples"] += 1
        if progress and n % 500 == 0:
            print(f"  {n} images", flush=True)
    return counts


def _link_or_copy(src: Path, dest: Path) -> None:
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)
