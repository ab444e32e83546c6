"""Data you can trust (issue 11, point 6): cache entries checked on read and rebuilt once, umask-following entries
and generated data for a group-shared data folder (a second uid reads them), masks of the wrong size and truncated
files refused naming the file, dataset lists and annotations that cannot reach outside their folders, and a
`data prepare` that never overwrites a file."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_datasets import make_voc_raw

from vlsm_batch.cli import main
from vlsm_batch.datasets import DatasetInfo, get_dataset
from vlsm_batch.datasets import cache as cache_mod
from vlsm_batch.datasets.cache import CacheEntryError, build_arrays, cached_split, load_entry
from vlsm_batch.datasets.medvlsm import DatasetContentError, DatasetLayoutError, DatasetPathError, read_split
from vlsm_batch.datasets.prepare import prepare, prepare_dataset
from vlsm_batch.datasets.readers import read_samples
from vlsm_batch.datasets.synthetic import ensure_synthetic
from vlsm_batch.datasets.verify import ERROR, WARNING, verify_dataset

REPO = Path(__file__).resolve().parents[1]
RNG = np.random.default_rng(11)
MINE = DatasetInfo("mine", "mine", "medvlsm", "medical", "endoscopy", None)


def make_dataset(root: Path, n: int = 6, mask_size: dict[int, tuple[int, int]] | None = None) -> Path:
    """A small medvlsm-layout dataset (PNG images 30x26, PNG masks) with the same samples in every split;
    ``mask_size`` gives some masks another (width, height)."""
    for sub in ("images", "masks", "anns"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(n):
        Image.fromarray(RNG.integers(0, 256, (26, 30, 3), dtype=np.uint8)).save(root / "images" / f"im{i}.png")
        w, h = (mask_size or {}).get(i, (30, 26))
        m = np.zeros((h, w), np.uint8)
        m[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 255
        Image.fromarray(m).save(root / "masks" / f"m{i}.png")
        entries.append({"img_name": f"im{i}.png", "mask_name": f"m{i}.png", "prompts": {"p0": "", "p1": "polyp"}})
    for split in ("train", "val", "test"):
        (root / "anns" / f"{split}.json").write_text(json.dumps(entries))
    return root


def _files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def counted_builds(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every cache entry build (the folder it is built in)."""
    built: list[Path] = []
    real = cache_mod.build_arrays

    def counting(*args: object, **kwargs: object) -> object:
        built.append(Path(str(kwargs.get("out"))))
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(cache_mod, "build_arrays", counting)
    return built


# -- cache entries: checked on read, rebuilt once --------------------------------------------------------------


