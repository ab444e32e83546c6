"""Reader of the medvlsm layout: ``<root>/{images/, masks/, anns/<split>.json}`` (docs/science.md §7.1).

Each annotation file is a list of ``{"img_name", "mask_name", "prompts": {"p0": "", "p1": ..., ...}}``; a prompt
value is a string or a list of strings. No torch, no image decoding: this only resolves paths and prompts. A name
must stay inside ``images/`` (``masks/``): ``..``, absolute paths and symlinks that lead out are refused
(``paths.py``).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import VlsmBatchError
from .paths import NAME_RULE, Containment, name_problem

LAYOUT_HELP = (
    "expected the medvlsm layout <root>/images/, <root>/masks/ and <root>/anns/{train,val,test}.json "
    "(a list of {img_name, mask_name, prompts: {p0, p1, ...}})"
)


class DatasetLayoutError(VlsmBatchError, FileNotFoundError):
    """A dataset folder is missing files or does not follow the expected layout."""


class DatasetPathError(DatasetLayoutError):
    """A name a dataset file lists leads outside the folder it must stay in (``..``, absolute, a symlink out)."""


class DatasetContentError(VlsmBatchError, ValueError):
    """A dataset file is there but cannot be used as it is: unreadable, or a mask of another size than its image."""


SHOWN_PATHS = 5  # offending entries listed in one message


def symlink_escapes(pairs: Iterable[tuple[Path, Path, str]], images: Path, masks: Path) -> list[str]:
    """``path -> target`` (and its note) for every image or mask of ``pairs`` a symlink leads out of its folder."""
    guards = (Containment(images), Containment(masks))
    escapes = []
    for image, mask, note in pairs:
        for path, guard in zip((image, mask), guards):
            target = guard.escape(path)
            if target is not None:
                escapes.append(f"{path} -> {target}{note}")
    return escapes


def shown_paths(entries: list[str]) -> str:
    """The first SHOWN_PATHS offending entries, one an indented line, and how many more (for one error message)."""
    more = f"\n  ... and {len(entries) - SHOWN_PATHS} more" if len(entries) > SHOWN_PATHS else ""
    return "\n  ".join(entries[:SHOWN_PATHS]) + more


@dataclass(frozen=True)
class Sample:
    """One (image, mask, prompt options) triple; ``prompts`` has at least one entry. ``resize_mask``: the dataset
    declares masks at another resolution than their images (``DatasetInfo.resize_masks``), so a mismatch is
    resized instead of refused."""

    image: Path
    mask: Path
    prompts: tuple[str, ...]
    resize_mask: bool = False

    def prompt(self, training: bool, rng: random.Random | None = None) -> str:
        return choose_prompt(self.prompts, training, rng)


def choose_prompt(options: tuple[str, ...], training: bool, rng: random.Random | None = None) -> str:
    """A random option in training, the FIRST one at evaluation.

    The original re-drew list-valued prompts on every access, validation and test included (docs/science.md §8.7),
    so its evaluation changed from run to run; evaluation here is deterministic.
    """
    if training and len(options) > 1:
        return (rng or random).choice(options)
    return options[0]


def read_split(
    root: Path,
    split: str,
    prompt_key: str = "p1",
    check_files: bool = True,
    images: Path | None = None,
    masks: Path | None = None,
) -> list[Sample]:
    """The samples of ``anns/<split>.json`` with absolute paths; raises DatasetLayoutError naming what is missing.

    ``images``/``masks``: the folders the names are relative to (default ``<root>/images``, ``<root>/masks``;
    CAMUS keeps one pair of folders per split).
    """
    root = Path(root)
    images = Path(images) if images is not None else root / "images"
    masks = Path(masks) if masks is not None else root / "masks"
    ann = root / "anns" / f"{split}.json"
    if not ann.is_file():
        what = "dataset folder" if not root.is_dir() else "annotation file"
        raise DatasetLayoutError(f"{what} not found: {ann if root.is_dir() else root}; {LAYOUT_HELP}")
    try:
        entries = json.loads(ann.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DatasetLayoutError(f"{ann}: not valid JSON ({e}); {LAYOUT_HELP}") from e
    if not isinstance(entries, list):
        raise DatasetLayoutError(f"{ann}: expected a list of samples, got {type(entries).__name__}; {LAYOUT_HELP}")

    samples = [_sample(images, masks, ann, i, entry, prompt_key) for i, entry in enumerate(entries)]
    check_containment(samples, images, masks, f"named in {ann}")
    if check_files:
        _check_files(root, ann, samples)
    return samples


def _sample(images: Path, masks: Path, ann: Path, i: int, entry: object, prompt_key: str) -> Sample:
    if not isinstance(entry, dict) or not {"img_name", "mask_name", "prompts"} <= entry.keys():
        raise DatasetLayoutError(f"{ann}: sample {i} lacks img_name, mask_name or prompts; {LAYOUT_HELP}")
    prompts = entry["prompts"]
    if not isinstance(prompts, dict):
        raise DatasetLayoutError(f"{ann}: sample {i} ({entry['img_name']}): prompts is not a mapping; {LAYOUT_HELP}")
    if prompt_key not in prompts:
        raise DatasetLayoutError(
            f"{ann}: sample {i} ({entry['img_name']}) has no prompt {prompt_key!r}; it has {sorted(prompts)}"
        )
    value = prompts[prompt_key]
    if not isinstance(value, (str, list)):
        raise DatasetLayoutError(f"{ann}: sample {i} ({entry['img_name']}): prompt {prompt_key!r} is not text")
    options = (value,) if isinstance(value, str) else tuple(str(v) for v in value)
    if not options:
        raise DatasetLayoutError(f"{ann}: sample {i} ({entry['img_name']}): prompt {prompt_key!r} is an empty list")
    for field, folder in (("img_name", images), ("mask_name", masks)):
        problem = name_problem(entry[field])
        if problem:
            raise DatasetPathError(
                f"{ann}: sample {i}: {field} {entry[field]!r} {problem}; every name must be {NAME_RULE} "
                f"({folder}). Fix or remove that entry of {ann.name}."
            )
    return Sample(images / entry["img_name"], masks / entry["mask_name"], options)


def check_containment(samples: list[Sample], images: Path, masks: Path, listed: str) -> None:
    """Refuse images (masks) that, symlinks followed, lead out of ``images`` (``masks``): one ``lstat`` per file.

    ``listed`` says where the names come from (``named in <annotation file>``), for the message.
    """
    escapes = symlink_escapes(((s.image, s.mask, "") for s in samples), images, masks)
    if escapes:
        raise DatasetPathError(
            f"{len(escapes)} file(s) {listed} lead outside their folder ({images} or {masks}) through a "
            f"symlink:\n  {shown_paths(escapes)}\nCopy those files into the dataset, or let the whole images/ (masks/) "
            "folder be the symlink; a dataset never reads files outside its folders."
        )


def _check_files(root: Path, ann: Path, samples: list[Sample]) -> None:
    """Fail before any decoding, listing the first missing files and how many there are."""
    missing = [p for s in samples for p in (s.image, s.mask) if not p.is_file()]
    if missing:
        shown = "\n  ".join(str(p) for p in missing[:5])
        more = f"\n  ... and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise DatasetLayoutError(f"{len(missing)} file(s) named in {ann} are missing:\n  {shown}{more}\n{LAYOUT_HELP}")
