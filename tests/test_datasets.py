"""Every on-disk layout, generated tiny: registry, readers, prepare (VOC, Cityscapes), verify, the disk cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_spec
from PIL import Image

from vlsm_batch.cli import main
from vlsm_batch.datasets import DATASETS, DatasetInfo, get_dataset
from vlsm_batch.datasets import cache as cache_mod
from vlsm_batch.datasets.cache import build_arrays, cached_split, default_cache_root
from vlsm_batch.datasets.medvlsm import DatasetLayoutError
from vlsm_batch.datasets.prepare import CITYSCAPES_CLASSES, VOC_CLASSES, prepare
from vlsm_batch.datasets.readers import chexlocalize_pathology, read_samples
from vlsm_batch.datasets.verify import ERROR, WARNING, verify_dataset
from vlsm_batch.errors import SubmissionError
from vlsm_batch.jobs.submit import preflight_data
from vlsm_batch.training.data import SegmentationData, unpack_masks

RNG = np.random.default_rng(0)
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def tokenize(prompts: list[str]) -> dict[str, torch.Tensor]:
    ids = torch.zeros(len(prompts), 80, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        toks = [1] + [3 + ord(c) % 60 for c in p] + [2]
        ids[i, : len(toks)], mask[i, : len(toks)] = torch.tensor(toks), 1
    return {"input_ids": ids, "attention_mask": mask}


def _image(path: Path, h: int, w: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


def _mask(path: Path, h: int, w: int, empty: bool = False, quality: int | None = None) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    m = np.zeros((h, w), np.uint8)
    if not empty:
        m[h // 4 : 3 * h // 4, w // 3 : 2 * w // 3] = 255
    if quality is not None:
        Image.fromarray(m).save(path, quality=quality)  # JPEG: soft values around the edges
    else:
        Image.fromarray(m).save(path)
    return m


def _anns(root: Path, split: str, entries: list[dict]) -> None:
    (root / "anns").mkdir(parents=True, exist_ok=True)
    (root / "anns" / f"{split}.json").write_text(json.dumps(entries))


def make_medvlsm(root: Path, counts: tuple[int, int, int] = (6, 2, 2), jpeg_masks: bool = True) -> Path:
    """Kvasir/BKAI-like: JPEG images and masks of the same name, string p1, list p2, negated prompt when empty."""
    n = 0
    for split, count in zip(("train", "val", "test"), counts, strict=True):
        entries = []
        for _ in range(count):
            h, w = 24 + n % 5, 30 + n % 7
            name = f"img{n:03d}.jpg" if jpeg_masks else f"img{n:03d}.png"
            empty = n % 4 == 3
            _image(root / "images" / name, h, w)
            _mask(root / "masks" / name, h, w, empty=empty, quality=90 if jpeg_masks else None)
            p1 = "no polyp" if empty else "polyp"
            prompts = {"p0": "", "p1": p1, "p2": [p1, f"{p1} in an endoscopy image"]}
            entries.append({"img_name": name, "mask_name": name, "prompts": prompts, "bbox": [0, 0, 1, 1]})
            n += 1
        _anns(root, split, entries)
    return root


CAMUS_PROMPTS = {
    1: ["Left ventricular cavity of the heart.", "Left ventricular cavity in the cardiac ultrasound."],
    2: ["Myocardium of the heart.", "Myocardium in the cardiac ultrasound."],
    3: ["Left atrium cavity of the heart.", "Left atrium cavity in the cardiac ultrasound."],
}


def make_camus(root: Path) -> Path:
    """images/{train,test}/patientNNNN_{2CH,4CH}_{ED,ES}.png, masks/<folder>/mask_{1,2,3}/<stem>_gt.png."""
    plan = {"train": ("train", [3, 4]), "val": ("train", [1]), "test": ("test", [1, 2])}
    for split, (folder, patients) in plan.items():
        entries = []
        for p in patients:
            for view in ("2CH", "4CH"):
                stem = f"patient{p:04d}_{view}_ED"
                _image(root / "images" / folder / f"{stem}.png", 20, 16)
                for s in (1, 2, 3):
                    _mask(root / "masks" / folder / f"mask_{s}" / f"{stem}_gt.png", 20, 16)
                    entries.append(
                        {
                            "img_name": f"{stem}.png",
                            "mask_name": f"mask_{s}/{stem}_gt.png",
                            "prompts": {"p0": "", "p1": CAMUS_PROMPTS[s]},
                        }
                    )
        _anns(root, split, entries)
    return root


def make_chexlocalize(root: Path) -> Path:
    n = 0
    for split, count in (("train", 3), ("val", 1), ("test", 1)):
        entries = []
        for _ in range(count):
            stem = f"patient{n}_study1_view1_frontal"
            _image(root / "images" / f"{stem}.jpg", 40, 36)
            for pathology in ("Cardiomegaly", "Lung Lesion"):
                mask_name = f"{stem}_{pathology.lower().replace(' ', '_')}.png"
                _mask(root / "masks" / mask_name, 40, 36)
                entries.append(
                    {
                        "img_name": f"{stem}.jpg",
                        "mask_name": mask_name,
                        "prompts": {"p0": "", "p1": f"{pathology} in a chest Xray."},
                    }
                )
            n += 1
        _anns(root, split, entries)
    return root


def _palette() -> list[int]:
    pal = [0, 0, 0] + [int(v) for c in range(1, 256) for v in ((c * 37) % 256, (c * 91) % 256, (c * 53) % 256)]
    return pal[: 256 * 3]


def make_voc_raw(raw: Path, train_ids: list[str], val_ids: list[str]) -> Path:
    root = raw / "VOCdevkit" / "VOC2012"
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(train_ids) + "\n")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(val_ids) + "\n")
    for i, image_id in enumerate(train_ids + val_ids):
        _image(root / "JPEGImages" / f"{image_id}.jpg", 20, 24)
        index = np.zeros((20, 24), np.uint8)
        index[2:8, 2:10] = 1 + i % 20  # one class ...
        index[10:16, 12:20] = 15  # ... and always a person (class 15)
        index[8, :] = 255  # void border
        label = Image.fromarray(index, "P")
        label.putpalette(_palette())
        (root / "SegmentationClass").mkdir(exist_ok=True)
        label.save(root / "SegmentationClass" / f"{image_id}.png")
    return raw


def make_cityscapes_raw(raw: Path) -> Path:
    cities = {"train": ["aachen", "bochum", "cologne", "dusseldorf"], "val": ["frankfurt"]}
    for official, names in cities.items():
        for city in names:
            for frame in range(2):
                image_id = f"{city}_000000_{frame:06d}"
                _image(raw / "leftImg8bit" / official / city / f"{image_id}_leftImg8bit.png", 16, 32)
                ids = np.zeros((16, 32), np.uint8)  # 0 = unlabeled
                ids[:8] = 7  # road
                ids[8:12, :10] = 26  # car
                ids[12:, :] = 6  # ground: not an evaluation class
                ids[12:, 20:] = 0 if frame else 33  # bicycle in frame 0 only
                path = raw / "gtFine" / official / city / f"{image_id}_gtFine_labelIds.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(ids, "L").save(path)
    return raw


# -- registry --------------------------------------------------------------------------------------------------


def test_registry_has_the_ten_datasets_with_layouts_and_domains() -> None:
    ten = {"kvasir_polyp", "clinicdb_polyp", "bkai_polyp", "isic", "dfu", "busi", "camus", "chexlocalize",
           "voc2012", "cityscapes"}  # fmt: skip
    assert ten <= set(DATASETS)
    for name in ten:
        info = get_dataset(name)
        assert info.implemented and info.folder == name and not info.generated
        assert info.domain == ("natural" if name in ("voc2012", "cityscapes") else "medical")
    assert get_dataset("camus").layout == "camus" and get_dataset("chexlocalize").layout == "chexlocalize"
    assert get_dataset("voc2012").prompt_source == "class_name" and get_dataset("voc2012").layout == "image_dir"
    assert get_dataset("isic").split_counts == (810, 90, 379) and get_dataset("busi").prompt_key == "p1"


# -- readers ---------------------------------------------------------------------------------------------------


def test_medvlsm_reader_string_list_and_negated_prompts(tmp_path: Path) -> None:
    root = make_medvlsm(tmp_path / "bkai_polyp")
    info = get_dataset("bkai_polyp")
    train = read_samples(info, root, "train")
    assert len(train) == 6 and {s.prompts for s in train} == {("polyp",), ("no polyp",)}
    negated = [s for s in train if s.prompts == ("no polyp",)]
    assert negated and all(not (np.asarray(Image.open(s.mask)) > 127).any() for s in negated)
    listed = read_samples(info, root, "train", prompt_key="p2")
    assert all(len(s.prompts) == 2 and s.prompt(training=False) == s.prompts[0] for s in listed)
    with pytest.raises(DatasetLayoutError, match="no prompt 'p7'"):
        read_samples(info, root, "val", prompt_key="p7")


def test_camus_reader_uses_per_split_folders(tmp_path: Path) -> None:
    root = make_camus(tmp_path / "camus")
    info = get_dataset("camus")
    train, val, test = (read_samples(info, root, s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (12, 6, 12)  # images x 3 structures
    assert all(s.image.parent == root / "images" / "train" for s in train + val)
    assert all(s.image.parent == root / "images" / "test" for s in test)
    assert test[0].mask == root / "masks" / "test" / "mask_1" / "patient0001_2CH_ED_gt.png"
    assert test[0].prompts == tuple(CAMUS_PROMPTS[1])  # list-valued: drawn in training, first at evaluation
    entries = json.loads((root / "anns" / "val.json").read_text())
    entries[0]["mask_name"] = "mask_4/patient0001_2CH_ED_gt.png"
    (root / "anns" / "val.json").write_text(json.dumps(entries))
    with pytest.raises(DatasetLayoutError, match="CAMUS mask 'mask_4/"):
        read_samples(info, root, "val", check_files=False)


def test_chexlocalize_reader_checks_pathology_names(tmp_path: Path) -> None:
    root = make_chexlocalize(tmp_path / "chexlocalize")
    train = read_samples(get_dataset("chexlocalize"), root, "train")
    assert len(train) == 6 and len({s.image for s in train}) == 3  # one sample per image x pathology
    assert chexlocalize_pathology("p_s_v_frontal.jpg", "p_s_v_frontal_lung_lesion.png") == "Lung Lesion"
    with pytest.raises(DatasetLayoutError, match="unknown pathology 'fracture'"):
        chexlocalize_pathology("p_s_v_frontal.jpg", "p_s_v_frontal_fracture.png")
    with pytest.raises(DatasetLayoutError, match=r"not named <image stem>_<pathology>\.png"):
        chexlocalize_pathology("a.jpg", "b_edema.png")


def test_fixed_prompt_dataset(tmp_path: Path) -> None:
    root = make_medvlsm(tmp_path / "mine")
    info = DatasetInfo("mine", "mine", "medvlsm", "medical", "endoscopy", None, prompt_source="fixed",
                       fixed_prompt="lesion")  # fmt: skip
    assert {s.prompts for s in read_samples(info, root, "test")} == {("lesion",)}


# -- prepare ---------------------------------------------------------------------------------------------------


def test_prepare_voc_writes_class_masks_and_a_held_out_test(tmp_path: Path) -> None:
    train_ids = [f"2007_{i:06d}" for i in range(30)]
    val_ids = [f"2008_{i:06d}" for i in range(4)]
    raw = make_voc_raw(tmp_path / "raw", train_ids, val_ids)
    out = tmp_path / "data" / "voc2012"
    manifest = prepare("voc2012", raw, out, val_fraction=0.2)
    counts = manifest["counts"]
    assert counts["test"]["images"] == 4 and counts["train"]["images"] + counts["val"]["images"] == 30
    assert 0 < counts["val"]["images"] < 15  # a deterministic ~20 % of official train
    info = get_dataset("voc2012")
    test = read_samples(info, out, "test")
    assert {s.image.stem for s in test} == set(val_ids)  # test = official val
    val_stems = {s.image.stem for s in read_samples(info, out, "val")}
    train_stems = {s.image.stem for s in read_samples(info, out, "train")}
    assert not val_stems & train_stems and val_stems | train_stems == set(train_ids)
    assert len(test) == 8 and {p for s in test for p in s.prompts} <= set(VOC_CLASSES)
    person = next(s for s in test if s.prompts == ("person",))
    m = np.asarray(Image.open(person.mask))
    assert set(np.unique(m)) == {0, 255} and m[10:16, 12:20].all() and not m[8].any()  # void is background
    assert m.sum() // 255 == 48
    first = next(s for s in test if s.image.stem == val_ids[0] and s.prompts != ("person",))
    assert first.prompts == (VOC_CLASSES[(30 % 20)],)
    # deterministic, and refuses to overwrite
    again = prepare("voc2012", raw, tmp_path / "again", val_fraction=0.2)
    assert again["counts"] == counts and again["splits"] == manifest["splits"]
    with pytest.raises(DatasetLayoutError, match="already exists"):
        prepare("voc2012", raw, out)
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]
    assert verify_dataset(info, out).ok


def test_prepare_cityscapes_by_label_id_and_whole_cities(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = make_cityscapes_raw(tmp_path / "raw")
    out = tmp_path / "data" / "cityscapes"
    assert main(["data", "prepare", "cityscapes", "--from", str(raw), "--to", str(out), "--val-fraction", "0.25"]) == 0
    assert "test: 2 images" in capsys.readouterr().out
    info = get_dataset("cityscapes")
    test = read_samples(info, out, "test")
    assert {s.image.name for s in test} == {"frankfurt_000000_000000.png", "frankfurt_000000_000001.png"}
    assert sorted(p for s in test for p in s.prompts) == ["bicycle", "car", "car", "road", "road"]
    assert len(CITYSCAPES_CLASSES) == 19 and "ground" not in CITYSCAPES_CLASSES.values()
    road = np.asarray(Image.open(next(s.mask for s in test if s.prompts == ("road",))))
    assert road[:8].all() and not road[8:].any()
    val_cities = {s.image.name.split("_")[0] for s in read_samples(info, out, "val")}
    train_cities = {s.image.name.split("_")[0] for s in read_samples(info, out, "train")}
    assert len(val_cities) == 1 and not val_cities & train_cities and len(train_cities) == 3
    assert verify_dataset(info, out).ok


# -- verify ----------------------------------------------------------------------------------------------------


def test_verify_clean_dataset_and_soft_jpeg_masks(tmp_path: Path) -> None:
    root = make_medvlsm(tmp_path / "mine", jpeg_masks=True)
    info = DatasetInfo("mine", "mine", "medvlsm", "medical", "endoscopy", (6, 2, 2))
    report = verify_dataset(info, root)
    assert report.ok and report.counts == {"train": 6, "val": 2, "test": 2}
    assert [f.kind for f in report.findings] == ["soft-jpeg"] and report.findings[0].severity == WARNING
    camus = verify_dataset(get_dataset("camus"), make_camus(tmp_path / "camus"))
    assert camus.ok and not camus.findings
    chex = verify_dataset(get_dataset("chexlocalize"), make_chexlocalize(tmp_path / "chexlocalize"))
    assert {f.kind for f in chex.findings} == {"count"}  # only the counts: tiny, not the registry's 1279/446/452


def test_verify_finds_planted_defects(tmp_path: Path) -> None:
    root = make_medvlsm(tmp_path / "mine", jpeg_masks=False)
    info = DatasetInfo("mine", "mine", "medvlsm", "medical", "endoscopy", (6, 3, 2))
    (root / "masks" / "img000.png").unlink()  # missing
    (root / "images" / "img001.png").write_bytes(b"not a png")  # unreadable
    _mask(root / "masks" / "img002.png", 10, 10)  # size mismatch
    grey = np.zeros((28, 34), np.uint8)  # img004 is 34x28
    grey[3:9, 3:9] = 128
    Image.fromarray(grey).save(root / "masks" / "img004.png")  # PNG, not binary
    entries = json.loads((root / "anns" / "test.json").read_text())
    del entries[0]["prompts"]["p1"]
    (root / "anns" / "test.json").write_text(json.dumps(entries))

    report = verify_dataset(info, root)
    errors = {f.kind: f.message for f in report.findings if f.severity == ERROR}
    assert set(errors) == {"missing", "unreadable", "size", "not-binary", "count", "prompt"}
    assert "img000.png" in errors["missing"] and "img001.png" in errors["unreadable"]
    assert (
        "e.g. images/img002.png 32x26 vs mask masks/img002.png 10x10" in errors["size"]
        and "values 0, 128" in errors["not-binary"]
    )
    assert "val: 2 samples, expected 3" in errors["count"] and "no prompt 'p1'" in errors["prompt"]
    quick = verify_dataset(info, root, quick=True)  # names only: no decoding
    assert {f.kind for f in quick.findings} == {"missing", "count", "prompt"}
    assert not verify_dataset(info, tmp_path / "absent").ok


def test_verify_command_table_and_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    make_medvlsm(data / "kvasir_polyp")
    assert main(["data", "verify", "synthetic", "--data-root", str(data)]) == 0
    out = capsys.readouterr().out
    assert "synthetic" in out and "48/16/16" in out and " ok " in out
    assert main(["data", "verify", "--data-root", str(data)]) == 1  # every dataset found: kvasir is tiny
    captured = capsys.readouterr()
    assert "kvasir_polyp: error: train: 6 samples, expected 800" in captured.out
    assert "problems in 1 dataset(s): kvasir_polyp" in captured.err
    assert main(["data", "verify", "busi", "--data-root", str(data), "--quick"]) == 1
    assert "dataset folder not found" in capsys.readouterr().out


def test_verify_command_reads_a_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--spec: the spec's data_root, its declared dataset (own path, p2 list prompts) and its prompt key."""
    mine = make_medvlsm(tmp_path / "elsewhere" / "mine")
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "study: t\nmodels: [clipseg-tiny]\nstrategies: [coop]\ndatasets: [mine, synthetic]\n"
        f"data_root: {tmp_path / 'data'}\nprompt_key: p2\n"
        f"custom_datasets:\n  mine: {{path: {mine}, layout: medvlsm, domain: medical, prompt_key: p2}}\n"
    )
    assert main(["data", "verify", "--spec", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "mine" in out and "6/2/2" in out and "synthetic" in out
    (mine / "images" / "img000.jpg").unlink()
    assert main(["data", "verify", "mine", "--spec", str(spec), "--quick"]) == 1
    assert "img000.jpg" in capsys.readouterr().out
    assert main(["data", "verify", "kvasir_polyp", "--spec", str(spec)]) == 2
    assert "not among the datasets of" in capsys.readouterr().err


def test_data_commands_do_not_import_torch(tmp_path: Path) -> None:
    code = f"""
        import sys
        from vlsm_batch.cli import main
        assert main(["data", "verify", "synthetic", "--data-root", {str(tmp_path)!r}]) == 0
        assert "torch" not in sys.modules, "torch imported"
    """
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_submit_preflight_runs_the_quick_verify(tmp_path: Path) -> None:
    make_medvlsm(tmp_path / "data" / "kvasir_polyp")
    with pytest.raises(SubmissionError, match=r"kvasir_polyp: train: 6 samples, expected 800"):
        preflight_data(make_spec(tmp_path, datasets=("kvasir_polyp",)))
    with pytest.raises(SubmissionError, match=r"isic: dataset folder not found.*\n.*VLSM_DATA"):
        preflight_data(make_spec(tmp_path, datasets=("isic",)))
    preflight_data(make_spec(tmp_path, datasets=("synthetic",)))  # generated, then fine


# -- cache and pipeline ----------------------------------------------------------------------------------------


def test_unpack_masks_matches_numpy_for_odd_sizes() -> None:
    for size in (5, 7, 16):
        masks = RNG.integers(0, 2, (3, size, size), dtype=np.uint8)
        packed = np.stack([np.packbits(m.ravel()) for m in masks])
        out = unpack_masks(torch.from_numpy(packed), size)
        assert out.shape == (3, 1, size, size) and torch.equal(out[:, 0], torch.from_numpy(masks).float())


def test_cache_entry_built_once_reused_and_invalidated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_camus(tmp_path / "camus")
    samples = read_samples(get_dataset("camus"), root, "test")
    built = []
    real = cache_mod.build_arrays
    monkeypatch.setattr(cache_mod, "build_arrays", lambda *a, **k: built.append(1) or real(*a, **k))
    first = cached_split(samples, 12, True, root, "test")
    assert first.path is not None and first.path.parent == tmp_path / ".vlsm_cache" / "camus"
    assert isinstance(first.images, np.memmap) and first.images.shape == (4, 3, 12, 12)  # 4 images, 12 samples
    assert len(first) == 12 and first.original(5).shape == (20, 16)
    memory = build_arrays(samples, 12, True)
    assert np.array_equal(first.images, memory.images) and np.array_equal(first.masks, memory.masks)
    assert all(np.array_equal(first.original(i), memory.original(i)) for i in range(12))
    second = cached_split(samples, 12, True, root, "test")
    assert second.path == first.path and len(built) == 1
    _mask(root / "masks" / "test" / "mask_2" / "patient0001_4CH_ED_gt.png", 20, 16, empty=True)
    third = cached_split(samples, 12, True, root, "test")
    assert third.path != first.path and len(built) == 2
    monkeypatch.setenv("VLSM_CACHE", str(tmp_path / "elsewhere"))
    assert default_cache_root(root).parent == tmp_path / "elsewhere"


def test_cache_concurrent_builders_end_with_one_entry(tmp_path: Path) -> None:
    root = make_medvlsm(tmp_path / "mine", counts=(12, 2, 2))
    samples = read_samples(get_dataset("kvasir_polyp"), root, "train")
    results, errors = [], []

    def build() -> None:
        try:
            results.append(cached_split(samples, 16, False, root, "train", cache_root=tmp_path / "cache"))
        except Exception as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len({r.path for r in results}) == 1
    entries = [p for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")]
    assert [p.name for p in entries] == [results[0].path.name]  # no temporary folder left


def test_cache_crash_leaves_no_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_medvlsm(tmp_path / "mine")
    samples = read_samples(get_dataset("kvasir_polyp"), root, "val")

    def broken(path: Path, size: int) -> np.ndarray:
        raise OSError("disk on fire")

    monkeypatch.setattr(cache_mod, "read_image", broken)
    with pytest.raises(OSError, match="disk on fire"):
        cached_split(samples, 16, True, root, "val", cache_root=tmp_path / "cache")
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")] == []


@pytest.mark.parametrize("layout", ["camus", "chexlocalize", "voc2012"])
def test_segmentation_data_on_every_layout(tmp_path: Path, layout: str) -> None:
    if layout == "camus":
        root = make_camus(tmp_path / "camus")
    elif layout == "chexlocalize":
        root = make_chexlocalize(tmp_path / "chexlocalize")
    else:
        raw = make_voc_raw(tmp_path / "raw", [f"a{i}" for i in range(6)], ["b0", "b1"])
        root = tmp_path / "voc2012"
        prepare("voc2012", raw, root, val_fraction=0.3)
    info = get_dataset(layout)
    data = SegmentationData(root, tokenize, 16, MEAN, STD, batch_size=4, dataset=info, cache_root=tmp_path / "c")
    batch = next(iter(data.eval_loader("test", with_original=True)))
    n = min(4, data.size("test"))
    assert batch["pixel_values"].shape == (n, 3, 16, 16) and batch["mask"].shape == (n, 1, 16, 16)
    assert set(batch["mask"].unique().tolist()) <= {0.0, 1.0}
    expected = [tuple(np.asarray(Image.open(s.mask)).shape) for s in data.samples["test"][:n]]
    assert [tuple(m.shape) for m in batch["original_masks"]] == expected
    train = next(iter(data.train_loader()))
    assert train["pixel_values"].dtype == torch.uint8 and len(train["index"]) == min(4, data.size("train"))
    assert os.listdir(tmp_path / "c")  # went through the disk cache
