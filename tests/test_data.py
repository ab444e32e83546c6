"""Synthetic dataset generation, the medvlsm reader, decoding/tokenising/batching and on-device augmentation."""

from __future__ import annotations

import hashlib
import json
import random
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vlsm_batch.datasets import get_dataset
from vlsm_batch.datasets import synthetic as synthetic_mod
from vlsm_batch.datasets.medvlsm import DatasetLayoutError, choose_prompt, read_split
from vlsm_batch.datasets.synthetic import ensure_synthetic
from vlsm_batch.training.data import BatchTransform, Collate, PromptTokens, SegmentationData, decode_split

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def fixed_tokenize(prompts: list[str]) -> dict[str, torch.Tensor]:
    """A stand-in tokenizer: one id per character, "." appended, right-padded to a fixed 64 (as CLIP pads to 77)."""
    ids = torch.zeros(len(prompts), 64, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        toks = [1] + [3 + ord(c) % 60 for c in p + "."] + [2]
        ids[i, : len(toks)] = torch.tensor(toks)
        mask[i, : len(toks)] = 1
    return {"input_ids": ids, "attention_mask": mask}


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_synthetic(tmp_path_factory.mktemp("data"))


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


# -- synthetic generation -------------------------------------------------------------------------------------


def test_synthetic_layout_and_counts(synth: Path) -> None:
    assert synth.name == get_dataset("synthetic").folder
    counts = []
    sizes = set()
    negatives = 0
    for split in ("train", "val", "test"):
        entries = json.loads((synth / "anns" / f"{split}.json").read_text())
        counts.append(len(entries))
        for e in entries:
            image = Image.open(synth / "images" / e["img_name"])
            mask = np.asarray(Image.open(synth / "masks" / e["mask_name"]))
            assert image.mode == "RGB" and image.size[0] != image.size[1]
            assert min(image.size) >= 80 and max(image.size) <= 128
            assert mask.shape == image.size[::-1] and set(np.unique(mask)) <= {0, 255}
            sizes.add(image.size)
            p = e["prompts"]
            assert p["p0"] == "" and isinstance(p["p1"], str) and isinstance(p["p2"], list) and p["p2"]
            if p["p1"].startswith("no "):
                negatives += 1
                assert not mask.any()
            else:
                assert mask.any()
    assert tuple(counts) == get_dataset("synthetic").split_counts == (48, 16, 16)
    assert len(sizes) > 20  # varying sizes: original resolution matters
    assert 4 <= negatives <= 16


def test_synthetic_is_deterministic(synth: Path, tmp_path: Path) -> None:
    again = ensure_synthetic(tmp_path)
    assert _digest(again) == _digest(synth)
    mtime = (again / "anns" / "test.json").stat().st_mtime_ns
    assert ensure_synthetic(tmp_path) == again  # present: not regenerated
    assert (again / "anns" / "test.json").stat().st_mtime_ns == mtime


def test_synthetic_concurrent_callers_end_with_one_dataset(tmp_path: Path) -> None:
    start = threading.Barrier(3)
    results: list[Path] = []
    errors: list[BaseException] = []

    def call() -> None:
        start.wait()
        try:
            results.append(ensure_synthetic(tmp_path))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(results)) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["synthetic"]  # no temporary folders left
    assert len(read_split(results[0], "test")) == 16


def test_synthetic_crash_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(out: Path) -> None:
        (out / "images").mkdir()
        raise RuntimeError("disk full")

    monkeypatch.setattr(synthetic_mod, "generate", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        ensure_synthetic(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_synthetic_refuses_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "synthetic" / "images").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="not a dataset vlsm-batch generated"):
        ensure_synthetic(tmp_path)


# -- medvlsm reader -------------------------------------------------------------------------------------------


def test_reader_string_list_and_negated_prompts(synth: Path) -> None:
    train = read_split(synth, "train")
    assert len(train) == 48 and all(s.image.is_file() and s.mask.is_file() for s in train)
    assert {s.prompts for s in train} == {("blob",), ("no blob",)}
    listed = read_split(synth, "train", prompt_key="p2")
    sample = next(s for s in listed if len(s.prompts) == 3)
    assert sample.prompt(training=False) == sample.prompts[0]  # evaluation: first option, always
    drawn = {sample.prompt(training=True, rng=random.Random(i)) for i in range(40)}
    assert drawn == set(sample.prompts)
    assert choose_prompt(("only",), training=True) == "only"