def _truncate(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


def _flip(path: Path) -> None:
    """Change bytes in the middle of a file, keeping its size (only the hash can tell)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _half_meta(path: Path) -> None:
    text = path.read_text()
    path.write_text(text[: len(text) // 2])


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda e: _truncate(e / "images.npy"), "images.npy has"),
        (lambda e: _flip(e / "masks.npy"), "masks.npy does not match the hash"),
        (lambda e: _flip(e / "original_bits.npy"), "original_bits.npy does not match the hash"),
        (lambda e: _half_meta(e / "meta.json"), "meta.json is unreadable or cut short"),
        (lambda e: (e / "meta.json").unlink(), "it has no meta.json"),
        (lambda e: (e / "image_index.npy").unlink(), "image_index.npy is missing"),
    ],
    ids=["truncated-images", "flipped-masks", "flipped-originals", "half-meta", "no-meta", "missing-file"],
)
def test_damaged_cache_entry_is_rebuilt_once_with_a_warning(
    tmp_path: Path, counted_builds: list[Path], capfd: pytest.CaptureFixture[str], damage: object, reason: str
) -> None:
    root = make_dataset(tmp_path / "mine")
    samples = read_split(root, "test")
    first = cached_split(samples, 16, True, root, "test")
    good = (np.array(first.images), np.array(first.masks), [first.original(i) for i in range(len(first))])
    assert first.path is not None and len(counted_builds) == 1
    damage(first.path)  # type: ignore[operator]
    with pytest.raises(CacheEntryError, match=reason):
        load_entry(first.path)
    again = cached_split(samples, 16, True, root, "test")
    err = capfd.readouterr().err
    assert f"warning: cache entry {first.path} is damaged: {reason}" in err and "rebuilding it" in err
    assert again.path == first.path and len(counted_builds) == 2  # rebuilt in place, once
    assert np.array_equal(again.images, good[0]) and np.array_equal(again.masks, good[1])
    assert all(np.array_equal(again.original(i), good[2][i]) for i in range(len(again)))
    cached_split(samples, 16, True, root, "test")  # now good: read, not rebuilt, no warning
    assert len(counted_builds) == 2 and "warning" not in capfd.readouterr().err
    assert sorted(p.name for p in first.path.parent.iterdir()) == sorted([first.path.name, f".{first.path.name}.lock"])


def test_entry_that_stays_damaged_names_the_folder_to_delete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_dataset(tmp_path / "mine")
    samples = read_split(root, "val")
    entry = cached_split(samples, 16, True, root, "val", cache_root=tmp_path / "cache").path
    assert entry is not None
    _truncate(entry / "masks.npy")
    real = cache_mod.build_arrays

    def losing_writes(*args: object, **kwargs: object) -> object:  # a disk that loses what it is given
        out = real(*args, **kwargs)  # type: ignore[arg-type]
        _flip(Path(str(kwargs["out"])) / "images.npy")
        return out

    monkeypatch.setattr(cache_mod, "build_arrays", losing_writes)
    with pytest.raises(CacheEntryError) as info:
        cached_split(samples, 16, True, root, "val", cache_root=tmp_path / "cache")
    message = str(info.value)
    assert f"cache entry {entry} is damaged" in message and "even after it was rebuilt" in message
    assert f"Delete the folder {entry} and run again" in message


def test_entry_that_cannot_be_replaced_names_the_folder_and_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_dataset(tmp_path / "mine")
    samples = read_split(root, "val")
    entry = cached_split(samples, 16, False, root, "val", cache_root=tmp_path / "cache").path
    assert entry is not None
    _half_meta(entry / "meta.json")
    real_rename = os.rename

    def refusing(src: object, dst: object) -> None:  # as a folder another user owns would (root ignores modes)
        if Path(str(src)) == entry:
            raise PermissionError(13, "Permission denied", str(src))
        real_rename(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(cache_mod.os, "rename", refusing)
    with pytest.raises(CacheEntryError) as info:
        cached_split(samples, 16, False, root, "val", cache_root=tmp_path / "cache")
    message = str(info.value)
    assert "meta.json is unreadable" in message and "cannot be replaced (Permission denied)" in message
    assert f"Delete the folder {entry}" in message and "VLSM_CACHE" in message
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.endswith(".tmp")]  # nothing left behind


CONCURRENT = """
import json, sys, time
from pathlib import Path
from vlsm_batch.datasets.cache import cached_split
from vlsm_batch.datasets.medvlsm import read_split
root, cache, start = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
samples = read_split(root, "train")
time.sleep(max(0.0, start - time.time()))
a = cached_split(samples, 16, True, root, "train", cache_root=cache)
print(json.dumps({"path": str(a.path), "sum": int(a.images.sum()) + int(a.masks.sum())}))
"""


def test_concurrent_trials_on_a_damaged_entry_rebuild_it_once(tmp_path: Path) -> None:
    """Three processes start at the same moment on a truncated entry: one rebuilds, all read the same good one."""
    root = make_dataset(tmp_path / "mine", n=12)
    cache = tmp_path / "cache"
    good = cached_split(read_split(root, "train"), 16, True, root, "train", cache_root=cache)
    expected = int(good.images.sum()) + int(good.masks.sum())
    assert good.path is not None
    _truncate(good.path / "images.npy")
    import time

    start = time.time() + 3.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT, str(root), str(cache), str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    results = [json.loads(o[0]) for o in outs]
    assert {r["path"] for r in results} == {str(good.path)} and {r["sum"] for r in results} == {expected}
    assert sum(o[1].count("rebuilding it") for o in outs) == 1
    assert sorted(p.name for p in cache.iterdir()) == sorted([good.path.name, f".{good.path.name}.lock"])
    load_entry(good.path)  # and it verifies


# -- umask and a group-shared data folder ----------------------------------------------------------------------


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_cache_entries_generated_and_prepared_data_follow_the_umask(tmp_path: Path, umask_022: None) -> None:
    synth = ensure_synthetic(tmp_path / "data")
    assert synth.stat().st_mode & 0o777 == 0o755  # not tempfile's 0700
    assert (synth / "images").stat().st_mode & 0o777 == 0o755
    assert (synth / "anns" / "test.json").stat().st_mode & 0o777 == 0o644
    entry = cached_split(read_split(synth, "test"), 16, True, synth, "test").path
    assert entry is not None and entry.stat().st_mode & 0o777 == 0o755
    assert {(entry / n).stat().st_mode & 0o777 for n in os.listdir(entry)} == {0o644}
    raw = make_voc_raw(tmp_path / "raw", [f"a{i}" for i in range(4)], ["b0"])
    out = tmp_path / "data" / "voc2012"
    prepare("voc2012", raw, out, val_fraction=0.3)
    assert out.stat().st_mode & 0o777 == 0o755


SECOND_USER = """
import json, sys
from pathlib import Path
from vlsm_batch.datasets import get_dataset
from vlsm_batch.datasets.cache import cached_split
from vlsm_batch.datasets.readers import read_samples
from vlsm_batch.datasets.synthetic import ensure_synthetic
root = ensure_synthetic(Path(sys.argv[1]))
samples = read_samples(get_dataset("synthetic"), root, "test")
theirs = cached_split(samples, 16, True, root, "test")
mine = cached_split(samples, 24, True, root, "test")
print(json.dumps({"read": str(theirs.path), "built": str(mine.path), "shape": list(theirs.original(0).shape)}))
"""


@pytest.fixture
def shared_folder() -> Iterator[Path]:
    """A folder outside pytest's 0700 tmp tree, so that another uid can reach it."""
    if os.geteuid() != 0:
        pytest.skip("needs root: a second uid is started with subprocess user/group (CI runs the tests as root)")
    top = Path(tempfile.mkdtemp(prefix="vlsm-shared-", dir="/tmp"))
    os.chmod(top, 0o755)
    yield top
    shutil.rmtree(top, ignore_errors=True)


GID, OTHER_UID = 4242, 65534  # a group for the data folder; "nobody"


def _env(home: Path) -> dict[str, str]:
    """The other user's environment: this checkout and this interpreter's packages, nothing of root's home."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]),
    }


def _other_user_python(home: Path) -> str:
    """An interpreter the other uid may run: this one, or the system's of the same version (this one may live in
    root's 0700 home, as pyenv's does); skip when there is none."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (sys.executable, f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"):
        if not os.path.exists(candidate):
            continue
        try:
            probe = subprocess.run(
                [candidate, "-c", "import numpy, PIL, vlsm_batch.datasets.cache"],
                user=OTHER_UID, group=GID, extra_groups=[GID], env=_env(home), cwd="/", capture_output=True, timeout=60,
            )  # fmt: skip
        except OSError:
            continue
        if probe.returncode == 0:
            return candidate
    pytest.skip(f"no Python {version} that uid {OTHER_UID} may run with this checkout's packages")


