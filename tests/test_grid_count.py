"""The grid size validate checks is the number of trials plan expands: baselines drop the shared space."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from vlsm_batch.errors import SpecError
from vlsm_batch.spec import checks, load_spec
from vlsm_batch.trials import expand

HEAD = "study: t\nmodels: [clipseg-tiny]\ndatasets: [synthetic]\nseeds: [0]\n"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


def test_a_big_shared_grid_does_not_count_for_baselines(tmp_path: Path) -> None:
    lrs = ", ".join(f"{i}.0e-5" for i in range(1, 401))
    wds = ", ".join(f"0.{i:03d}" for i in range(300))
    text = (
        HEAD
        + f"strategies: []\nbaselines: [finetune]\nsearch:\n  method: grid\n  space:\n    lr: {{choice: [{lrs}]}}\n"
    )
    text += f"    weight_decay: {{choice: [{wds}]}}\n"
    spec = load_spec(_write(tmp_path, text), env={})  # 120,000 shared points, none of them finetune's
    assert [len(c.trials) for c in expand(spec).cells] == [1]


def test_validate_counts_what_plan_expands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = HEAD + (
        "strategies: [coop]\nbaselines: [finetune]\nsearch:\n  method: grid\n  space:\n"
        "    lr: {choice: [1.0e-4, 1.0e-3, 1.0e-2]}\n"
        "  per_strategy:\n    finetune: {weight_decay: {choice: [0, 0.01]}}\n"
    )
    path = _write(tmp_path, text)
    per_cell = Counter({c.strategy: len(c.trials) for c in expand(load_spec(path, env={})).cells})
    assert per_cell == {"coop": 3, "finetune": 2}
    monkeypatch.setattr(checks, "MAX_GRID", 2)  # coop's 3 points now exceed the limit, finetune's 2 do not
    with pytest.raises(SpecError) as info:
        load_spec(path, env={})
    grid_errors = [e for e in info.value.errors if "points per cell" in e]
    assert len(grid_errors) == 1 and "grid for coop has 3 points per cell (max 2)" in grid_errors[0]
