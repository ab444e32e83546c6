"""Trial expansion: determinism, prefix stability, dedup, ids that ignore parameters a strategy does not take."""

from __future__ import annotations

import dataclasses

from helpers import make_spec

from vlsm_batch.spec.types import Distribution, TrainSpec
from vlsm_batch.trials import expand
from vlsm_batch.trials.sampling import sample


def ids(spec):
    return [t.trial_id for t in expand(spec).trials]


def test_expansion_is_deterministic(tmp_path):
    a, b = make_spec(tmp_path), make_spec(tmp_path)
    assert ids(a) == ids(b)
    assert len(ids(a)) == 5
    assert len(set(ids(a))) == 5


def test_random_and_sobol_are_prefix_stable(tmp_path):
    for method in ("random", "sobol"):
        short = expand(make_spec(tmp_path, method=method, trials=20)).trials
        long = expand(make_spec(tmp_path, method=method, trials=40)).trials
        assert [t.trial_id for t in long[:20]] == [t.trial_id for t in short], method
        assert len({t.trial_id for t in long}) == 40


def test_values_respect_distributions(tmp_path):
    spec = make_spec(tmp_path, trials=200)
    for t in expand(spec).trials:
        assert 1e-4 <= t.params["lr"] <= 1e-2
        assert t.params["prompt_depth"] in {1, 2, 3, 4}
        assert isinstance(t.params["prompt_depth"], int)
    depths = {t.params["prompt_depth"] for t in expand(spec).trials}
    assert depths == {1, 2, 3, 4}


def test_sobol_covers_space_evenly():
    space = {"x": Distribution("uniform", 0.0, 1.0)}
    xs = sorted(p["x"] for p in sample("sobol", space, 16, seed=3))
    # each of 16 equal bins holds exactly one point of a scrambled Sobol sequence of length 16
    assert sorted(int(x * 16) for x in xs) == list(range(16))


def test_identical_configs_collapse(tmp_path):
    spec = make_spec(tmp_path, trials=30, space={"prompt_depth": Distribution("choice", choices=(1, 2))})
    trials = expand(spec).trials
    assert len(trials) == 2
    assert {t.params["prompt_depth"] for t in trials} == {1, 2}


def test_grid_is_the_cartesian_product(tmp_path):
    space = {"prompt_depth": Distribution("int", 1, 3), "lr": Distribution("choice", choices=(1e-3, 1e-2))}
    trials = expand(make_spec(tmp_path, method="grid", trials=None, space=space)).trials
    assert len(trials) == 6
    assert {(t.params["prompt_depth"], t.params["lr"]) for t in trials} == {
        (d, lr) for d in (1, 2, 3) for lr in (1e-3, 1e-2)
    }


def test_seeds_are_replicates(tmp_path):
    trials = expand(make_spec(tmp_path, seeds=(0, 1, 2), trials=4)).trials
    assert len(trials) == 12
    by_params = {}
    for t in trials:
        by_params.setdefault(repr(sorted(t.params.items())), set()).add(t.seed)
    assert all(s == {0, 1, 2} for s in by_params.values())


def test_id_ignores_parameters_the_strategy_does_not_take(tmp_path):
    base = make_spec(tmp_path)
    with_extra = make_spec(
        tmp_path,
        space={**base.search.space, "shared_dim": Distribution("choice", choices=(32, 64))},
        train=TrainSpec(max_epochs=2, min_epochs=1, batch_size=4, fixed_params={"ffn_dim": 1280}),
    )
    assert ids(base) == ids(with_extra)
    assert all("shared_dim" not in t.params for t in expand(with_extra).trials)
    # ...but a parameter it takes changes the id
    changed = make_spec(
        tmp_path, train=TrainSpec(max_epochs=2, min_epochs=1, batch_size=4, fixed_params={"num_context": 8})
    )
    assert set(ids(changed)).isdisjoint(ids(base))


def test_study_paths_do_not_change_ids(tmp_path):
    a = make_spec(tmp_path)
    b = dataclasses.replace(a, output_dir=tmp_path / "elsewhere", data_root=tmp_path / "d2", study="other")
    assert ids(a) == ids(b)


def test_per_strategy_space_and_defaults(tmp_path):
    spec = make_spec(
        tmp_path,
        models=("clipseg",),
        strategies=("coop", "shared_separate"),
        per_strategy={"shared_separate": {"shared_dim": Distribution("choice", choices=(32, 64))}},
    )
    cells = {c.strategy: c for c in expand(spec).cells}
    assert all("shared_dim" in t.params for t in cells["shared_separate"].trials)
    assert all("context_init" in t.params for t in cells["coop"].trials)
    assert all("context_init" not in t.params for t in cells["shared_separate"].trials)
    assert cells["coop"].unsupported is None and cells["shared_separate"].unsupported is None


def test_incompatible_cells_are_skipped_and_counted(tmp_path):
    spec = make_spec(tmp_path, models=("clipseg", "cris"), strategies=("coop", "vpt"))
    cells = expand(spec).cells
    skipped = [c for c in cells if c.skipped]
    assert [(c.model, c.strategy) for c in skipped] == [("cris", "vpt")]
    assert "convolutional image encoder" in skipped[0].skipped
    assert skipped[0].trials == []


def test_baselines_ignore_the_shared_space(tmp_path):
    spec = make_spec(tmp_path, strategies=("coop",), baselines=("zero_shot", "finetune"), seeds=(0, 1))
    cells = {c.strategy: c for c in expand(spec).cells}
    assert len(cells["zero_shot"].trials) == 1  # nothing to replicate without training
    assert len(cells["finetune"].trials) == 2  # one config x two seeds
    assert cells["finetune"].trials[0].params == {"lr": 2e-4, "weight_decay": 1e-3}