def _as_other_user(script: str, data: Path, home: Path, umask: int) -> dict[str, object]:
    proc = subprocess.run(
        [_other_user_python(home), "-c", script, str(data)],
        user=OTHER_UID,
        group=GID,
        extra_groups=[GID],
        umask=umask,
        env=_env(home),
        cwd="/",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr, proc.stderr
    return json.loads(proc.stdout)


def test_second_user_of_a_group_shared_data_folder_reads_and_adds_cache_entries(shared_folder: Path) -> None:
    """umask 002 in a setgid folder of a shared group: root generates the data and builds the cache; another uid
    of the group reads both and adds its own entry next to root's."""
    data = shared_folder / "data"
    data.mkdir()
    os.chown(data, 0, GID)
    os.chmod(data, 0o2775)
    old = os.umask(0o002)
    try:
        synth = ensure_synthetic(data)
        built = cached_split(read_samples(get_dataset("synthetic"), synth, "test"), 16, True, synth, "test").path
    finally:
        os.umask(old)
    assert built is not None and built.stat().st_mode & 0o7777 == 0o2775 and built.stat().st_gid == GID
    assert synth.stat().st_mode & 0o7777 == 0o2775
    nohome = shared_folder / "nohome"  # does not exist: nothing may fall back to a home cache
    result = _as_other_user(SECOND_USER, data, nohome, 0o002)
    assert result["read"] == str(built) and result["shape"] == [
        int(v) for v in np.asarray(Image.open(synth / "masks" / "synth_0064_mask.png")).shape
    ]
    theirs = Path(str(result["built"]))
    assert theirs.parent == built.parent and theirs.stat().st_uid == OTHER_UID and theirs.stat().st_gid == GID
    assert theirs.stat().st_mode & 0o7777 == 0o2775
    load_entry(theirs)  # what the other user built verifies for root
    assert not nohome.exists()


def test_second_user_reads_a_read_only_shared_cache_and_builds_privately(shared_folder: Path) -> None:
    """umask 022: the group may read but not write; the other user reads root's entry where it is and builds the
    entries it lacks in its own cache."""
    data = shared_folder / "data"
    data.mkdir()
    os.chown(data, 0, GID)
    old = os.umask(0o022)
    try:
        os.chmod(data, 0o2755)
        synth = ensure_synthetic(data)
        built = cached_split(read_samples(get_dataset("synthetic"), synth, "test"), 16, True, synth, "test").path
    finally:
        os.umask(old)
    home = shared_folder / "home"
    home.mkdir()
    os.chown(home, OTHER_UID, GID)
    result = _as_other_user(SECOND_USER, data, home, 0o022)
    assert result["read"] == str(built)
    assert Path(str(result["built"])).is_relative_to(home / ".cache" / "vlsm-batch")


# -- masks of the wrong size, unreadable files -----------------------------------------------------------------


def test_mask_of_another_size_is_refused_naming_both_files_and_sizes(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "mine", mask_size={3: (15, 13)})
    samples = read_split(root, "test")
    with pytest.raises(DatasetContentError) as info:
        cached_split(samples, 16, True, root, "test", cache_root=tmp_path / "cache")
    message = str(info.value)
    assert f"mask {root / 'masks' / 'm3.png'} is 15x13 pixels but its image {root / 'images' / 'im3.png'} is 30x26" in (
        message
    )
    assert "Fix the mask" in message and "vlsm-batch data verify" in message
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")] == []  # no entry
    with pytest.raises(DatasetContentError, match=r"m3\.png is 15x13"):
        build_arrays(samples, 16, False)  # the in-memory path (use_cache=False) refuses it too
    report = verify_dataset(MINE, root)
    sizes = [f for f in report.findings if f.kind == "size"]
    assert (
        sizes and sizes[0].severity == ERROR and "images/im3.png 30x26 vs mask masks/m3.png 15x13" in sizes[0].message
    )
    assert not [f for f in verify_dataset(MINE, root, quick=True).findings if f.kind == "size"]  # quick: no decoding


def test_dataset_that_declares_resized_masks_gets_them_at_image_size(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "mine", mask_size={3: (15, 13)})
    info = DatasetInfo("mine", "mine", "medvlsm", "medical", "endoscopy", None, resize_masks=True)
    samples = read_samples(info, root, "test")
    arrays = cached_split(samples, 16, True, root, "test", cache_root=tmp_path / "cache")
    assert arrays.original(3).shape == (26, 30) and arrays.original(3).any()  # at its image's size
    plain = read_samples(MINE, root, "test")
    assert cache_mod.entry_key(samples, 16, True, root) != cache_mod.entry_key(plain, 16, True, root)
    report = verify_dataset(info, root)
    assert report.ok and [(f.kind, f.severity) for f in report.findings] == [("resized", WARNING)]


@pytest.mark.parametrize("which", ["images/im2.png", "masks/m4.png"])
def test_truncated_png_names_its_file(tmp_path: Path, which: str) -> None:
    root = make_dataset(tmp_path / "mine")
    target = root / which
    _truncate(target)
    samples = read_split(root, "val")
    kind = "image" if which.startswith("images") else "mask"
    with pytest.raises(DatasetContentError, match=f"cannot read {kind} {target} "):
        cached_split(samples, 16, True, root, "val", cache_root=tmp_path / "cache")
    unreadable = [f for f in verify_dataset(MINE, root).findings if f.kind == "unreadable"]
    assert unreadable and unreadable[0].severity == ERROR and str(target) in unreadable[0].message


def test_trial_data_refuses_a_wrong_size_mask(tmp_path: Path) -> None:
    """Where a trial loads its data (SegmentationData): the mismatch stops it, it is not trained on silently."""
    from test_datasets import tokenize

    from vlsm_batch.training.data import SegmentationData

    root = make_dataset(tmp_path / "mine", mask_size={0: (30, 25)})
    with pytest.raises(DatasetContentError, match=r"m0\.png is 30x25 pixels but its image .*im0\.png is 30x26"):
        SegmentationData(root, tokenize, 16, (0.5,) * 3, (0.25,) * 3, batch_size=2, cache_root=tmp_path / "c")


# -- names that lead outside the dataset -----------------------------------------------------------------------


def _set_entry(root: Path, split: str, index: int, **names: str) -> Path:
    ann = root / "anns" / f"{split}.json"
    entries = json.loads(ann.read_text())
    entries[index].update(names)
    ann.write_text(json.dumps(entries))
    return ann


@pytest.mark.parametrize(
    ("names", "problem"),
    [
        ({"img_name": "../../etc/hostname"}, "has a '..' component"),
        ({"mask_name": "sub/../../masks/m1.png"}, "has a '..' component"),
        ({"img_name": "/etc/hostname"}, "is an absolute path"),
        ({"mask_name": ""}, "is empty"),
        ({"img_name": 7}, "is int, not text"),
    ],
)
def test_hostile_annotation_names_are_refused_naming_the_entry(tmp_path: Path, names: dict, problem: str) -> None:
    root = make_dataset(tmp_path / "mine")
    ann = _set_entry(root, "val", 2, **names)
    field, value = next(iter(names.items()))
    with pytest.raises(DatasetPathError) as info:
        read_split(root, "val", check_files=False)
    assert f"{ann}: sample 2: {field} {value!r} {problem}" in str(info.value)
    report = verify_dataset(MINE, root, quick=True)  # the cheap check submit's preflight runs
    paths = [f for f in report.findings if f.kind == "path"]
    assert not report.ok and paths and paths[0].severity == ERROR and str(ann) in paths[0].message


def test_symlink_out_of_the_dataset_is_refused_but_a_symlinked_folder_is_fine(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "mine")
    secret = tmp_path / "secret.png"
    shutil.copy(root / "images" / "im0.png", secret)
    (root / "images" / "evil.png").symlink_to(secret)
    (root / "masks" / "sub").symlink_to(tmp_path, target_is_directory=True)
    _set_entry(root, "test", 1, img_name="evil.png")
    ann = _set_entry(root, "test", 4, mask_name="sub/secret.png")
    with pytest.raises(DatasetPathError) as info:
        read_split(root, "test")
    message = str(info.value)
    assert f"2 file(s) named in {ann} lead outside their folder" in message
    assert (
        f"{root / 'images' / 'evil.png'} -> {secret}" in message
        and f"{root / 'masks' / 'sub' / 'secret.png'}" in message
    )
    report = verify_dataset(MINE, root, quick=True)
    assert any(f.kind == "path" and "evil.png" in f.message for f in report.findings)
    # a link inside its folder, and a whole folder that is a link elsewhere, are ordinary dataset setups
    moved = make_dataset(tmp_path / "elsewhere")
    linked = tmp_path / "linked"
    (linked / "anns").mkdir(parents=True)
    (linked / "images").symlink_to(moved / "images", target_is_directory=True)
    (linked / "masks").symlink_to(moved / "masks", target_is_directory=True)
    (moved / "masks" / "alias.png").symlink_to(moved / "masks" / "m0.png")
    shutil.copy(moved / "anns" / "val.json", linked / "anns" / "val.json")
    _set_entry(linked, "val", 0, mask_name="alias.png")
    assert len(read_split(linked, "val")) == 6


def test_image_dir_layout_refuses_a_symlink_out(tmp_path: Path) -> None:
    raw = make_voc_raw(tmp_path / "raw", [f"a{i}" for i in range(4)], ["b0"])
    out = tmp_path / "voc2012"
    prepare("voc2012", raw, out, val_fraction=0.3)
    person = out / "annotations" / "test" / "person" / "b0.png"
    person.unlink()
    person.symlink_to(tmp_path / "raw" / "VOCdevkit" / "VOC2012" / "SegmentationClass" / "b0.png")
    with pytest.raises(DatasetPathError, match=f"found under {out} lead outside"):
        read_samples(get_dataset("voc2012"), out, "test")


def test_hostile_voc_list_writes_nothing_and_names_the_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    raw = make_voc_raw(tmp_path / "raw", [f"2007_{i:06d}" for i in range(5)], ["2008_000000"])
    lists = raw / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation"
    # what the escaping id would read (JPEGImages/../../../../ESCAPED.jpg is tmp_path/ESCAPED.jpg) is there
    shutil.copy(raw / "VOCdevkit" / "VOC2012" / "JPEGImages" / "2007_000000.jpg", tmp_path / "ESCAPED.jpg")
    shutil.copy(raw / "VOCdevkit" / "VOC2012" / "SegmentationClass" / "2007_000000.png", tmp_path / "ESCAPED.png")
    with open(lists / "train.txt", "a") as f:
        f.write("../../../../ESCAPED\n")
    before = _files(tmp_path)
    out = tmp_path / "data" / "voc2012"
    with pytest.raises(DatasetPathError) as info:
        prepare("voc2012", raw, out)
    assert f"{lists / 'train.txt'}:6: image id '../../../../ESCAPED' is not a plain file name" in str(info.value)
    assert _files(tmp_path) == before and not (tmp_path / "data").exists()  # nothing written anywhere
    assert main(["data", "prepare", "voc2012", "--from", str(raw), "--to", str(out)]) == 2
    assert "train.txt:6: image id '../../../../ESCAPED'" in capsys.readouterr().err
    assert _files(tmp_path) == before


def test_voc_sources_that_link_out_or_repeat_are_refused(tmp_path: Path) -> None:
    raw = make_voc_raw(tmp_path / "raw", ["a0", "a1", "a2"], ["b0"])
    voc = raw / "VOCdevkit" / "VOC2012"
    outside = tmp_path / "outside.jpg"
    shutil.move(voc / "JPEGImages" / "a1.jpg", outside)
    (voc / "JPEGImages" / "a1.jpg").symlink_to(outside)
    with pytest.raises(DatasetPathError, match=r"a1\.jpg -> .*outside\.jpg \(.*train\.txt:2\)"):
        prepare("voc2012", raw, tmp_path / "out")
    (voc / "JPEGImages" / "a1.jpg").unlink()
    shutil.move(outside, voc / "JPEGImages" / "a1.jpg")
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("b0\na2\n")
    with pytest.raises(
        DatasetLayoutError, match=r"val\.txt:2: image id 'a2' is listed again \(first at .*train\.txt:3\)"
    ):
        prepare("voc2012", raw, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# -- prepare never overwrites ----------------------------------------------------------------------------------


def test_prepare_again_changes_nothing_restores_deleted_files_and_refuses_differences(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = make_voc_raw(tmp_path / "raw", [f"a{i}" for i in range(8)], ["b0", "b1"])
    out = tmp_path / "data" / "voc2012"
    args = ["data", "prepare", "voc2012", "--from", str(raw), "--to", str(out), "--val-fraction", "0.25"]
    assert main(args) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    first = _files(out)
    assert main(args) == 0  # an idempotent re-run: safe, and says so
    assert f"nothing changed: {out} already holds this preparation ({len(first) - 1} files)" in capsys.readouterr().out
    assert _files(out) == first
    deleted = out / "annotations" / "test" / "person" / "b1.png"
    deleted.unlink()
    again = prepare_dataset("voc2012", raw, out, val_fraction=0.25)
    assert again.written == 1 and deleted.is_file() and set(_files(out)) == set(first)
    edited = out / "annotations" / "training" / "person" / "a0.png"
    if not edited.exists():
        edited = next((out / "annotations" / "training" / "person").iterdir())
    Image.fromarray(np.zeros((20, 24), np.uint8)).save(edited)
    kept = edited.read_bytes()
    differs = rf"already exists and holds a different preparation.*\n  {re.escape(str(edited))} differs"
    with pytest.raises(DatasetLayoutError, match=differs):
        prepare("voc2012", raw, out, val_fraction=0.25)
    assert edited.read_bytes() == kept  # refused, never overwritten
    with pytest.raises(
        Exception,
        match=r"already exists and holds a different preparation.*\n  \S*prepared\.json differs in counts, splits",
    ):
        prepare("voc2012", raw, out, val_fraction=0.5)
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]


def test_prepare_refuses_a_folder_that_is_not_a_preparation(tmp_path: Path) -> None:
    raw = make_voc_raw(tmp_path / "raw", ["a0", "a1"], ["b0"])
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "study.yaml").write_text("my own file\n")
    with pytest.raises(DatasetLayoutError, match=r"already exists and is not a prepared dataset \(no prepared\.json\)"):
        prepare("voc2012", raw, mine)
    assert [p.name for p in mine.iterdir()] == ["study.yaml"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert prepare_dataset("voc2012", raw, empty, val_fraction=0.5).written > 0  # an empty folder is fine
    assert verify_dataset(get_dataset("voc2012"), empty).ok


def test_data_layer_stays_light() -> None:
    """The checks add no heavy import to the light commands (verify runs in submit's preflight)."""
    code = """
        import sys
        import vlsm_batch.datasets.cache, vlsm_batch.datasets.prepare, vlsm_batch.datasets.verify
        assert "torch" not in sys.modules
    """
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_submit_preflight_refuses_an_escaping_annotation(tmp_path: Path) -> None:
    from helpers import make_spec

    from vlsm_batch.errors import SubmissionError
    from vlsm_batch.jobs.submit import preflight_data

    root = make_dataset(tmp_path / "data" / "kvasir_polyp")
    ann = _set_entry(root, "train", 0, img_name="../../../etc/hostname")
    with pytest.raises(SubmissionError, match=rf"kvasir_polyp: train: {ann}: sample 0: img_name '\.\./\.\./\.\./etc"):
        preflight_data(make_spec(tmp_path, datasets=("kvasir_polyp",)))
