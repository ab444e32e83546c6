"""Images/s of the cached, batch-augmented data pipeline against a conventional per-sample DataLoader.

Both pipelines deliver the same thing for training at 352 px: normalised float images (B, 3, 352, 352) and binary
float masks (B, 1, 352, 352), with TuneVLSeg's augmentations (affine rotate ±5°, translate ±2 %, scale 0.98-1.02
with p 0.2; brightness/contrast ±0.1 with p 0.2) on ``--device``. One run, on one generated medvlsm-layout dataset
per ``--source-sizes`` entry (JPEG images, PNG masks):

- conventional: a ``Dataset`` whose ``__getitem__`` decodes the JPEG and the mask, resizes them to 352 px and
  augments that one sample (the same ``BatchTransform`` code, on a batch of one), in ``--workers`` processes; the
  batch is then copied to the device (from pinned memory on a GPU);
- cached: ``SegmentationData`` (decoded once into the disk cache, memory-mapped, loaded once onto the device),
  batches gathered by index, augmented and normalised per batch on the device, as a trial does.

The cache build (cold, decoding every image once) is timed separately. ``warp ms/img`` is the affine warp alone
(bicubic image, nearest mask) per image on a whole batch; ``warp-only bound`` is the ratio the cached pipeline could
not exceed even if everything but the warps of its 20 % affine-selected images were free: the warp is the same
kernel in both pipelines, so on a CPU it caps the ratio (on a GPU it costs next to nothing).

    .venv/bin/python benchmarks/data_pipeline.py [--images 256] [--source-sizes 560x510 1500x1000] [--ablate-affine]
        [--workers 2] [--device cpu|cuda] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from vlsm_batch.datasets import DatasetInfo
from vlsm_batch.datasets.cache import cached_split, decode_image, decode_mask
from vlsm_batch.datasets.medvlsm import Sample
from vlsm_batch.datasets.readers import read_samples
from vlsm_batch.training.data import BatchTransform, SegmentationData

SIZE = 352
MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)  # CLIP's


def generate(root: Path, n: int, width: int = 560, height: int = 510, seed: int = 0) -> None:
    """medvlsm layout; JPEG images of width x height ±10 % (default Kvasir-like), an ellipse mask each as PNG."""
    rng = np.random.default_rng(seed)
    for sub in ("images", "masks", "anns"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(n):
        h, w = int(height * rng.uniform(0.9, 1.1)), int(width * rng.uniform(0.9, 1.1))
        yy, xx = np.mgrid[0:h, 0:w]
        cy, cx, ay, ax = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w, 0.2 * h, 0.15 * w
        mask = (((yy - cy) / ay) ** 2 + ((xx - cx) / ax) ** 2 <= 1).astype(np.uint8) * 255
        coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        image = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC)).astype(np.int16)
        image = np.clip(image + rng.normal(0, 12, image.shape) + (mask[..., None] > 0) * 60, 0, 255).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"{i:05d}.jpg", quality=90)
        Image.fromarray(mask).save(root / "masks" / f"{i:05d}.png")
        entries.append({"img_name": f"{i:05d}.jpg", "mask_name": f"{i:05d}.png", "prompts": {"p0": "", "p1": "polyp"}})
    for split in ("train", "val", "test"):
        (root / "anns" / f"{split}.json").write_text(json.dumps(entries if split == "train" else entries[:8]))


class PerSample(Dataset):
    """The conventional pipeline: decode, resize and augment one sample per ``__getitem__``."""

    def __init__(self, samples: list[Sample], transform: BatchTransform):
        self.samples, self.transform = samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        s = self.samples[i]
        image = torch.from_numpy(decode_image(s.image, SIZE).copy())[None]
        mask = torch.from_numpy(decode_mask(s.mask, SIZE)[1])[None, None].float()
        out = self.transform({"pixel_values": image, "mask": mask}, training=True)
        return {"pixel_values": out["pixel_values"][0], "mask": out["mask"][0]}


def tokenize(prompts: list[str]) -> dict[str, torch.Tensor]:
    ids = torch.ones(len(prompts), 8, dtype=torch.long)
    return {"input_ids": ids, "attention_mask": ids}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def warp_ms_per_image(loader: DataLoader, device: torch.device, repeats: int = 5) -> float:
    """Median time of the affine warp alone (bicubic image + nearest mask) per image, on a whole batch."""
    batch = next(iter(loader))
    warp_all = BatchTransform(MEAN, STD, p_affine=1.0)
    x, mask = batch["pixel_values"].to(device).float(), batch["mask"].to(device)
    times = []
    for _ in range(repeats + 1):
        own = x.clone()
        _sync(device)
        t0 = time.perf_counter()
        warp_all._affine(own, mask, None)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return 1000 * sorted(times[1:])[repeats // 2] / x.shape[0]


def images_per_s(
    batches: Any, transform: BatchTransform | None, min_images: int, device: torch.device
) -> tuple[float, int]:
    """Consume batches until ``min_images``: each moved to ``device`` (a no-op for the cached pipeline, whose
    batches are there already), then ``transform`` applied when given; (images/s, images)."""
    seen = 0
    _sync(device)
    start = time.perf_counter()
    while seen < min_images:
        for batch in batches():
            batch = {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            if transform is not None:
                batch = transform(batch, training=True)
            assert batch["pixel_values"].dtype == torch.float32 and batch["mask"].shape[1] == 1
            seen += batch["pixel_values"].shape[0]
            if seen >= min_images:
                break
    _sync(device)
    return seen / (time.perf_counter() - start), seen


def measure(work: Path, source: tuple[int, int], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Both pipelines on one generated dataset: with the reference augmentations and, with ``--ablate-affine``,
    without the affine warp (the one augmentation whose per-image cost is the same kernel in both)."""
    root = work / f"bench_{source[0]}x{source[1]}"
    t0 = time.perf_counter()
    if not (root / "anns" / "test.json").is_file():
        generate(root, args.images, *source)
    gen_s = time.perf_counter() - t0
    info = DatasetInfo("bench", "bench", "medvlsm", "medical", "synthetic", None)
    samples = read_samples(info, root, "train")
    cache_root = work / f"cache_{source[0]}x{source[1]}"
    shutil.rmtree(cache_root, ignore_errors=True)

    t0 = time.perf_counter()
    cached_split(samples, SIZE, False, root, "train", cache_root=cache_root)
    build_s = time.perf_counter() - t0

    t0 = time.perf_counter()  # the rest of the splits are built here; train is loaded from the cache
    device = torch.device(args.device)
    data = SegmentationData(
        root, tokenize, SIZE, MEAN, STD, args.batch_size, dataset=info, cache_root=cache_root, device=device
    )
    load_s = time.perf_counter() - t0
    loader = data.train_loader()
    warp_ms = warp_ms_per_image(loader, device)
    rows = []
    for p_affine in (0.2, 0.0) if args.ablate_affine else (0.2,):
        transform = BatchTransform(MEAN, STD, p_affine=p_affine)
        images_per_s(loader.__iter__, transform, args.batch_size * 2, device)  # warm-up
        cached, cached_n = images_per_s(loader.__iter__, transform, args.epochs * len(samples), device)
        conventional_loader = DataLoader(
            PerSample(samples, transform),
            batch_size=args.batch_size,
            shuffle=True,
            num_workers=args.workers,
            persistent_workers=False,
            pin_memory=device.type == "cuda",
        )
        conventional, conv_n = images_per_s(conventional_loader.__iter__, None, len(samples), device)
        rows.append(
            {
                "source_size": f"{source[0]}x{source[1]}",
                "augmentation": "reference" if p_affine else "no affine",
                "images": len(samples),
                "generate_s": round(gen_s, 2),
                "cache_build_s": round(build_s, 2),
                "cache_build_images_per_s": round(len(samples) / build_s, 1),
                "cached_load_s": round(load_s, 2),
                "conventional_images_per_s": round(conventional, 1),
                "conventional_images_timed": conv_n,
                "cached_images_per_s": round(cached, 1),
                "cached_images_timed": cached_n,
                "speedup": round(cached / conventional, 1),
                "warp_ms_per_image": round(warp_ms, 2),
                # even if the cached pipeline did nothing but the warps of its p_affine share of the images:
                "warp_only_bound_speedup": round(1000 / (0.2 * warp_ms) / conventional, 1) if p_affine else None,
            }
        )
        print(_line(rows[-1]), flush=True)
    return rows


