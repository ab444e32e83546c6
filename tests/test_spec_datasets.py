"""Datasets declared in the spec and the study's prompt key: validation, trial identity, training on one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlsm_batch.errors import SpecError
from vlsm_batch.jobs.study import write_study
from vlsm_batch.spec import load_spec
from vlsm_batch.trials import expand

BASE = "study: t\nmodels: [clipseg-tiny]\nstrategies: [coop]\n"  # lines 1-3


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


def errors(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(SpecError) as exc:
        load_spec(write(tmp_path, text), base_dir=tmp_path)
    return exc.value.errors


CUSTOM = BASE + (
    "datasets: [mine, kvasir_polyp]\n"  # 4
    "custom_datasets:\n"  # 5
    "  mine:\n"  # 6
    "    path: ${MY_DATA:-extra}/mine\n"  # 7
    "    layout: medvlsm\n"  # 8
    "    prompt: blob\n"  # 9
    "    domain: medical\n"  # 10
    "    modality: synthetic\n"  # 11
)


def test_custom_dataset_builds_and_resolves_its_path(tmp_path):
    spec = load_spec(write(tmp_path, CUSTOM), base_dir=tmp_path, env={})
    mine = spec.custom_datasets["mine"]
    assert mine.path == tmp_path / "extra" / "mine"
    assert (mine.layout, mine.prompt, mine.domain) == ("medvlsm", "blob", "medical")
    assert spec.prompt_key == "p1"


# fmt: off
BAD = [
    ("shadows-catalog", BASE + "datasets: [isic]\ncustom_datasets:\n"
     "  isic: {path: x, layout: medvlsm, domain: medical}\n", 6, 3, "'isic' is a catalog dataset"),
    ("both-prompts", BASE + "datasets: [m]\ncustom_datasets:\n  m: {path: x, layout: medvlsm, domain: medical, "
     "prompt: a, prompt_key: p2}\n", 6, 58, "give either prompt (fixed) or prompt_key"),
    ("image-dir-prompt", BASE + "datasets: [m]\ncustom_datasets:\n  m: {path: x, layout: image_dir, domain: natural, "
     "prompt: car}\n", 6, 60, "takes its prompt from the class folder name"),
    ("bad-layout", BASE + "datasets: [m]\ncustom_datasets:\n  m: {path: x, layout: coco, domain: natural}\n",
     6, 24, "'coco' is not allowed; valid: camus, chexlocalize, image_dir, medvlsm"),
    ("missing-path", BASE + "datasets: [m]\ncustom_datasets:\n  m: {layout: medvlsm, domain: medical}\n",
     6, 3, "missing required key 'path'"),
    ("bad-prompt-key", BASE + "datasets: [isic]\nprompt_key: prompt1\n", 5, 13, "prompt_key"),
    ("undeclared", BASE + "datasets: [mien]\ncustom_datasets:\n  mine: {path: x, layout: medvlsm, domain: medical}\n",
     4, 12, "unknown dataset 'mien'; did you mean 'mine'?"),
    ("unset-env", BASE + "datasets: [m]\ncustom_datasets:\n  m:\n    path: ${NOPE}/m\n    layout: medvlsm\n"
     "    domain: medical\n", 7, 11, "NOPE"),
]
# fmt: on


@pytest.mark.parametrize(("text", "line", "col", "fragment"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_dataset_specs(tmp_path, monkeypatch, text, line, col, fragment):
    monkeypatch.delenv("NOPE", raising=False)
    errs = errors(tmp_path, text)
    path = tmp_path / "spec.yaml"
    assert any(e.startswith(f"{path}:{line}:{col}: ") and fragment in e for e in errs), "\n".join(errs)


def test_prompt_key_changes_ids_only_when_not_the_default(tmp_path):
    plain = BASE + "datasets: [isic]\n"
    default = expand(load_spec(write(tmp_path, plain + "prompt_key: p1\n"), base_dir=tmp_path)).trials
    same = expand(load_spec(write(tmp_path, plain), base_dir=tmp_path)).trials
    other = expand(load_spec(write(tmp_path, plain + "prompt_key: p3\n"), base_dir=tmp_path)).trials
    assert [t.trial_id for t in default] == [t.trial_id for t in same]
    assert {t.trial_id for t in other}.isdisjoint(t.trial_id for t in same)
    assert other[0].data == {"prompt_key": "p3"} and same[0].data == {}


def test_custom_dataset_identity_ignores_its_path(tmp_path):
    a = expand(load_spec(write(tmp_path, CUSTOM), base_dir=tmp_path, env={"MY_DATA": "/a"})).trials
    b = expand(load_spec(write(tmp_path, CUSTOM), base_dir=tmp_path, env={"MY_DATA": "/b"})).trials
    assert [t.trial_id for t in a] == [t.trial_id for t in b]
    mine = next(t for t in a if t.dataset == "mine")
    want = {"layout": "medvlsm", "domain": "medical", "prompt_source": "fixed", "prompt": "blob"}
    assert mine.data == {"custom": want}


def test_trial_trains_on_a_declared_dataset(tmp_path):
    from vlsm_batch.datasets.synthetic import ensure_synthetic
    from vlsm_batch.training.entry import train_trial

    folder = ensure_synthetic(tmp_path / "extra")  # the real medvlsm layout, under a name of our own
    text = CUSTOM.replace("/mine", "/" + folder.name).replace("datasets: [mine, kvasir_polyp]", "datasets: [mine]")
    text += "train: {max_epochs: 1, min_epochs: 1, batch_size: 8}\nresources: {executor: local}\n"
    spec = load_spec(write(tmp_path, text), base_dir=tmp_path, env={})
    trials = expand(spec).trials
    layout = write_study(spec, trials[:1])
    trial_dir = layout.trial(trials[0].trial_id).root
    config = json.loads((trial_dir / "config.json").read_text())
    assert config["dataset_def"]["path"] == str(folder)
    assert config["prompt_key"] is None  # a fixed prompt, not an annotation key
    metrics = train_trial(trial_dir)
    assert metrics["epochs"] == 1 and metrics["n_test"] == 16
