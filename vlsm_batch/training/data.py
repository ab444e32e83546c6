"""Data for one trial: decode and resize every image once, then batch from memory and augment on the device.

A trial must be limited by the model's arithmetic, not by JPEG decoding, so each split is decoded once into uint8
tensors at model resolution; augmentation (affine, brightness/contrast) and normalisation run on whole batches
after they reach the device. Test and validation keep their original-resolution masks for the final metrics.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..datasets.medvlsm import Sample, choose_prompt, read_split

Tokenize = Callable[[list[str]], dict[str, Any]]
Batch = dict[str, Any]


@dataclass(frozen=True)
class PackedMask:
    """A binary mask at its original resolution, one bit per pixel: evaluation needs them for whole splits,
    and some datasets' masks are large (CheXlocalize's are about 2,500 px a side, 6 MB each as bytes)."""

    shape: tuple[int, int]
    bits: np.ndarray

    @classmethod
    def pack(cls, mask: np.ndarray) -> PackedMask:
        return cls((int(mask.shape[0]), int(mask.shape[1])), np.packbits(mask.ravel()))

    def unpack(self) -> Tensor:
        """(H, W) bool."""
        flat = np.unpackbits(self.bits, count=self.shape[0] * self.shape[1])
        return torch.from_numpy(flat.reshape(self.shape).astype(bool))


@dataclass
class SplitCache:
    """A decoded split: images (N, 3, S, S) uint8, masks (N, 1, S, S) uint8 0/1 at model resolution."""

    images: Tensor
    masks: Tensor
    prompts: list[tuple[str, ...]]
    original_masks: list[PackedMask] | None  # per sample, kept for evaluation splits


def decode_split(samples: Sequence[Sample], size: int, keep_original: bool, threads: int | None = None) -> SplitCache:
    """Decode and resize (bicubic) every image once; masks are binarised at 0.5 once, then resized.

    Masks are resized bilinearly and thresholded at 0.5 again (a smoother edge than nearest neighbour).
    """
    threads = threads or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(threads) as pool:  # PIL releases the GIL while decoding and resizing
        decoded = list(pool.map(lambda s: _decode(s, size, keep_original), samples))
    n = len(samples)
    images = torch.empty((n, 3, size, size), dtype=torch.uint8)
    masks = torch.empty((n, 1, size, size), dtype=torch.uint8)
    originals: list[PackedMask] = []
    for i, (img, msk, orig) in enumerate(decoded):
        images[i] = torch.from_numpy(img).permute(2, 0, 1)
        masks[i, 0] = torch.from_numpy(msk)
        if orig is not None:
            originals.append(orig)
    return SplitCache(images, masks, [s.prompts for s in samples], originals if keep_original else None)


def _decode(sample: Sample, size: int, keep_original: bool) -> tuple[np.ndarray, np.ndarray, PackedMask | None]:
    with Image.open(sample.image) as im:
        image = np.array(im.convert("RGB").resize((size, size), Image.Resampling.BICUBIC), dtype=np.uint8)
    with Image.open(sample.mask) as m:
        binary = np.asarray(m.convert("L")) > 127  # value / 255 > 0.5
    small = Image.fromarray(binary.astype(np.uint8) * 255).resize((size, size), Image.Resampling.BILINEAR)
    mask = (np.asarray(small) > 127).astype(np.uint8)
    return image, mask, (PackedMask.pack(binary) if keep_original else None)


class PromptTokens:
    """Every distinct prompt tokenised once; batches are padded only to their longest prompt.

    Relies on right padding (CLIP's): the columns past the longest real prompt of a batch are dropped.
    """

    def __init__(self, tokenize: Tokenize, prompts: Sequence[str]):
        unique = sorted(set(prompts))
        out = tokenize(unique)
        self.input_ids = torch.as_tensor(out["input_ids"]).long()
        self.attention_mask = torch.as_tensor(out["attention_mask"]).long()
        self.row = {p: i for i, p in enumerate(unique)}
        lengths = self.attention_mask.sum(1)
        right_padded = bool(
            (self.attention_mask == (torch.arange(self.attention_mask.shape[1]) < lengths[:, None])).all()
        )
        self.lengths = lengths if right_padded else torch.full_like(lengths, self.attention_mask.shape[1])

    def __call__(self, prompts: Sequence[str]) -> tuple[Tensor, Tensor]:
        rows = torch.tensor([self.row[p] for p in prompts])
        width = int(self.lengths[rows].max())
        return self.input_ids[rows, :width], self.attention_mask[rows, :width]


class _Indices(Dataset):
    """Yields indices only: the collate function gathers whole batches from the in-memory tensors."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


class Collate:
    """Gathers a batch of indices: uint8 images, float masks, prompt tokens (and original masks for evaluation)."""

    def __init__(self, cache: SplitCache, tokens: PromptTokens, training: bool, with_original: bool):
        self.cache, self.tokens, self.training, self.with_original = cache, tokens, training, with_original

    def __call__(self, indices: list[int]) -> Batch:
        idx = torch.tensor(indices)
        # Training draws one option of a list-valued prompt per sample and epoch; evaluation takes the first.
        prompts = [choose_prompt(self.cache.prompts[i], self.training) for i in indices]
        input_ids, attention_mask = self.tokens(prompts)
        batch: Batch = {
            "index": idx,
            "pixel_values": self.cache.images[idx],
            "mask": self.cache.masks[idx].float(),
            "input_ids": input_ids,
            "attention_mask": attention_mask,
        }
        if self.with_original:
            assert self.cache.original_masks is not None
            batch["original_masks"] = [self.cache.original_masks[i].unpack() for i in indices]
        return batch


class BatchTransform:
    """On-device augmentation and normalisation of a uint8 batch (TuneVLSeg's albumentations pipeline, §5).

    Training: per sample with probability ``p_affine`` an affine warp (rotate ±5°, translate ±2 %, scale
    0.98-1.02; bicubic, replicate border; the mask follows bilinearly, re-binarised), then with probability
    ``p_color`` brightness/contrast ±0.1. Then (train and eval) the model's mean/std normalisation.
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        p_affine: float = 0.2,
        p_color: float = 0.2,
        rotate_deg: float = 5.0,
        translate: float = 0.02,
        scale: tuple[float, float] = (0.98, 1.02),
        brightness: float = 0.1,
        contrast: float = 0.1,
    ):
        self.mean = torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.p_affine, self.p_color = p_affine, p_color
        self.rotate_deg, self.translate, self.scale = rotate_deg, translate, scale
        self.brightness, self.contrast = brightness, contrast

    def __call__(self, batch: Batch, training: bool, generator: torch.Generator | None = None) -> Batch:
        x, mask = batch["pixel_values"].float() / 255.0, batch["mask"]
        if training:
            x, mask = self._affine(x, mask, generator)
            x = self._color(x, generator)
        mean, std = self.mean.to(x.device), self.std.to(x.device)
        return {**batch, "pixel_values": (x - mean) / std, "mask": mask}

    def _pick(self, n: int, p: float, device: torch.device, generator: torch.Generator | None) -> Tensor:
        if p <= 0:
            return torch.zeros(0, dtype=torch.long, device=device)
        return torch.nonzero(_rand(n, device, generator) < p).flatten()

    def _affine(self, x: Tensor, mask: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        sel = self._pick(x.shape[0], self.p_affine, x.device, generator)
        if sel.numel() == 0:
            return x, mask
        k, dev = sel.numel(), x.device
        angle = (_rand(k, dev, generator) * 2 - 1) * math.radians(self.rotate_deg)
        s = self.scale[0] + _rand(k, dev, generator) * (self.scale[1] - self.scale[0])
        # normalised coordinates span 2, so a shift of 2 % of the side is 0.04
        t = (_rand((k, 2), dev, generator) * 2 - 1) * 2 * self.translate
        cos, sin = torch.cos(angle) * s, torch.sin(angle) * s
        forward = torch.zeros(k, 3, 3, device=dev)
        forward[:, 0, 0], forward[:, 0, 1], forward[:, 0, 2] = cos, -sin, t[:, 0]
        forward[:, 1, 0], forward[:, 1, 1], forward[:, 1, 2] = sin, cos, t[:, 1]
        forward[:, 2, 2] = 1
        theta = torch.linalg.inv(forward)[:, :2]  # grid_sample maps output pixels back to input pixels
        grid = F.affine_grid(theta, list(x[sel].shape), align_corners=False)
        warped = F.grid_sample(x[sel], grid, mode="bicubic", padding_mode="border", align_corners=False)
        warped_mask = F.grid_sample(mask[sel], grid, mode="bilinear", padding_mode="border", align_corners=False)
        x, mask = x.clone(), mask.clone()
        x[sel] = warped.clamp(0, 1)
        mask[sel] = (warped_mask > 0.5).to(mask.dtype)
        return x, mask

    def _color(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        sel = self._pick(x.shape[0], self.p_color, x.device, generator)
        if sel.numel() == 0:
            return x
        k, dev = sel.numel(), x.device
        alpha = 1 + (_rand(k, dev, generator) * 2 - 1) * self.contrast
        beta = (_rand(k, dev, generator) * 2 - 1) * self.brightness  # relative to the maximum value (1.0)
        x = x.clone()
        x[sel] = (x[sel] * alpha.view(-1, 1, 1, 1) + beta.view(-1, 1, 1, 1)).clamp(0, 1)
        return x


def _rand(shape: int | tuple[int, ...], device: torch.device, generator: torch.Generator | None) -> Tensor:
    if generator is not None:  # a CPU generator for reproducible tests; moved afterwards
        return torch.rand(shape, generator=generator).to(device)
    return torch.rand(shape, device=device)


class SegmentationData:
    """The three splits of a medvlsm-layout dataset, decoded once at the model's resolution."""

    def __init__(
        self,
        root: Path,
        tokenize: Tokenize,
        image_size: int,
        image_mean: Sequence[float],
        image_std: Sequence[float],
        batch_size: int,
        num_workers: int = 0,
        prompt_key: str = "p1",
        pin_memory: bool = False,
    ):
        self.root, self.batch_size, self.num_workers, self.pin_memory = Path(root), batch_size, num_workers, pin_memory
        self.transform = BatchTransform(image_mean, image_std)
        self.samples = {split: read_split(self.root, split, prompt_key) for split in ("train", "val", "test")}
        self.splits = {
            split: decode_split(samples, image_size, keep_original=split != "train")
            for split, samples in self.samples.items()
        }
        every_prompt = [p for cache in self.splits.values() for opts in cache.prompts for p in opts]
        self.tokens = PromptTokens(tokenize, every_prompt)

    def __len__(self) -> int:
        return sum(len(s) for s in self.samples.values())

    def size(self, split: str) -> int:
        return len(self.samples[split])

    def train_loader(self) -> DataLoader:
        return self._loader("train", training=True, with_original=False)

    def eval_loader(self, split: str, with_original: bool = False) -> DataLoader:
        """Validation/test batches in file order; ``with_original`` adds the original-resolution masks."""
        return self._loader(split, training=False, with_original=with_original)

    def _loader(self, split: str, training: bool, with_original: bool) -> DataLoader:
        cache = self.splits[split]
        return DataLoader(
            _Indices(len(cache.prompts)),
            batch_size=self.batch_size,
            shuffle=training,
            collate_fn=Collate(cache, self.tokens, training, with_original),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
        )