HEADER = (
    f"{'source':>10} {'augmentation':>12} {'cache build s':>13} {'conventional img/s':>18} {'cached img/s':>12} "
    f"{'ratio':>6} {'warp ms/img':>11} {'warp-only bound':>15}"
)


def _line(r: dict[str, Any]) -> str:
    bound = f"{r['warp_only_bound_speedup']:.1f}x" if r["warp_only_bound_speedup"] else "-"
    return (
        f"{r['source_size']:>10} {r['augmentation']:>12} {r['cache_build_s']:>13.2f} "
        f"{r['conventional_images_per_s']:>18.1f} {r['cached_images_per_s']:>12.1f} {r['speedup']:>5.1f}x "
        f"{r['warp_ms_per_image']:>11.2f} {bound:>15}"
    )


def _size(text: str) -> tuple[int, int]:
    w, _, h = text.lower().partition("x")
    try:
        return int(w), int(h)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH such as 560x510, got {text!r}") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256, help="training images to generate")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="conventional loader")
    parser.add_argument("--epochs", type=int, default=3, help="epochs timed for the cached pipeline")
    parser.add_argument(
        "--source-sizes",
        type=_size,
        nargs="+",
        default=[(560, 510)],
        metavar="WxH",
        help="generated image sizes before resizing to 352, one dataset each (default 560x510, Kvasir-like; "
        "ISIC / CheXlocalize / Cityscapes are 1000-3000 px wide: try 1500x1000)",
    )
    parser.add_argument("--ablate-affine", action="store_true", help="also time both pipelines without the affine warp")
    parser.add_argument(
        "--device",
        default="cpu",
        help="where the cached pipeline keeps and augments the data, and where both deliver batches (cpu, cuda)",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="where to generate (default: a temp folder)")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args()
    torch.manual_seed(0)

    work = args.workdir or Path(tempfile.mkdtemp(prefix="vlsm-bench-"))
    try:
        print(
            f"{args.images} images per dataset, {SIZE} px, batch {args.batch_size}, device {args.device}, "
            f"{torch.get_num_threads()} threads (cached), {args.workers} workers (conventional)"
        )
        print(HEADER)
        print("-" * len(HEADER))
        rows = [row for source in args.source_sizes for row in measure(work, source, args)]
        if args.json:
            meta = {"image_size": SIZE, "batch_size": args.batch_size, "threads": torch.get_num_threads()}
            meta["device"] = args.device
            args.json.write_text(json.dumps({**meta, "conventional_workers": args.workers, "rows": rows}, indent=2))
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
