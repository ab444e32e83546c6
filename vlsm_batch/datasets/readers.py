"""One reader per on-disk layout (see the package docstring): ``read_samples(info, root, split)`` -> samples.

numpy/PIL-free and torch-free: readers resolve paths and prompts only; decoding is the cache's job.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from . import DatasetInfo
from .medvlsm import DatasetLayoutError, Sample, check_containment, read_split

SPLITS = ("train", "val", "test")
IMAGE_DIR_SPLITS = {"train": "training", "val": "validation", "test": "test"}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
CAMUS_SPLIT_FOLDER = {"train": "train", "val": "train", "test": "test"}  # val = 50 patients of the train folder
CAMUS_STRUCTURES = {1: "left ventricular cavity", 2: "myocardium", 3: "left atrium"}
CHEXLOCALIZE_PATHOLOGIES = (
    "Airspace Opacity",
    "Enlarged Cardiomediastinum",
    "Support Devices",
    "Atelectasis",
    "Cardiomegaly",
    "Pleural Effusion",
    "Edema",
    "Consolidation",
    "Lung Lesion",
    "Pneumothorax",
)
_CHEX_SNAKE = {p.lower().replace(" ", "_"): p for p in CHEXLOCALIZE_PATHOLOGIES}
_CAMUS_MASK = re.compile(r"^mask_([123])/(.+)_gt\.png$")


def read_samples(
    info: DatasetInfo, root: Path, split: str, prompt_key: str | None = None, check_files: bool = True
) -> list[Sample]:
    """The samples of one split of a dataset in ``info.layout`` under ``root``; DatasetLayoutError if malformed.

    ``check_files=False`` skips the existence check of every image and mask (``verify`` does its own).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    root = Path(root)
    key = prompt_key or info.prompt_key
    if info.layout in ("medvlsm", "chexlocalize"):
        samples = read_split(root, split, key, check_files)
        if info.layout == "chexlocalize":
            for s in samples:
                chexlocalize_pathology(s.image.name, s.mask.name)
    elif info.layout == "camus":
        folder = CAMUS_SPLIT_FOLDER[split]
        images, masks = root / "images" / folder, root / "masks" / folder
        samples = read_split(root, split, key, check_files, images=images, masks=masks)
        for s in samples:
            camus_structure(s.image.name, s.mask.relative_to(masks).as_posix())
    elif info.layout == "image_dir":
        samples = read_image_dir(root, split)
    else:
        raise DatasetLayoutError(f"dataset {info.name!r}: unknown layout {info.layout!r}")
    if info.prompt_source == "fixed" and info.fixed_prompt:
        samples = [dataclasses.replace(s, prompts=(info.fixed_prompt,)) for s in samples]
    if info.resize_masks:
        samples = [dataclasses.replace(s, resize_mask=True) for s in samples]
    return samples


def chexlocalize_pathology(img_name: str, mask_name: str) -> str:
    """The pathology a CheXlocalize mask is for: ``<image stem>_<pathology_snake_case>.png``."""
    stem, mask_stem = Path(img_name).stem, Path(mask_name).stem
    prefix = stem + "_"
    if Path(mask_name).suffix.lower() != ".png" or not mask_stem.startswith(prefix):
        raise DatasetLayoutError(
            f"CheXlocalize mask {mask_name!r} is not named <image stem>_<pathology>.png for image {img_name!r}"
        )
    snake = mask_stem[len(prefix) :].lower()
    if snake not in _CHEX_SNAKE:
        raise DatasetLayoutError(
            f"CheXlocalize mask {mask_name!r}: unknown pathology {snake!r}; expected one of {sorted(_CHEX_SNAKE)}"
        )
    return _CHEX_SNAKE[snake]


def camus_structure(img_name: str, mask_name: str) -> str:
    """The structure a CAMUS mask is for: ``mask_{1,2,3}/<image stem>_gt.png``."""
    m = _CAMUS_MASK.match(mask_name)
    if not m or m.group(2) != Path(img_name).stem:
        raise DatasetLayoutError(
            f"CAMUS mask {mask_name!r} is not named mask_{{1,2,3}}/<image stem>_gt.png for image {img_name!r}"
        )
    return CAMUS_STRUCTURES[int(m.group(1))]


IMAGE_DIR_HELP = (
    "expected the image_dir layout <root>/images/<split>/<id>.<jpg|png> and "
    "<root>/annotations/<split>/<class>/<id>.png with <split> in training, validation, test "
    "(`vlsm-batch data prepare` writes it)"
)


def read_image_dir(root: Path, split: str) -> list[Sample]:
    """One sample per mask file ``annotations/<split>/<class>/<id>.png``; the prompt is the class name.

    Sorted by (class, id) so the order does not depend on the file system.
    """
    folder = IMAGE_DIR_SPLITS[split]
    images_dir, ann_dir = root / "images" / folder, root / "annotations" / folder
    for d in (images_dir, ann_dir):
        if not d.is_dir():
            what = "dataset folder" if not root.is_dir() else "folder"
            raise DatasetLayoutError(f"{what} not found: {d if root.is_dir() else root}; {IMAGE_DIR_HELP}")
    by_stem: dict[str, Path] = {}
    for p in images_dir.iterdir():
        if p.suffix.lower() in IMAGE_SUFFIXES:
            by_stem[p.stem] = p
    samples, missing = [], []
    for class_dir in sorted(p for p in ann_dir.iterdir() if p.is_dir()):
        for mask in sorted(class_dir.glob("*.png")):
            image = by_stem.get(mask.stem)
            if image is None:
                missing.append(f"{images_dir}/{mask.stem}.*")
                continue
            samples.append(Sample(image, mask, (class_dir.name,)))
    if missing:
        shown = "\n  ".join(missing[:5])
        more = f"\n  ... and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise DatasetLayoutError(f"{len(missing)} image(s) for masks under {ann_dir} are missing:\n  {shown}{more}")
    check_containment(samples, images_dir, ann_dir, f"found under {root}")
    return samples
