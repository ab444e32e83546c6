"""``resources.pack`` in a study file, and which trials may share a pack (light: no torch)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from vlsm_batch.errors import SpecError
from vlsm_batch.jobs.packing import AUTO_MAX, group_packs, pack_key
from vlsm_batch.spec import load_spec
from vlsm_batch.trials import Trial, expand

SPEC = """\
study: packspec
output_dir: {out}/runs
data_root: {out}/data
seeds: [0, 1]
models: [clipseg-tiny]
datasets: [synthetic]
strategies: [coop, vpt]
baselines: [finetune]
search:
  method: sobol
  trials: 5
  seed: 0
  objective: {{metric: val/dice, mode: max}}
  space:
    lr: {{log_uniform: [1.0e-3, 1.0e-2]}}
    prompt_depth: {{int: [1, 3]}}
train: {{max_epochs: 2, batch_size: 4}}
resources:
  executor: local
  pack: {pack}
"""


def _spec(tmp_path: Path, pack: object) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC.format(out=tmp_path, pack=pack))
    return path


@pytest.mark.parametrize("bad", ["0", "-1", "big", "2.5", "100000", "true", "[2]"])
def test_bad_pack_values_are_refused_with_a_hint(tmp_path: Path, bad: str) -> None:
    with pytest.raises(SpecError) as err:
        load_spec(_spec(tmp_path, bad))
    text = str(err.value)
    assert "resources.pack" in text and "from 1 to 64" in text and '"auto"' in text
    assert ":20:" in text  # file:line of the value


@pytest.mark.parametrize(("value", "expected"), [("1", 1), ("4", 4), ("auto", "auto")])
def test_pack_values(tmp_path: Path, value: str, expected: object) -> None:
    assert load_spec(_spec(tmp_path, value)).resources.pack == expected


def test_packs_group_one_cell_and_seed(tmp_path: Path) -> None:
    """5 trials per (strategy, seed) in packs of 4: 4 + 1 each; seeds never share; finetune always alone."""
    spec = load_spec(_spec(tmp_path, 4))
    trials = expand(spec).runnable
    packs = group_packs(trials, spec.resources.pack)
    for pack in packs:
        assert len({pack_key(t) for t in pack}) == 1
        assert len({(t.strategy, t.seed) for t in pack}) == 1
    sizes = sorted(len(p) for p in packs if p[0].strategy != "finetune")
    assert sizes == [1, 1, 1, 1, 4, 4, 4, 4]
    assert all(len(p) == 1 for p in packs if p[0].strategy == "finetune")
    assert sum(len(p) for p in packs) == len(trials)
    assert group_packs(trials, 4) == packs  # deterministic: a resubmission launches the same groups


def test_auto_packs_up_to_the_cap(tmp_path: Path) -> None:
    spec = load_spec(_spec(tmp_path, "auto"))
    trials = [t for t in expand(spec).runnable if t.strategy == "coop" and t.seed == 0]
    many = [dataclasses.replace(trials[0], params={**trials[0].params, "lr": 1e-3 * (i + 1)}) for i in range(20)]
    assert [len(p) for p in group_packs(many, "auto")] == [AUTO_MAX, 20 - AUTO_MAX]


def test_train_settings_split_packs(tmp_path: Path) -> None:
    """A trial with other train settings (e.g. a resubmission with more epochs) sees other batches: another pack."""
    spec = load_spec(_spec(tmp_path, 8))
    a = next(t for t in expand(spec).runnable if t.strategy == "coop")
    b = Trial(**{**a.__dict__, "train": {**a.train, "max_epochs": 3}})
    assert len(group_packs([a, b], 8)) == 2