def test_reader_errors_name_the_missing_path(synth: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError, match=r"dataset folder not found.*expected the medvlsm layout"):
        read_split(tmp_path / "nowhere", "train")
    (tmp_path / "ds" / "anns").mkdir(parents=True)
    with pytest.raises(DatasetLayoutError, match=r"annotation file not found: .*anns/val\.json"):
        read_split(tmp_path / "ds", "val")
    entries = [{"img_name": "a.png", "mask_name": "a_mask.png", "prompts": {"p0": "", "p1": "polyp"}}]
    (tmp_path / "ds" / "anns" / "val.json").write_text(json.dumps(entries))
    with pytest.raises(DatasetLayoutError, match=r"2 file\(s\) named in .*val\.json are missing:\n.*images/a\.png"):
        read_split(tmp_path / "ds", "val")
    with pytest.raises(DatasetLayoutError, match=r"no prompt 'p3'; it has \['p0', 'p1'\]"):
        read_split(tmp_path / "ds", "val", prompt_key="p3")
    assert issubclass(DatasetLayoutError, FileNotFoundError)


# -- decoding, tokens, batches --------------------------------------------------------------------------------


def test_decode_split_binarises_soft_masks_once(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "anns").mkdir()
    Image.fromarray(np.full((30, 50, 3), 200, np.uint8)).save(tmp_path / "images" / "x.png")
    soft = np.zeros((30, 50), np.uint8)
    soft[:, :20] = 127  # JPEG-like soft values: 127/255 < 0.5 is background
    soft[:, 20:] = 128  # 128/255 > 0.5 is foreground
    Image.fromarray(soft).save(tmp_path / "masks" / "x.png")
    ann = [{"img_name": "x.png", "mask_name": "x.png", "prompts": {"p1": "thing"}}]
    (tmp_path / "anns" / "test.json").write_text(json.dumps(ann))

    cache = decode_split(read_split(tmp_path, "test"), size=16, keep_original=True)
    assert cache.images.shape == (1, 3, 16, 16) and cache.images.dtype == torch.uint8
    images, masks = cache.gather(torch.tensor([0]))
    assert images.shape == (1, 3, 16, 16) and (images == 200).all()
    assert masks.shape == (1, 1, 16, 16) and set(masks.unique().tolist()) == {0, 1}
    assert not masks[0, 0, :, :6].any() and masks[0, 0, :, 7:].all()
    orig = cache.original_masks([0])[0]
    assert orig.shape == (30, 50) and orig.dtype == torch.bool
    assert not orig[:, :20].any() and orig[:, 20:].all()


def test_prompt_tokens_pad_to_longest_in_batch() -> None:
    tokens = PromptTokens(fixed_tokenize, ["blob", "no blob", "a much longer prompt"])
    ids, mask = tokens(["blob", "no blob"])
    assert ids.shape == mask.shape == (2, len("no blob.") + 2)
    assert mask[0].tolist() == [1] * 7 + [0, 0, 0]
    ids, _ = tokens(["blob"])
    assert ids.shape == (1, 7) and ids[0, -1].item() == 2


def test_loaders_batch_from_memory(synth: Path, tmp_path: Path) -> None:
    data = SegmentationData(synth, fixed_tokenize, 32, MEAN, STD, batch_size=8, prompt_key="p2", cache_root=tmp_path)
    assert (data.size("train"), data.size("val"), data.size("test")) == (48, 16, 16)
    batch = next(iter(data.eval_loader("test", with_original=True)))
    assert batch["pixel_values"].shape == (8, 3, 32, 32) and batch["pixel_values"].dtype == torch.uint8
    assert batch["mask"].shape == (8, 1, 32, 32) and batch["mask"].dtype == torch.float32
    assert batch["input_ids"].shape == batch["attention_mask"].shape
    assert [tuple(m.shape) for m in batch["original_masks"]] == [
        Image.open(s.mask).size[::-1] for s in data.samples["test"][:8]
    ]
    assert batch["index"].tolist() == list(range(8))  # evaluation keeps file order
    # evaluation always tokenises the first option; training draws among them
    first = Collate(data.splits["train"], data.tokens, training=False, with_original=False)([0, 0, 0])
    assert (first["input_ids"] == first["input_ids"][0]).all()
    train = Collate(data.splits["train"], data.tokens, training=True, with_original=False)
    random.seed(0)
    lengths = {int(train([0])["attention_mask"].sum()) for _ in range(30)}
    assert len(lengths) == 3


# -- augmentation ---------------------------------------------------------------------------------------------


def _batch(n: int = 6, size: int = 24) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(n, 1, size, size)
    mask[:, :, 6:18, 4:14] = 1
    return {
        "pixel_values": torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8),
        "mask": mask,
        "index": torch.arange(n),
    }


