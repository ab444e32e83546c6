"""Studies of real tiny trials for the pack tests: the same trials written twice, one copy to train alone and one
to train as a pack (imports torch through the training side only when a test trains)."""

from __future__ import annotations

import shutil
from pathlib import Path

from vlsm_batch.jobs.study import write_study
from vlsm_batch.spec import load_spec
from vlsm_batch.trials import expand


def pack_spec(
    out: Path,
    data: Path,
    strategy: str = "coop",
    model: str = "clipseg-tiny",
    trials: int = 3,
    epochs: int = 2,
    patience: int = 50,
    lr: tuple[float, float] = (3e-3, 3e-2),
    extra: str = "",
    pack: int | str = 1,
) -> str:
    """A sobol study of ``trials`` trials of one cell (lr and prompt depth differ, as in a real search)."""
    return f"""\
study: pack
output_dir: {out}
data_root: {data}
seeds: [0]
models: [{model}]
datasets: [synthetic]
strategies: [{strategy}]
search:
  method: sobol
  trials: {trials}
  seed: 0
  objective: {{metric: val/dice, mode: max}}
  space:
    lr: {{log_uniform: [{lr[0]}, {lr[1]}]}}
    prompt_depth: {{int: [1, 3]}}
train:
  max_epochs: {epochs}
  min_epochs: 1
  batch_size: 8
  precision: "32"
  early_stopping: {{monitor: val/loss, patience: {patience}, min_delta: 0.0}}
  num_context: 4
  learnable_upsampler: true
{extra}resources:
  executor: local
  pack: {pack}
"""


def twin_studies(tmp: Path, data: Path, **kw: object) -> tuple[list[Path], list[Path]]:
    """(solo trial dirs, pack trial dirs): the same trials (same ids and config.json) in two study folders."""
    solo_root, pack_root = tmp / "solo", tmp / "pack"
    spec_file = tmp / "spec.yaml"
    spec_file.write_text(pack_spec(solo_root, data, **kw))  # type: ignore[arg-type]
    spec = load_spec(spec_file)
    trials = expand(spec).runnable
    write_study(spec, trials)
    shutil.copytree(solo_root, pack_root)
    ids = [t.trial_id for t in trials]
    return [solo_root / "trials" / i for i in ids], [pack_root / "trials" / i for i in ids]
