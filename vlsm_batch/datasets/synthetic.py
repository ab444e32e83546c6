"""A small generated dataset in the real medvlsm layout, for tests and the quickstart.

numpy + PIL only: the submit command calls this on a login node, where importing torch is not wanted.
The target is a bright, slightly tinted ellipse on textured noise (learnable by a tiny model in a few epochs),
with a dark distractor in some images and a few negative samples (empty mask, negated prompt) as in BKAI/BUSI.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..tempdirs import build_dir, sweep_stale
from .paths import share_like_mkdir

FOLDER = "synthetic"
SPLITS = (("train", 48), ("val", 16), ("test", 16))
SEED = 20241007
NEGATIVE_EVERY = 8  # every 8th sample has an empty mask and a negated prompt: 6 / 2 / 2


def ensure_synthetic(data_root: Path) -> Path:
    """``<data_root>/synthetic``, generated first if ``anns/test.json`` is missing.

    The dataset is built in a hidden temporary folder next to it and renamed into place in one step, so callers
    running at once (array tasks) end with one complete copy and a crash leaves nothing half-written there. The
    folder gets the umask's mode (not the temporary folder's 0700), so a group-shared data root works for all.
    """
    data_root = Path(data_root).absolute()
    root = data_root / FOLDER
    sweep_stale(data_root, FOLDER)  # what a killed earlier build left behind
    if _complete(root):
        return root
    data_root.mkdir(parents=True, exist_ok=True)
    tmp = build_dir(data_root, FOLDER)
    try:
        share_like_mkdir(tmp)
        generate(tmp)
        try:
            os.rename(tmp, root)  # atomic; fails when another caller's copy is already in place
        except OSError:
            if not _complete(root):
                raise FileExistsError(
                    f"{root} exists but has no anns/test.json: it is not a dataset vlsm-batch generated; "
                    "move it away and run again"
                ) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def _complete(root: Path) -> bool:
    return (root / "anns" / "test.json").is_file()


def generate(out: Path) -> None:
    """Write images/, masks/ and anns/{train,val,test}.json into ``out`` (deterministic: fixed seed)."""
    rng = np.random.default_rng(SEED)
    for sub in ("images", "masks", "anns"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    index = 0
    for split, count in SPLITS:
        entries = []
        for _ in range(count):
            negative = index % NEGATIVE_EVERY == NEGATIVE_EVERY - 1
            image, mask, where = _draw(rng, negative)
            img_name, mask_name = f"synth_{index:04d}.png", f"synth_{index:04d}_mask.png"
            Image.fromarray(image, "RGB").save(out / "images" / img_name)
            Image.fromarray(mask, "L").save(out / "masks" / mask_name)
            entries.append({"img_name": img_name, "mask_name": mask_name, "prompts": _prompts(negative, where)})
            index += 1
        (out / "anns" / f"{split}.json").write_text(json.dumps(entries, indent=1) + "\n", encoding="utf-8")


def _prompts(negative: bool, where: str) -> dict[str, Any]:
    """p0 empty (as in medvlsm), p1 the class name, p2 a list of descriptive variants."""
    if negative:
        return {"p0": "", "p1": "no blob", "p2": ["no blob", "no bright blob in the image"]}
    return {
        "p0": "",
        "p1": "blob",
        "p2": ["bright blob", f"bright oval blob at the {where} of the image", "round bright spot"],
    }


def _draw(rng: np.random.Generator, negative: bool) -> tuple[np.ndarray, np.ndarray, str]:
    """One RGB image (non-square, 80-120 px a side) and its 0/255 mask, plus a word for the blob's location."""
    h, w = (int(v) for v in rng.integers(80, 121, size=2))
    if h == w:
        w += 7
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)

    background = _texture(rng, h, w) * 50.0 + rng.uniform(60, 100)
    tint = rng.uniform(0.85, 1.15, size=3).astype(np.float32)
    image = background[..., None] * tint + rng.normal(0, 8, size=(h, w, 3)).astype(np.float32)

    if rng.random() < 0.5:  # a dark distractor ellipse: "bright" is what tells the target apart
        dark = _ellipse(rng, yy, xx, h, w)
        image[dark] -= 40.0

    mask = np.zeros((h, w), dtype=np.uint8)
    where = "middle"
    if not negative:
        blob = _ellipse(rng, yy, xx, h, w)
        image[blob] += np.array([90.0, 80.0, 60.0], dtype=np.float32) * rng.uniform(0.8, 1.2)
        mask[blob] = 255
        cy, cx = np.argwhere(blob).mean(axis=0)
        vert = "top" if cy < h / 3 else "bottom" if cy > 2 * h / 3 else ""
        horiz = "left" if cx < w / 3 else "right" if cx > 2 * w / 3 else ""
        where = " ".join(p for p in (vert, horiz) if p) or "middle"
    return np.clip(image, 0, 255).astype(np.uint8), mask, where


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth noise in [0, 1]: a coarse random grid upsampled bicubically."""
    coarse = (rng.random((6, 6)) * 255).astype(np.uint8)
    smooth = Image.fromarray(coarse, "L").resize((w, h), Image.Resampling.BICUBIC)
    return np.asarray(smooth, dtype=np.float32) / 255.0


def _ellipse(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, h: int, w: int) -> np.ndarray:
    """A boolean ellipse mask with random centre, axes (12-30 % of the side) and rotation."""
    cy, cx = rng.uniform(0.25, 0.75) * h, rng.uniform(0.25, 0.75) * w
    ay, ax = rng.uniform(0.12, 0.3) * h, rng.uniform(0.12, 0.3) * w
    t = rng.uniform(0, np.pi)
    dy, dx = yy - cy, xx - cx
    u = dx * np.cos(t) + dy * np.sin(t)
    v = -dx * np.sin(t) + dy * np.cos(t)
    return (u / ax) ** 2 + (v / ay) ** 2 <= 1.0