def test_eval_transform_normalises_only() -> None:
    batch = _batch()
    out = BatchTransform(MEAN, STD)(dict(batch), training=False)
    expected = (batch["pixel_values"].float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(
        1, 3, 1, 1
    )
    torch.testing.assert_close(out["pixel_values"], expected)
    assert out["mask"] is batch["mask"]


def test_augmentation_with_p0_is_identity() -> None:
    batch = _batch()
    plain = BatchTransform(MEAN, STD)(dict(batch), training=False)
    out = BatchTransform(MEAN, STD, p_affine=0, p_color=0)(dict(batch), training=True)
    torch.testing.assert_close(out["pixel_values"], plain["pixel_values"])
    torch.testing.assert_close(out["mask"], batch["mask"])


def test_augmentation_keeps_shapes_dtypes_and_binary_masks() -> None:
    batch = _batch()
    g = torch.Generator().manual_seed(1)
    out = BatchTransform(MEAN, STD, p_affine=1, p_color=1)(dict(batch), training=True, generator=g)
    assert out["pixel_values"].shape == (6, 3, 24, 24) and out["pixel_values"].dtype == torch.float32
    assert out["mask"].shape == (6, 1, 24, 24) and out["mask"].dtype == torch.float32
    assert set(out["mask"].unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(out["mask"], batch["mask"])  # something moved
    lo = ((0 - torch.tensor(MEAN)) / torch.tensor(STD)).min()
    hi = ((1 - torch.tensor(MEAN)) / torch.tensor(STD)).max()
    assert out["pixel_values"].min() >= lo - 1e-5 and out["pixel_values"].max() <= hi + 1e-5
    # small warps: the mask area changes by a few percent at most
    area = batch["mask"].sum((1, 2, 3))
    assert ((out["mask"].sum((1, 2, 3)) - area).abs() / area).max() < 0.2


def test_zero_magnitude_affine_is_exact_identity() -> None:
    batch = _batch()
    t = BatchTransform(MEAN, STD, p_affine=1, p_color=0, rotate_deg=0, translate=0, scale=(1.0, 1.0))
    out = t(dict(batch), training=True)
    plain = BatchTransform(MEAN, STD)(dict(batch), training=False)
    torch.testing.assert_close(out["pixel_values"], plain["pixel_values"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out["mask"], batch["mask"])


def test_affine_grid_matches_torch() -> None:
    from vlsm_batch.training.data import _affine_grid

    theta = torch.tensor([[[0.99, -0.08, 0.03], [0.08, 1.01, -0.02]], [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    expected = torch.nn.functional.affine_grid(theta, [2, 3, 7, 9], align_corners=False)
    torch.testing.assert_close(_affine_grid(theta, 7, 9), expected)


def test_brightness_contrast_is_a_clipped_linear_map_per_sample() -> None:
    """The jitter folded into the normalisation still means clip(x * alpha + beta, 0, 255) per sample."""
    batch = _batch(n=8)
    before = batch["pixel_values"].clone()
    g = torch.Generator().manual_seed(3)
    out = BatchTransform(MEAN, STD, p_affine=0, p_color=1)(dict(batch), training=True, generator=g)
    assert torch.equal(batch["pixel_values"], before)  # the caller's batch is not written
    y = (out["pixel_values"] * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)) * 255
    x = before.float()
    assert y.min() >= -1e-3 and y.max() <= 255 + 1e-3
    for i in range(x.shape[0]):
        inside = (y[i] > 0.5) & (y[i] < 254.5)
        a = torch.stack((x[i][inside], torch.ones(int(inside.sum()))), dim=1)
        alpha, beta = torch.linalg.lstsq(a, y[i][inside].unsqueeze(1)).solution.flatten().tolist()
        assert 0.9 - 1e-4 <= alpha <= 1.1 + 1e-4 and abs(beta) <= 25.5 + 1e-2
        expected = (x[i] * alpha + beta).clamp(0, 255)
        torch.testing.assert_close(y[i], expected, atol=2e-3, rtol=0)


def test_epoch_sampler_is_a_function_of_seed_and_epoch() -> None:
    from vlsm_batch.training.data import EpochSampler

    epoch = {"now": 0}
    sampler = EpochSampler(50, seed=7, epoch=lambda: epoch["now"])
    first = list(sampler)
    assert sorted(i for i, _ in first) == list(range(50)) and len(sampler) == 50
    assert list(sampler) == first  # read again (a resumed attempt): the same order and prompt seeds
    epoch["now"] = 1
    assert list(sampler) != first
    assert list(EpochSampler(50, seed=8, epoch=lambda: 0)) != first
    fallback = EpochSampler(50, seed=7)
    fallback.set_epoch(1)
    assert list(fallback) == list(sampler)
