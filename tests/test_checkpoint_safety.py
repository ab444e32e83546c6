"""Durable, relocatable checkpoints and no code from files (issue 11, points 5 and 7): atomic writes that keep the
previous good file on ENOSPC (injected, and real on a tiny tmpfs), a damaged last.ckpt falling back or restarting,
a moved trial keeping its best checkpoint, malicious pickles refused without running, incomplete weights refused."""

from __future__ import annotations

import errno
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from test_training import make_trial, set_train, tiny_factory  # noqa: E402

from vlsm_batch.datasets.synthetic import ensure_synthetic  # noqa: E402
from vlsm_batch.models.checkpoints import (  # noqa: E402
    CheckpointMismatchError,
    UnsafeCheckpointError,
    read_state_dict,
)
from vlsm_batch.models.prompted import ModelLoadError  # noqa: E402
from vlsm_batch.training import checkpoint_io  # noqa: E402
from vlsm_batch.training.checkpoint_io import (  # noqa: E402
    LAST,
    PREVIOUS,
    DurableCheckpointIO,
    TrialCheckpoint,
    write_durably,
)
from vlsm_batch.training.entry import train_trial  # noqa: E402

TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    ensure_synthetic(root)
    return root


def load_plain(path: Path) -> dict[str, Any]:
    """Our checkpoints load with weights_only=True: tensors and plain values only."""
    return torch.load(path, map_location="cpu", weights_only=True)


def ckpt_dir(trial: Path) -> Path:
    return trial / "checkpoints"


def epochs_of(trial: Path) -> list[int]:
    return [int(line.split(",")[0]) for line in (trial / "history.csv").read_text().splitlines()[1:]]


def same_weights(a: Path, b: Path) -> bool:
    sa, sb = load_plain(a)["state_dict"], load_plain(b)["state_dict"]
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


class Payload:
    """Unpickling this creates ``marker``: the stand-in for code a malicious checkpoint would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


# -- durable writes --------------------------------------------------------------------------------------------


def test_checkpoint_writes_are_atomic_keep_the_previous_and_hold_relative_paths(
    tmp_path: Path, data_root: Path
) -> None:
    trial = make_trial(tmp_path, data_root, max_epochs=2)
    train_trial(trial, model_factory=tiny_factory)
    names = sorted(p.name for p in ckpt_dir(trial).iterdir())
    assert names == ["best.ckpt", "last.ckpt", "last.prev.ckpt"]  # no temporary file, no best-v1.ckpt
    last, prev = load_plain(ckpt_dir(trial) / LAST), load_plain(ckpt_dir(trial) / PREVIOUS)
    assert (last["epoch"], prev["epoch"]) == (1, 0)
    states = list(last["callbacks"].values())
    text = repr(states)
    assert str(tmp_path) not in text  # nothing in the checkpoint names the folder it lives in
    best_state = next(s for s in states if s.get("monitor") == "val/dice")
    assert best_state["best_model_path"] == "best.ckpt" and list(best_state["best_k_models"]) == ["best.ckpt"]


def test_failed_write_keeps_the_old_file_and_names_the_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "checkpoints" / LAST
    write_durably(target, b"good one", previous=target.with_name(PREVIOUS))
    real_write = os.write

    def full_disk(fd: int, data: Any) -> int:
        real_write(fd, bytes(data[:3]))  # part of it lands, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(OSError) as err:
        write_durably(target, b"new and longer", previous=target.with_name(PREVIOUS))
    monkeypatch.undo()
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(target)
    assert target.read_bytes() == b"good one" and not target.with_name(PREVIOUS).exists()
    assert sorted(p.name for p in target.parent.iterdir()) == [LAST]  # the temporary file is gone
    write_durably(target, b"second", previous=target.with_name(PREVIOUS))
    assert target.read_bytes() == b"second" and target.with_name(PREVIOUS).read_bytes() == b"good one"


def test_disk_full_mid_trial_then_the_rerun_finishes(
    tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trial = make_trial(tmp_path, data_root, max_epochs=1)
    train_trial(trial, model_factory=tiny_factory)
    good = (ckpt_dir(trial) / LAST).read_bytes()
    set_train(trial, max_epochs=3)

    def full_disk(fd: int, data: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)  # only the checkpoint writer uses os.write
    with pytest.raises(OSError) as err:
        train_trial(trial, model_factory=tiny_factory)
    monkeypatch.undo()
    assert err.value.errno == errno.ENOSPC
    assert Path(err.value.filename).parent == ckpt_dir(trial) and Path(err.value.filename).name in ("best.ckpt", LAST)
    assert (ckpt_dir(trial) / LAST).read_bytes() == good  # never 0 bytes, never half a file
    metrics = train_trial(trial, model_factory=tiny_factory)  # no hand edits
    assert metrics["epochs"] == 3 and epochs_of(trial) == [1, 2, 3]


def _can_mount_tmpfs() -> bool:
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k none /mnt 2>/dev/null || exit 1"],
        capture_output=True,
    )
    return probe.returncode == 0


_TMPFS_SCRIPT = """
import json, os, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_training import make_trial, set_train, tiny_factory
from vlsm_batch.training.entry import train_trial

