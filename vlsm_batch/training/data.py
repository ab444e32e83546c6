"""Data for one trial: every split decoded and resized once into a disk cache, loaded to the device once, batched
by indexing and augmented on the device.

A trial must be limited by the model's arithmetic, not by JPEG decoding. ``datasets.cache`` decodes each
(dataset, split, image size) once into memory-mappable uint8 arrays shared by every trial and array task; here a
split's arrays go to the device in one copy (images once per distinct image, masks as packed bits), a batch is an
index gather plus an on-device bit unpack, and augmentation (affine, brightness/contrast) and normalisation run on
whole batches. Evaluation splits keep their original-resolution masks (host memory-map) for the final metrics.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from ..datasets import DatasetInfo
from ..datasets.cache import SplitArrays, build_arrays, cached_split
from ..datasets.medvlsm import Sample, choose_prompt
from ..datasets.readers import SPLITS, read_samples

Tokenize = Callable[[list[str]], dict[str, Any]]
Batch = dict[str, Any]
DEVICE_SHARE = 0.4  # a split set goes to the GPU only if it needs at most this share of its free memory


_SHIFTS: dict[torch.device, Tensor] = {}


def unpack_masks(packed: Tensor, size: int) -> Tensor:
    """(B, ceil(S*S/8)) uint8 packed bits (numpy's big-endian bit order) -> (B, 1, S, S) float 0/1, on its device.

    Shifts and masks on the bytes themselves (no widening to int64 indices), then one cast to float.
    """
    shifts = _SHIFTS.get(packed.device)
    if shifts is None:
        shifts = _SHIFTS[packed.device] = torch.arange(7, -1, -1, dtype=torch.uint8, device=packed.device)
    bits = packed.unsqueeze(-1).bitwise_right_shift(shifts).bitwise_and_(1).reshape(packed.shape[0], -1)
    if bits.shape[1] != size * size:
        bits = bits[:, : size * size]
    return bits.reshape(-1, 1, size, size).float()


@dataclass
class SplitTensors:
    """A decoded split as tensors: ``images`` (n_images, 3, S, S) uint8, ``image_index`` (n,) long, ``masks``
    (n, ceil(S*S/8)) uint8 packed bits; ``arrays`` keeps the host-side original-resolution masks."""

    size: int
    images: Tensor
    image_index: Tensor
    masks: Tensor
    prompts: list[tuple[str, ...]]
    arrays: SplitArrays

    @classmethod
    def from_arrays(cls, arrays: SplitArrays, prompts: list[tuple[str, ...]]) -> SplitTensors:
        # one copy out of the memory map (np.array), so the tensors own their memory
        images = torch.from_numpy(_owned(arrays.images))
        masks = torch.from_numpy(_owned(arrays.masks))
        index = torch.from_numpy(_owned(arrays.image_index)).long()
        return cls(arrays.size, images, index, masks, prompts, arrays)

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.images, self.image_index, self.masks))

    def to(self, device: torch.device | str) -> SplitTensors:
        return SplitTensors(
            self.size,
            self.images.to(device),
            self.image_index.to(device),
            self.masks.to(device),
            self.prompts,
            self.arrays,
        )

    def pin_memory(self) -> SplitTensors:
        return SplitTensors(
            self.size,
            self.images.pin_memory(),
            self.image_index,
            self.masks.pin_memory(),
            self.prompts,
            self.arrays,
        )

    def gather(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        """uint8 images (B, 3, S, S) and float masks (B, 1, S, S) of the samples ``indices``, on this split's device."""
        # index_select, not advanced indexing: the latter is several times slower on a CPU for these row gathers
        idx = indices.to(self.masks.device)
        images = self.images.index_select(0, self.image_index.index_select(0, idx))
        return images, unpack_masks(self.masks.index_select(0, idx), self.size)

    def original_masks(self, indices: Sequence[int]) -> list[Tensor]:
        """(H, W) bool masks at the original resolution (host)."""
        return [torch.from_numpy(self.arrays.original(i)) for i in indices]


def _owned(a: Any) -> Any:
    import numpy as np

    return np.array(a, copy=True)


def decode_split(samples: Sequence[Sample], size: int, keep_original: bool, threads: int | None = None) -> SplitTensors:
    """Decode a split in memory (no disk cache): bicubic images, masks binarised at 0.5 once, then resized."""
    arrays = build_arrays(samples, size, keep_original, out=None, threads=threads)
    return SplitTensors.from_arrays(arrays, [s.prompts for s in samples])


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


def stream_seed(seed: int, epoch: int, stream: str) -> int:
    """A 63-bit seed for one random stream (data order, augmentation, model) of one epoch of a trial.

    Every epoch's randomness is a function of (trial seed, epoch) alone, so an attempt resumed from a checkpoint
    draws exactly what an uninterrupted run draws in that epoch.
    """
    digest = hashlib.blake2b(f"{seed}/{epoch}/{stream}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & (2**63 - 1)


class EpochSampler(Sampler[tuple[int, int]]):
    """Training order: a permutation per epoch from (seed, epoch), each index paired with the seed of its prompt draw.

    ``epoch`` is read when iteration starts (Lightning creates the first iterator before it calls ``set_epoch``,
    so the trainer's restored epoch counter is the reliable source); without it, ``set_epoch`` is used. The prompt
    seeds travel with the indices, so the choice of a list-valued prompt does not depend on which worker process
    collates the batch.
    """

    def __init__(self, n: int, seed: int, epoch: Callable[[], int] | None = None):
        self.n, self.seed, self.epoch_fn, self.epoch = n, int(seed), epoch, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch_fn() if self.epoch_fn is not None else self.epoch
        g = torch.Generator().manual_seed(stream_seed(self.seed, epoch, "order"))
        order = torch.randperm(self.n, generator=g).tolist()
        prompt_seeds = torch.randint(0, 2**62, (self.n,), generator=g).tolist()
        yield from zip(order, prompt_seeds)


class _Indices(Dataset):
    """Yields its keys (an index, or (index, prompt seed) in training): the collate function gathers whole batches
    from the in-memory tensors."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key: Any) -> Any:
        return key


class Collate:
    """Gathers a batch of indices: uint8 images, float masks, prompt tokens (and original masks for evaluation).

    The images and masks come from ``cache`` on its device (no per-sample work); prompts and tokens are on the host.
    """

    def __init__(self, cache: SplitTensors, tokens: PromptTokens, training: bool, with_original: bool):
        self.cache, self.tokens, self.training, self.with_original = cache, tokens, training, with_original

    def __call__(self, keys: list[Any]) -> Batch:
        # Training draws one option of a list-valued prompt per sample and epoch (seeded by the sampler, else from
        # the process's generator); evaluation takes the first.
        indices = [k[0] if isinstance(k, tuple) else int(k) for k in keys]
        rngs = [random.Random(k[1]) if isinstance(k, tuple) else None for k in keys]
        prompts = [choose_prompt(self.cache.prompts[i], self.training, r) for i, r in zip(indices, rngs)]
        idx = torch.tensor(indices)
        input_ids, attention_mask = self.tokens(prompts)
        images, masks = self.cache.gather(idx)
        batch: Batch = {
            "index": idx,
            "pixel_values": images,
            "mask": masks,
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "prompts": prompts,  # the texts, for a packed trial whose prompt length needs its own tokenisation
        }
        if self.with_original:
            batch["original_masks"] = self.cache.original_masks(indices)
        return batch


class BatchTransform:
    """On-device augmentation and normalisation of a uint8 batch (TuneVLSeg's albumentations, docs/science.md §5).

    Training: per sample with probability ``p_affine`` an affine warp (rotate ±5°, translate ±2 %, scale
    0.98-1.02; bicubic, replicate border; the mask follows with nearest neighbour, albumentations' default for
    masks, so it stays binary), then with probability
    ``p_color`` brightness/contrast ±0.1 (``x * alpha + beta * 255``, clipped to 0-255). Then (train and eval) the
    model's mean/std normalisation.

    Brightness/contrast and normalisation are both per-(sample, channel) linear maps, so they are folded into one
    scale and one shift over the whole batch; the 0-255 clip of the jittered samples becomes a clamp to the
    normalised bounds (the same thing, as normalisation is increasing). The batch is touched three times: the
    cast to float, the scale, the shift; only the affine-selected samples are resampled.
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
        pixels, mask = batch["pixel_values"], batch["mask"]
        n, dev = pixels.shape[0], pixels.device
        mean, std = self.mean.to(dev), self.std.to(dev)
        # x is this call's own float copy on the 0-255 scale (the caller's batch is never written)
        x = torch.empty(pixels.shape, dtype=torch.float32, device=dev).copy_(pixels)
        scale = (1.0 / (255.0 * std)).expand(n, -1, 1, 1).contiguous()  # (x / 255 - mean) / std = x * scale + shift
        shift = (-mean / std).expand(n, -1, 1, 1).contiguous()
        jittered = torch.zeros(0, dtype=torch.long, device=dev)
        if training:
            x, mask = self._affine(x, mask, generator)
            jittered = self._color(scale, shift, generator)
        x.mul_(scale).add_(shift)
        if jittered.numel():
            lo, hi = -mean / std, (1.0 - mean) / std  # 0 and 255 after normalisation
            x.index_copy_(0, jittered, torch.maximum(torch.minimum(x.index_select(0, jittered), hi), lo))
        return {**batch, "pixel_values": x, "mask": mask}

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
        grid = _affine_grid(theta, x.shape[-2], x.shape[-1])
        warped = F.grid_sample(x.index_select(0, sel), grid, mode="bicubic", padding_mode="border", align_corners=False)
        warped_mask = F.grid_sample(
            mask.index_select(0, sel), grid, mode="nearest", padding_mode="border", align_corners=False
        )
        x.index_copy_(0, sel, warped.clamp_(0, 255))
        # out of place: the caller's mask is not ours to change
        mask = mask.index_copy(0, sel, warped_mask)
        return x, mask

    def _color(self, scale: Tensor, shift: Tensor, generator: torch.Generator | None) -> Tensor:
        """Fold brightness/contrast of the selected samples into ``scale``/``shift`` (in place); returns them."""
        sel = self._pick(scale.shape[0], self.p_color, scale.device, generator)
        if sel.numel() == 0:
            return sel
        k, dev = sel.numel(), scale.device
        alpha = 1 + (_rand(k, dev, generator) * 2 - 1) * self.contrast
        beta = (_rand(k, dev, generator) * 2 - 1) * self.brightness * 255  # relative to the maximum value
        # (x * alpha + beta) * s + b = x * (alpha * s) + (beta * s + b)
        base = scale.index_select(0, sel)
        shift.index_copy_(0, sel, shift.index_select(0, sel) + beta.view(-1, 1, 1, 1) * base)
        scale.index_copy_(0, sel, base * alpha.view(-1, 1, 1, 1))
        return sel


def _affine_grid(theta: Tensor, h: int, w: int) -> Tensor:
    """``F.affine_grid(theta, (k, C, h, w), align_corners=False)`` by broadcasting (k x h x w multiply-adds)
    instead of a batched matrix product over every pixel, which is several times slower on a CPU."""
    dev, dt = theta.device, theta.dtype
    xs = ((torch.arange(w, device=dev, dtype=dt) * 2 + 1) / w - 1).view(1, 1, w)  # pixel centres in [-1, 1]
    ys = ((torch.arange(h, device=dev, dtype=dt) * 2 + 1) / h - 1).view(1, h, 1)
    t = theta.view(-1, 2, 3, 1, 1)
    gx = t[:, 0, 0] * xs + t[:, 0, 1] * ys + t[:, 0, 2]
    gy = t[:, 1, 0] * xs + t[:, 1, 1] * ys + t[:, 1, 2]
    return torch.stack((gx, gy), dim=-1)


def _rand(shape: int | tuple[int, ...], device: torch.device, generator: torch.Generator | None) -> Tensor:
    if generator is None:
        return torch.rand(shape, device=device)
    if generator.device.type == device.type:  # drawn where it is used: no host-device copy, no sync
        return torch.rand(shape, device=device, generator=generator)
    return torch.rand(shape, generator=generator).to(device)  # a CPU generator for a device batch (tests)


def _medvlsm(root: Path) -> DatasetInfo:
    return DatasetInfo(root.name, root.name, "medvlsm", "medical", "unknown", None)


class SegmentationData:
    """The three splits of a dataset, decoded once (disk cache) at the model's resolution, kept on ``device``.

    ``dataset`` gives the layout (default: medvlsm); ``prompt_key`` overrides its prompt key. ``use_cache=False``
    decodes in memory without writing a cache entry. ``device``: where the decoded splits live (default CPU); a CUDA
    device is used only when the splits take at most ``DEVICE_SHARE`` of its free memory, otherwise the splits
    stay in pinned host memory and each batch is copied over.
    """

    def __init__(
        self,
        root: Path,
        tokenize: Tokenize,
        image_size: int,
        image_mean: Sequence[float],
        image_std: Sequence[float],
        batch_size: int,
        num_workers: int = 0,
        prompt_key: str | None = None,
        pin_memory: bool = False,
        *,
        dataset: DatasetInfo | None = None,
        cache_root: Path | None = None,
        use_cache: bool = True,
        device: torch.device | str | None = None,
        threads: int | None = None,
    ):
        self.root, self.batch_size, self.num_workers, self.pin_memory = Path(root), batch_size, num_workers, pin_memory
        self.dataset = dataset or _medvlsm(self.root)
        self.transform = BatchTransform(image_mean, image_std)
        self.samples = {split: read_samples(self.dataset, self.root, split, prompt_key) for split in SPLITS}
        self.splits: dict[str, SplitTensors] = {}
        for split, samples in self.samples.items():
            keep = split != "train"
            if use_cache:
                arrays = cached_split(samples, image_size, keep, self.root, split, cache_root, threads)
            else:
                arrays = build_arrays(samples, image_size, keep, threads=threads)
            self.splits[split] = SplitTensors.from_arrays(arrays, [s.prompts for s in samples])
        self.device = self._place(torch.device(device) if device is not None else torch.device("cpu"))
        every_prompt = [p for cache in self.splits.values() for opts in cache.prompts for p in opts]
        self.tokens = PromptTokens(tokenize, every_prompt)

    def _place(self, device: torch.device) -> torch.device:
        """Move the splits to ``device`` once (if they fit); returns where they are."""
        if device.type == "cuda":
            needed = sum(s.nbytes for s in self.splits.values())
            free, _total = torch.cuda.mem_get_info(device)
            if needed > DEVICE_SHARE * free:
                print(
                    f"note: decoded data ({needed / 2**30:.1f} GiB) kept in pinned host memory, "
                    f"{free / 2**30:.1f} GiB free on {device}",
                    flush=True,
                )
                self.splits = {k: v.pin_memory() for k, v in self.splits.items()}
                return torch.device("cpu")
        if device.type != "cpu":
            self.splits = {k: v.to(device) for k, v in self.splits.items()}
            self.num_workers, self.pin_memory = 0, False  # device tensors: no worker processes, nothing to pin
        return device

    def __len__(self) -> int:
        return sum(len(s) for s in self.samples.values())

    def size(self, split: str) -> int:
        return len(self.samples[split])

    def train_loader(self, seed: int = 0, epoch: Callable[[], int] | None = None) -> DataLoader:
        """Training batches in an order (and prompt draws) fixed by (``seed``, epoch); ``epoch`` reads the
        trainer's epoch counter, so a resumed run continues the same sequence."""
        return self._loader(
            "train", training=True, with_original=False, sampler=EpochSampler(self.size("train"), seed, epoch)
        )

    def eval_loader(self, split: str, with_original: bool = False) -> DataLoader:
        """Validation/test batches in file order; ``with_original`` adds the original-resolution masks."""
        return self._loader(split, training=False, with_original=with_original)

    def _loader(
        self, split: str, training: bool, with_original: bool, sampler: EpochSampler | None = None
    ) -> DataLoader:
        cache = self.splits[split]
        return DataLoader(
            _Indices(len(cache)),
            batch_size=self.batch_size,
            sampler=sampler,
            # the iterator's worker base seed comes from here, not from the global generator: creating an iterator
            # must not shift the model's random stream (Lightning creates the first one before the epoch starts)
            generator=torch.Generator().manual_seed(0),
            collate_fn=Collate(cache, self.tokens, training, with_original),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
        )