mnt, out = Path({mnt!r}), {{}}
trial = make_trial(mnt, Path({data!r}), max_epochs=1)
config = json.loads((trial / "config.json").read_text())
(trial / "config.json").write_text(json.dumps({{**config, "loggers": []}}))  # only the trial's own files
train_trial(trial, model_factory=tiny_factory)
last = trial / "checkpoints" / "last.ckpt"
good = last.read_bytes()
set_train(trial, max_epochs=3)
st = os.statvfs(mnt)
with open(mnt / "filler", "wb") as f:  # leave two pages: room for history.csv, not for a checkpoint
    f.write(b"\\0" * (st.f_bavail * st.f_frsize - 8192))
try:
    train_trial(trial, model_factory=tiny_factory)
except OSError as exc:
    out.update(errno=exc.errno, filename=exc.filename)
out["intact"] = last.read_bytes() == good
out["left"] = sorted(p.name for p in last.parent.iterdir())
(mnt / "filler").unlink()
out["epochs"] = train_trial(trial, model_factory=tiny_factory)["epochs"]
out["checkpoints"] = str(last.parent)
Path({result!r}).write_text(json.dumps(out))
"""


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs root and unshare to mount a private tmpfs")
def test_real_enospc_on_a_tiny_tmpfs(tmp_path: Path, data_root: Path) -> None:
    mnt, result = tmp_path / "mnt", tmp_path / "result.json"
    mnt.mkdir()
    script = tmp_path / "fill.py"
    script.write_text(_TMPFS_SCRIPT.format(tests=str(TESTS), mnt=str(mnt), data=str(data_root), result=str(result)))
    cmd = f"mount -t tmpfs -o size=1m none {mnt} && exec {sys.executable} {script}"
    proc = subprocess.run(["unshare", "-m", "sh", "-c", cmd], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(result.read_text())
    assert out["errno"] == errno.ENOSPC and Path(out["filename"]).parent == Path(out["checkpoints"]), out
    assert out["intact"] and not [n for n in out["left"] if n.endswith(".tmp")], out
    assert out["epochs"] == 3


# -- damaged last checkpoints ------------------------------------------------------------------------------------


def test_truncated_last_falls_back_to_the_previous_and_ends_bit_identical(
    tmp_path: Path, data_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    straight = make_trial(tmp_path / "straight", data_root, max_epochs=3)
    train_trial(straight, model_factory=tiny_factory)
    trial = make_trial(tmp_path / "damaged", data_root, max_epochs=2)
    train_trial(trial, model_factory=tiny_factory)
    last = ckpt_dir(trial) / LAST
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # a crash on a file system without fsync
    set_train(trial, max_epochs=3)
    capsys.readouterr()
    metrics = train_trial(trial, model_factory=tiny_factory)
    out = capsys.readouterr().out
    assert f"checkpoint {last} is unusable" in out and "resuming from the previous checkpoint" in out
    assert "epoch 2/3" in out and "epoch 1/3" not in out  # epoch 2 runs again, from the end of epoch 1
    assert (ckpt_dir(trial) / "last.ckpt.damaged").is_file()
    assert metrics["epochs"] == 3 and epochs_of(trial) == [1, 2, 3]
    assert same_weights(ckpt_dir(straight) / LAST, last)
    assert (trial / "history.csv").read_text().splitlines()[1].split(",")[1:4] == (
        (straight / "history.csv").read_text().splitlines()[1].split(",")[1:4]
    )


def test_empty_last_without_a_previous_restarts_the_trial(
    tmp_path: Path, data_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    straight = make_trial(tmp_path / "straight", data_root, max_epochs=3)
    train_trial(straight, model_factory=tiny_factory)
    trial = make_trial(tmp_path / "empty", data_root, max_epochs=2)
    train_trial(trial, model_factory=tiny_factory)
    (ckpt_dir(trial) / LAST).write_bytes(b"")  # what the old Lightning copy left on a full disk
    (ckpt_dir(trial) / PREVIOUS).unlink()
    set_train(trial, max_epochs=3)
    capsys.readouterr()
    metrics = train_trial(trial, model_factory=tiny_factory)
    out = capsys.readouterr().out
    assert f"checkpoint {ckpt_dir(trial) / LAST} is unusable, it is empty (0 bytes)" in out
    assert "starts over from epoch 1" in out and "epoch 1/3" in out
    assert metrics["epochs"] == 3 and epochs_of(trial) == [1, 2, 3]  # history reset, not appended to
    assert same_weights(ckpt_dir(straight) / LAST, ckpt_dir(trial) / LAST)
    assert metrics["best_epoch"] == json.loads((straight / "metrics.json").read_text())["best_epoch"]


# -- relocatable -------------------------------------------------------------------------------------------------


def _min_dice(trial: Path) -> None:
    """Select the *lowest* val/dice: the best epoch is early and later epochs are worse, the case the absolute
    paths broke (a resumed trial forgot its best score and took the next epoch as best)."""
    config = json.loads((trial / "config.json").read_text())
    config["objective"] = {"metric": "val/dice", "mode": "min"}
    (trial / "config.json").write_text(json.dumps(config))


def test_moved_trial_resumes_with_its_best_checkpoint_and_score(tmp_path: Path, data_root: Path) -> None:
    straight = make_trial(tmp_path / "straight", data_root, max_epochs=4)
    _min_dice(straight)
    expected = train_trial(straight, model_factory=tiny_factory)
    assert expected["best_epoch"] < 3  # the best epoch falls before the move

    trial = make_trial(tmp_path / "old", data_root, max_epochs=2)
    _min_dice(trial)
    train_trial(trial, model_factory=tiny_factory)
    (tmp_path / "new").mkdir()
    moved = Path(shutil.move(str(tmp_path / "old" / "trials"), str(tmp_path / "new" / "trials"))) / trial.name
    set_train(moved, max_epochs=4)
    metrics = train_trial(moved, model_factory=tiny_factory)
    assert not (tmp_path / "old" / "trials").exists()
    for key in ("best_epoch", "val/dice", "test/dice", "epochs"):
        assert metrics[key] == expected[key], key
    assert sorted(p.name for p in ckpt_dir(moved).iterdir()) == ["best.ckpt", "last.ckpt", "last.prev.ckpt"]
    state = next(s for s in load_plain(ckpt_dir(moved) / LAST)["callbacks"].values() if s.get("monitor"))
    assert state["best_model_path"] == "best.ckpt"
    straight_state = next(s for s in load_plain(ckpt_dir(straight) / LAST)["callbacks"].values() if s.get("monitor"))
    assert torch.equal(state["best_model_score"], straight_state["best_model_score"])


def test_absolute_paths_of_older_checkpoints_are_rerooted(tmp_path: Path) -> None:
    old, new = tmp_path / "old" / "checkpoints", tmp_path / "new" / "checkpoints"
    new.mkdir(parents=True)
    callback = TrialCheckpoint(dirpath=new, filename="best", monitor="val/dice", mode="max", save_top_k=1)
    score = torch.tensor(0.75)
    callback.load_state_dict(
        {"monitor": "val/dice", "best_model_score": score, "best_model_path": f"{old}/best.ckpt",
         "current_score": score, "dirpath": str(old), "best_k_models": {f"{old}/best.ckpt": score},
         "kth_best_model_path": f"{old}/best.ckpt", "kth_value": score, "last_model_path": ""}
    )  # fmt: skip
    target = os.path.join(callback.dirpath, "best.ckpt")
    assert callback.best_model_path == target and callback.kth_best_model_path == target
    assert callback.best_k_models == {target: score} and callback.best_model_score == score
    assert callback.state_dict()["best_model_path"] == "best.ckpt"
    assert callback.state_key.startswith("ModelCheckpoint{")  # checkpoints of earlier runs restore this state


# -- no code from files ------------------------------------------------------------------------------------------


def _cris_state() -> dict[str, Any]:
    from vlsm_batch.models.cris import build_net

    return {k: v.clone() for k, v in build_net("tiny", 0.0).state_dict().items()}


def _snippet(message: str) -> str:
    match = re.search(r'python -c "(.+?)"', message)
    assert match, message
    return match.group(1)


def test_malicious_weights_are_refused_and_never_run(tmp_path: Path) -> None:
    pytest.importorskip("open_clip")
    from vlsm_batch.models.factory import create_model

    marker = tmp_path / "MARKER"
    zipped = tmp_path / "cris.pth"
    torch.save({"state_dict": _cris_state(), "extra": Payload(marker)}, zipped)
    legacy = tmp_path / "cris_legacy.pkl"
    legacy.write_bytes(pickle.dumps({"weight": Payload(marker)}))
    for path in (zipped, legacy):
        with pytest.raises(UnsafeCheckpointError) as err:
            create_model("cris-tiny", "coop", {}, weights=str(path))
        message = str(err.value)
        assert str(path) in message and "pickled Python objects" in message and "safetensors" in message
        assert isinstance(err.value, ModelLoadError) and "\n" not in message
    io_plugin = DurableCheckpointIO()
    with pytest.raises(UnsafeCheckpointError):
        io_plugin.load_checkpoint(zipped, weights_only=False)  # whatever Lightning asks
    assert not marker.exists()


def test_malicious_last_and_best_checkpoints_of_a_trial_are_refused(tmp_path: Path, data_root: Path) -> None:
    marker = tmp_path / "MARKER"
    trial = make_trial(tmp_path, data_root, max_epochs=2)
    train_trial(trial, model_factory=tiny_factory)
    best = ckpt_dir(trial) / "best.ckpt"
    good_best = best.read_bytes()
    torch.save({**load_plain(best), "hook": Payload(marker)}, best)
    with pytest.raises(UnsafeCheckpointError, match=r"best\.ckpt"):
        train_trial(trial, model_factory=tiny_factory)  # resumes (nothing left to fit), then evaluates best
    best.write_bytes(good_best)
    last = ckpt_dir(trial) / LAST
    torch.save({**load_plain(last), "hook": Payload(marker)}, last)
    set_train(trial, max_epochs=3)
    with pytest.raises(UnsafeCheckpointError) as err:
        train_trial(trial, model_factory=tiny_factory)
    assert str(last) in str(err.value) and "Delete it" in str(err.value)
    assert not marker.exists()


def test_torchscript_is_refused_and_the_suggested_conversion_works(tmp_path: Path) -> None:
    scripted = torch.jit.script(torch.nn.Linear(3, 2))
    path = tmp_path / "RN50.pt"
    torch.jit.save(scripted, str(path))
    with pytest.raises(UnsafeCheckpointError, match="TorchScript") as err:
        read_state_dict(path)
    subprocess.run([sys.executable, "-c", _snippet(str(err.value))], check=True, timeout=120)
    converted = read_state_dict(tmp_path / "RN50.safetensors")
    assert converted.keys() == {"weight", "bias"} and torch.equal(converted["weight"], scripted.weight)


def test_a_checkpoint_with_foreign_objects_converts_with_the_suggested_snippet(tmp_path: Path) -> None:
    pytest.importorskip("open_clip")
    import argparse

    from vlsm_batch.models.factory import create_model

    state = _cris_state()
    path = tmp_path / "cris_best.pth"  # as training scripts save: weights plus their argparse namespace
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "args": argparse.Namespace(lr=1)}, path)
    with pytest.raises(UnsafeCheckpointError, match="argparse") as err:
        create_model("cris-tiny", "coop", {}, weights=str(path))
    subprocess.run([sys.executable, "-c", _snippet(str(err.value))], check=True, timeout=120)
    model = create_model("cris-tiny", "coop", {}, weights=str(tmp_path / "cris_best.safetensors"))
    for key, value in model.cris.state_dict().items():
        assert torch.equal(value, state[key]), key


# -- incomplete weights ------------------------------------------------------------------------------------------


def test_partial_cris_weights_are_refused_naming_the_missing_keys(tmp_path: Path) -> None:
    pytest.importorskip("open_clip")
    from safetensors.torch import save_file

    from vlsm_batch.models.factory import create_model

    state = _cris_state()
    partial = {k: v.contiguous() for k, v in state.items() if not k.startswith(("decoder.", "proj."))}
    save_file(partial, str(tmp_path / "partial.safetensors"))
    with pytest.raises(CheckpointMismatchError) as err:
        create_model("cris-tiny", "coop", {}, weights=str(tmp_path / "partial.safetensors"))
    message = str(err.value)
    n_missing = sum(k.startswith(("decoder.", "proj.")) for k in state)
    assert f"missing keys ({n_missing}): decoder." in message and "unexpected keys" not in message
    torch.save({"epoch": 3}, tmp_path / "no_tensors.pth")
    with pytest.raises(CheckpointMismatchError, match="holds no tensors"):
        create_model("cris-tiny", "coop", {}, weights=str(tmp_path / "no_tensors.pth"))
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "full.safetensors"))
    model = create_model("cris-tiny", "coop", {}, weights=str(tmp_path / "full.safetensors"))
    assert torch.equal(model.cris.proj.txt.weight, state["proj.txt.weight"])


def test_clipseg_weights_without_a_decoder_are_refused(tmp_path: Path) -> None:
    from transformers import CLIPConfig, CLIPModel

    from vlsm_batch.models.clipseg import _random_model, build_clipseg, clipseg_tiny_config
    from vlsm_batch.models.tokenizer import offline_clip_tokenizer

    config = clipseg_tiny_config()
    clip_config = CLIPConfig(
        text_config=config.text_config.to_dict(),
        vision_config=config.vision_config.to_dict(),
        projection_dim=config.projection_dim,
    )
    plain_clip = tmp_path / "plain-clip"
    CLIPModel(clip_config).save_pretrained(plain_clip)
    offline_clip_tokenizer().save_pretrained(plain_clip)
    with pytest.raises(ModelLoadError) as err:
        build_clipseg("coop", {}, weights=str(plain_clip))
    message = str(err.value)
    assert str(plain_clip) in message and "plain CLIP checkpoint" in message
    assert re.search(r"\d+ missing weight\(s\)", message) and "decoder.film_add.bias" in message

    full = tmp_path / "clipseg"
    reference = _random_model(config)
    reference.save_pretrained(full)
    offline_clip_tokenizer().save_pretrained(full)
    model = build_clipseg("coop", {}, weights=str(full))
    assert torch.equal(model.clipseg.decoder.film_add.weight, reference.decoder.film_add.weight)

    marker = tmp_path / "MARKER"  # the same folder with a pickled pytorch_model.bin instead of safetensors
    (full / "model.safetensors").unlink()
    torch.save({**reference.state_dict(), "hook": Payload(marker)}, full / "pytorch_model.bin")
    with pytest.raises(UnsafeCheckpointError) as err:
        build_clipseg("coop", {}, weights=str(full))
    assert str(full / "pytorch_model.bin") in str(err.value) and str(full / "model.safetensors") in str(err.value)
    assert not marker.exists()


def test_checkpoint_io_module_never_unpickles(tmp_path: Path) -> None:
    """The trainer plugin is the one loader of trial checkpoints (resume and predict)."""
    marker = tmp_path / "MARKER"
    path = tmp_path / "x.ckpt"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {}, "bad": Payload(marker)}, f)
    with pytest.raises(UnsafeCheckpointError):
        checkpoint_io.read_checkpoint(path)
    problem = checkpoint_io.checkpoint_problem(tmp_path / "missing.ckpt")
    assert problem is not None and "cannot be read (FileNotFoundError" in problem
    assert not marker.exists()
