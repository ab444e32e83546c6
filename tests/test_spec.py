"""load_spec end to end: valid specs build the typed result; each mistake is reported at its line and column."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vlsm_batch.errors import SpecError
from vlsm_batch.spec import Distribution, StudySpec, load_spec

REPO = Path(__file__).resolve().parents[1]

FULL = """\
# yaml-language-server: $schema=../schema/study.schema.json
study: quickstart
output_dir: runs/quickstart
data_root: ${VLSM_DATA:-data}
seeds: [0, 1]
models: [clipseg-tiny, clipseg]
datasets: [synthetic, kvasir_polyp]
strategies: [coop, cocoop, maple]
baselines: [zero_shot, finetune]
weights: {clipseg: "hf-hub:CIDAS/clipseg-rd64", clipseg-tiny: ./ckpt/tiny.pt}
search:
  method: random
  trials: 20
  seed: 3
  objective: {metric: val/dice, mode: max}
  space:
    lr: {log_uniform: [1.0e-5, 5.0e-3]}
    weight_decay: {uniform: [0, 1e-2]}
    prompt_depth: {int: [1, 4]}
  per_strategy:
    cocoop: {intermediate_dim: {choice: [32, 64, 96, 128]}, use_lora: {choice: [true, false]}}
    maple:
      intermediate_dim: {choice: [32, null]}
train:
  max_epochs: 50
  min_epochs: 5
  batch_size: 16
  precision: bf16-mixed
  early_stopping: {monitor: val/loss, patience: 7, min_delta: 0}
  num_workers: 2
  num_context: 4
  context_init: "${HOME}"  # 4 CLIP tokens, as num_context says
  learnable_upsampler: true
resources:
  executor: local
  gpus_per_task: 1
  cpus_per_task: 4
  mem_gb: 16
  timeout_min: 60
  slurm: {partition: gpu, account: null, qos: normal, constraint: a100|h100, extra: {exclude: "node[01-03]"},
          array_throttle: 8}
  local: {max_parallel: 2}
"""

HEAD = "study: t\nmodels: [clipseg-tiny]\ndatasets: [synthetic]\nstrategies: [coop]\n"  # lines 1-4


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def errors_of(path: Path, **kw: object) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_spec(path, env={}, **kw)  # type: ignore[arg-type]
    return info.value.errors


# -- valid specs -------------------------------------------------------------------------------------------------


def _repo_specs() -> list[Path]:
    return sorted((REPO / "specs").glob("*.yaml")) + sorted((REPO / "specs").glob("*.yml"))


@pytest.mark.parametrize("path", _repo_specs(), ids=lambda p: p.name)
def test_repo_specs_validate(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CRIS_WEIGHTS", raising=False)
    (tmp_path / "pretrain").mkdir()
    (tmp_path / "pretrain" / "cris_best_single.pth").write_bytes(b"")  # full_benchmark's local CRIS checkpoint
    spec = load_spec(path, base_dir=tmp_path)
    assert spec.models and spec.datasets


def test_full_fixture_builds_typed_spec(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "tiny.pt").write_bytes(b"")  # a local weights path must exist
    spec = load_spec(path, env={"VLSM_DATA": "/data/vlsm"}, base_dir=tmp_path)
    assert isinstance(spec, StudySpec)
    assert spec.path == path and spec.text == FULL
    assert spec.output_dir == tmp_path / "runs" / "quickstart"
    assert spec.data_root == Path("/data/vlsm")
    assert spec.seeds == (0, 1)
    assert spec.models == ("clipseg-tiny", "clipseg")
    assert spec.strategies == ("coop", "cocoop", "maple") and spec.baselines == ("zero_shot", "finetune")
    assert spec.weights == {"clipseg": "CIDAS/clipseg-rd64", "clipseg-tiny": str(tmp_path / "ckpt" / "tiny.pt")}

    s = spec.search
    assert (s.method, s.trials, s.seed, s.objective_metric, s.objective_mode) == ("random", 20, 3, "val/dice", "max")
    assert s.space["lr"] == Distribution("log_uniform", 1e-5, 5e-3)
    assert s.space["weight_decay"] == Distribution("uniform", 0.0, 0.01)
    assert isinstance(s.space["weight_decay"].low, float)
    assert s.space["prompt_depth"] == Distribution("int", 1, 4)
    assert s.per_strategy["cocoop"]["use_lora"] == Distribution("choice", choices=(True, False))
    assert s.per_strategy["maple"]["intermediate_dim"].choices == (32, None)

    t = spec.train
    assert (t.max_epochs, t.min_epochs, t.batch_size, t.precision, t.num_workers) == (50, 5, 16, "bf16-mixed", 2)
    assert (t.early_stopping_monitor, t.early_stopping_patience, t.early_stopping_min_delta) == ("val/loss", 7, 0.0)
    assert isinstance(t.early_stopping_min_delta, float)
    # `$` outside path fields is never expanded.
    assert t.fixed_params == {"num_context": 4, "context_init": "${HOME}", "learnable_upsampler": True}

    r = spec.resources
    assert (r.executor, r.gpus_per_task, r.cpus_per_task, r.mem_gb, r.timeout_min) == ("local", 1, 4, 16, 60)
    assert (r.array_parallelism, r.max_parallel) == (8, 2)
    assert (r.slurm.partition, r.slurm.account, r.slurm.qos, r.slurm.constraint) == ("gpu", None, "normal", "a100|h100")
    assert r.slurm.extra == {"exclude": "node[01-03]"}
    assert spec.notes == ()


def test_defaults_are_filled(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, "study: mini\nmodels: [clipseg]\ndatasets: [synthetic]\nbaselines: [zero_shot]\n"),
                     env={}, base_dir=tmp_path)  # fmt: skip
    assert spec.output_dir == tmp_path / "runs" / "mini"
    assert spec.data_root == tmp_path / "data"
    assert spec.seeds == (0,) and spec.strategies == () and spec.weights == {}
    s = spec.search
    assert (s.method, s.trials, s.seed, s.objective_metric, s.objective_mode) == ("grid", None, 0, "val/dice", "max")
    assert s.space == {} and s.per_strategy == {}
    assert spec.train.max_epochs == 100 and spec.train.min_epochs == 10 and spec.train.fixed_params == {}
    assert spec.resources.executor == "auto" and spec.resources.slurm.partition is None


def test_min_epochs_defaults_within_max_epochs(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, HEAD + "train: {max_epochs: 3}\n"), env={}, base_dir=tmp_path)
    assert spec.train.min_epochs == 3


def test_objective_mode_follows_metric(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, HEAD + "search: {objective: {metric: val/loss}}\n"), env={})
    assert spec.search.objective_mode == "min"


def test_float_params_normalised(tmp_path: Path) -> None:
    text = HEAD + "search: {method: sobol, trials: 8, space: {lr: {choice: [1, 0.5]}}}\ntrain: {weight_decay: 0}\n"
    spec = load_spec(write(tmp_path, text), env={})
    assert spec.search.space["lr"].choices == (1.0, 0.5)
    assert type(spec.search.space["lr"].choices[0]) is float
    assert type(spec.train.fixed_params["weight_decay"]) is float


def test_env_expansion_and_relative_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "cris.pt").write_text("")
    (tmp_path / "org" / "local").mkdir(parents=True)
    for weights in ("pretrain/cris.pth", "a/b/c", "b/a/b/c", "home/c.ckpt"):  # local weights paths must exist
        (tmp_path / weights).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / weights).write_bytes(b"")
    scratch = tmp_path / "scratch" / "me"
    text = (
        "study: t\nmodels: [clipseg, cris, clipseg-tiny, cris-tiny]\ndatasets: [synthetic]\nstrategies: [coop]\n"
        "output_dir: ${OUT}/../study\ndata_root: ~/d\n"
        "weights: {clipseg: '${W:-CIDAS/clipseg-rd64}', cris: '${CRIS:-pretrain/cris.pth}', clipseg-tiny: org/local,"
        " cris-tiny: a/b/c}\n"
    )
    spec = load_spec(write(tmp_path, text), env={"OUT": str(scratch / "x")}, base_dir=tmp_path)
    assert spec.output_dir == scratch / "study"
    assert spec.data_root == home / "d"
    assert spec.weights == {
        "clipseg": "CIDAS/clipseg-rd64",  # hub id, also as a ${...} default
        "cris": str(tmp_path / "pretrain" / "cris.pth"),  # checkpoint suffix: a path
        "clipseg-tiny": str(tmp_path / "org" / "local"),  # exists: a path
        "cris-tiny": str(tmp_path / "a" / "b" / "c"),  # two slashes: a path
    }
    env = {"OUT": "rel", "W": "", "CRIS": "~/c.ckpt"}
    spec = load_spec(write(tmp_path, text), env=env, base_dir=tmp_path / "b")
    assert spec.output_dir == tmp_path / "b" / "study"
    assert spec.weights["clipseg"] == "CIDAS/clipseg-rd64"  # empty W uses the default
    assert spec.weights["cris"] == str(home / "c.ckpt")


def test_default_base_dir_is_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, HEAD)
    monkeypatch.chdir(tmp_path)
    assert load_spec("spec.yaml", env={}).output_dir == tmp_path / "runs" / "t"


def test_notes_for_partial_pairs_and_unused_params(tmp_path: Path) -> None:
    text = (
        "study: t\nmodels: [cris, clipseg]\ndatasets: [synthetic]\nstrategies: [coop, vpt]\n"
        "search:\n  space:\n    shared_dim: {choice: [32]}\ntrain: {dropout: 0.1}\n"
    )
    spec = load_spec(write(tmp_path, text), env={})
    assert spec.notes == (
        "vpt skipped for cris: cris has a convolutional image encoder: visual prompt tokens do not apply",
        "search.space.shared_dim: no listed strategy takes shared_dim; ignored",
        "train.dropout: no listed strategy takes dropout; ignored",
    )


# -- bad specs: (id, text, line, col, fragment) ------------------------------------------------------------------

# fmt: off
BAD = [
    ("python-tag", HEAD + "train:\n  context_init: !!python/object/apply:os.system ['id']\n", 6, 17,
     "explicit YAML tag '!!python/object/apply:os.system' is not allowed"),
    ("custom-tag", HEAD + "search: !foo {}\n", 5, 9, "explicit YAML tag '!foo'"),
    ("str-tag", HEAD + "train:\n  batch_size: !!str 8\n", 6, 15, "explicit YAML tag '!!str'"),
    ("duplicate-key", HEAD + "train:\n  batch_size: 8\n  batch_size: 16\n", 7, 3,
     "duplicate key 'batch_size' (first at line 6, col 3)"),
    ("syntax", HEAD + "train: {batch_size: 8\nresources: {}\n", 6, 10, "YAML syntax error"),
    ("bad-indent", HEAD + "train:\n  batch_size: 8\n   num_workers: 1\n", 7, 15, "YAML syntax error"),
    ("unknown-top-key", HEAD + "serch: {}\n", 5, 1, "serch: unknown key 'serch'; did you mean 'search'?"),
    ("unknown-strategy", "study: t\nmodels: [clipseg]\ndatasets: [synthetic]\nstrategies: [coop, vpt, mapel]\n",
     4, 25, "strategies[2]: unknown strategy 'mapel'; did you mean 'maple'?"),
    ("unknown-model", "study: t\nmodels: [clipseg, clipsek]\ndatasets: [synthetic]\nstrategies: [coop]\n", 2, 19,
     "models[1]: unknown model 'clipsek'; did you mean 'clipseg'"),
    ("unknown-dataset", "study: t\nmodels: [clipseg]\ndatasets:\n  - synthetic\n  - kvasir\nstrategies: [coop]\n",
     5, 5, "datasets[1]: unknown dataset 'kvasir'; did you mean 'kvasir_polyp'?"),
    ("unknown-param", HEAD + "search:\n  space:\n    lrr: {uniform: [0.1, 0.2]}\n", 7, 5,
     "search.space.lrr: unknown parameter 'lrr'; did you mean 'lr'?"),
    ("unknown-distribution", HEAD + "search:\n  space:\n    lr: {loguniform: [0.1, 0.2]}\n", 7, 10,
     "unknown distribution 'loguniform'; did you mean 'log_uniform'"),
    ("log-uniform-low", HEAD + "search:\n  method: random\n  trials: 4\n  space:\n    lr: {log_uniform: [0, 0.1]}\n",
     9, 24, "log_uniform needs low > 0"),
    ("low-above-high", HEAD + "search:\n  method: random\n  trials: 4\n  space:\n    lr: {uniform: [0.1, 0.01]}\n",
     9, 19, "low must be below high, got [0.1, 0.01]"),
    ("int-low-equals-high", HEAD + "search:\n  space:\n    num_context: {int: [4, 4]}\n", 7, 24,
     "low must be below high"),
    ("param-out-of-range", HEAD + "search:\n  method: random\n  trials: 4\n  space:\n    lr: {uniform: [0.1, 2]}\n",
     9, 25, "lr must be <= 1, got 2"),
    ("prompt-depth-too-deep", HEAD + "search:\n  space:\n    prompt_depth: {int: [1, 11]}\n", 7, 29,
     "prompt_depth 11 is deeper than clipseg-tiny (max_prompt_depth 4)"),
    ("fixed-depth-too-deep", HEAD + "train:\n  prompt_depth: 5\n", 6, 17, "max_prompt_depth 4"),
    ("objective-metric", HEAD + "search:\n  objective: {metric: val/dise}\n", 6, 23,
     "unknown objective metric 'val/dise'; did you mean 'val/dice'"),
    ("objective-mode", HEAD + "search:\n  objective: {metric: val/loss, mode: max}\n", 6, 39,
     "val/loss is minimized, mode max contradicts it"),
    ("grid-log-uniform", HEAD + "search:\n  method: grid\n  space:\n    lr: {log_uniform: [1.0e-5, 1.0e-3]}\n",
     8, 10, "grid search cannot enumerate log_uniform; list the values to try with {choice: [...]}"),
    ("grid-trials", HEAD + "search:\n  method: grid\n  trials: 5\n", 7, 11, "grid search takes no trials"),
    ("grid-too-big", HEAD + "search:\n  method: grid\n  space:\n    num_context: {int: [1, 32]}\n"
     "    weight_decay: {choice: [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]}\n"
     "    lr: {choice: [" + ", ".join(f"{i}.0e-5" for i in range(1, 400)) + "]}\n",
     6, 11, "grid for coop has 127,680 points per cell (max 100,000)"),
    ("random-without-trials", HEAD + "search:\n  method: random\n", 6, 11,
     "search.trials: required for method random"),
    ("unknown-method", HEAD + "search: {method: bayes, trials: 3}\n", 5, 18,
     "'bayes' is not allowed; valid: grid, random, sobol, tpe"),
    ("per-strategy-param", HEAD + "search:\n  per_strategy:\n    coop: {shared_dim: {choice: [32]}}\n", 7, 12,
     "coop does not take 'shared_dim' (it takes: lr, weight_decay"),
    ("per-strategy-unlisted", HEAD + "search:\n  per_strategy:\n    maple: {}\n", 7, 5,
     "maple is not in strategies or baselines"),
    ("unset-env", HEAD + "output_dir: runs/x\ndata_root: ${VLSM_NOT_SET}/x\n", 6, 12,
     "data_root: environment variable VLSM_NOT_SET is not set"),
    ("empty-path", HEAD + "output_dir: ${EMPTY:-}\n", 5, 13, "output_dir: expands to an empty path"),
    ("bare-dollar", HEAD + "output_dir: $HOME/runs\n", 5, 13, "a '$' in a path must start ${VAR}"),
    ("sbatch-injection", HEAD + 'resources:\n  slurm:\n    partition: "gpu\\n#SBATCH --foo"\n', 7, 16,
     "resources.slurm.partition: 'gpu\\n#SBATCH --foo': character '\\n' is not allowed in an sbatch value; "
     "allowed: letters, digits and _ . , : = @ + % / - [ ] & | *"),
    ("sbatch-space", HEAD + "resources:\n  slurm: {account: 'a --qos=high'}\n", 6, 20, "character ' ' is not allowed"),
    ("slurm-extra-key", HEAD + "resources:\n  slurm:\n    extra: {time: '1:00'}\n", 7, 13,
     "resources.slurm.extra.time: unknown sbatch option 'time'; valid: cpus_per_gpu, exclude"),
    ("min-above-max-epochs", HEAD + "train:\n  max_epochs: 5\n  min_epochs: 6\n", 7, 15,
     "min_epochs 6 is above max_epochs 5"),
    ("strategy-fits-no-model", "study: t\nmodels: [cris]\ndatasets: [synthetic]\nstrategies: [coop, vpt]\n", 4, 20,
     "strategies[1]: vpt cannot run on any listed model: cris has a convolutional image encoder: "
     "visual prompt tokens do not apply"),
    ("baseline-as-strategy", "study: t\nmodels: [clipseg]\ndatasets: [synthetic]\nstrategies: [coop, finetune]\n",
     4, 20, "finetune is a baseline, not a prompt strategy; move it to baselines"),
    ("strategy-as-baseline", HEAD + "baselines: [zero_shot, maple]\n", 5, 24,
     "maple is a prompt strategy, not a baseline; move it to strategies"),
    ("nothing-to-run", "study: t\nmodels: [clipseg]\ndatasets: [synthetic]\nstrategies: []\n", 4, 13,
     "nothing to run"),
    ("wrong-type", HEAD + 'train:\n  batch_size: "32"\n', 6, 15,
     "train.batch_size: expected an integer, got the string '32'; write it without quotes"),
    ("float-for-int", HEAD + "train:\n  max_epochs: 10.0\n", 6, 15, "expected an integer, got the number 10.0"),
    ("list-expected", "study: t\nmodels: clipseg\ndatasets: [synthetic]\nstrategies: [coop]\n", 2, 9,
     "expected a list, got the string 'clipseg'; write [clipseg]"),
    ("missing-required", "study: t\nmodels: [clipseg]\nstrategies: [coop]\n", 1, 1,
     "datasets: missing required key 'datasets'"),
    ("bad-study-name", "study: my study\nmodels: [clipseg]\ndatasets: [synthetic]\nstrategies: [coop]\n", 1, 8,
     "invalid study name 'my study'"),
    ("duplicate-item", "study: t\nmodels: [clipseg, clipseg]\ndatasets: [synthetic]\nstrategies: [coop]\n", 2, 19,
     "models[1]: 'clipseg' is listed twice (first at [0])"),
    ("two-distributions", HEAD + "search:\n  space:\n    lr: {uniform: [0.1, 0.2], choice: [0.1]}\n", 7, 9,
     "give exactly one of log_uniform, uniform, int, choice"),
    ("pair-length", HEAD + "search:\n  space:\n    lr: {uniform: [0.1]}\n", 7, 19,
     "expected two values [low, high], got 1"),
    ("fixed-choice-param", HEAD + "train:\n  num_heads: 3\n", 6, 14, "num_heads must be one of 1, 2, 4"),
    ("int-for-choice-param", "study: t\nmodels: [clipseg]\ndatasets: [synthetic]\nstrategies: [shared_attn]\n"
     "search:\n  space:\n    num_heads: {int: [1, 8]}\n", 7, 17, "num_heads is a fixed-choice parameter: use choice"),
    ("choice-wrong-kind", HEAD + "search:\n  space:\n    context_init: {choice: [a photo, 3]}\n", 7, 38,
     "context_init takes text, got the integer 3"),
    ("null-not-allowed", HEAD + "search:\n  space:\n    prompt_depth: {choice: [1, null]}\n", 7, 32,
     "prompt_depth cannot be null"),
    ("fixed-and-searched", HEAD + "search:\n  space:\n    lr: {choice: [0.1]}\ntrain:\n  lr: 0.1\n", 9, 3,
     "lr is fixed here and searched in search.space"),
    ("weights-unlisted-model", HEAD + "weights: {cris: /x.pt}\n", 5, 11, "weights for 'cris', which is not in models"),
    ("early-stopping-monitor", HEAD + "train:\n  early_stopping: {monitor: val/dcie}\n", 6, 29,
     "unknown metric 'val/dcie'; did you mean 'val/dice'"),
    ("merge-key", HEAD + "x: &x {a: 1}\ntrain:\n  <<: *x\n", 7, 3, "merge keys (<<) are not supported"),
    ("empty-file", "", 1, 1, "the file is empty"),
]
# fmt: on


@pytest.mark.parametrize(("text", "line", "col", "fragment"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_spec_is_reported_at_its_position(tmp_path: Path, text: str, line: int, col: int, fragment: str) -> None:
    path = write(tmp_path, text, "bad.yaml")
    errors = errors_of(path)
    prefix = f"{path}:{line}:{col}: "
    hits = [e for e in errors if e.startswith(prefix) and fragment in e]
    assert hits, f"want {prefix}...{fragment!r}, got:\n" + "\n".join(errors)


def test_file_name_is_shown_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, HEAD + "serch: {}\n")
    monkeypatch.chdir(tmp_path)
    (err,) = errors_of(Path("spec.yaml"))
    assert err.startswith("spec.yaml:5:1: ")


def test_all_errors_are_reported_in_file_order(tmp_path: Path) -> None:
    text = (
        "study: t t\n"  # 1 bad name
        "modelz: [clipseg]\n"  # 2 unknown key (and models missing)
        "datasets: [synthetic, kvasirr]\n"  # 3 unknown dataset
        "strategies: [mapel, vpt]\n"  # 4 unknown strategy
        "search:\n"
        "  method: random\n"  # 6 trials missing
        "  space:\n"
        "    lr: {log_uniform: [0, 1]}\n"  # 8 low <= 0
        "train: {max_epochs: 2, min_epochs: 3, batch_size: '8'}\n"  # 9 min > max, type
        "resources: {slurm: {qos: 'a;b'}}\n"  # 10 injection
        "output_dir: ${NOPE}\n"  # 11 unset env
    )
    path = write(tmp_path, text)
    errors = errors_of(path)
    lines = [int(e.split(":")[1]) for e in errors]
    assert lines == sorted(lines)
    expected = [
        (1, "models: missing required key"),
        (1, "invalid study name"),
        (2, "unknown key 'modelz'; did you mean 'models'?"),
        (3, "unknown dataset 'kvasirr'"),
        (4, "unknown strategy 'mapel'"),
        (6, "required for method random"),
        (8, "log_uniform needs low > 0"),
        (9, "min_epochs 3 is above max_epochs 2"),
        (9, "batch_size: expected an integer"),
        (10, "character ';' is not allowed"),
        (11, "environment variable NOPE is not set"),
    ]
    for line, fragment in expected:
        assert any(e.startswith(f"{path}:{line}:") and fragment in e for e in errors), (line, fragment, errors)
    assert len(errors) == len(expected)


def test_schema_errors_do_not_cascade(tmp_path: Path) -> None:
    """A value the schema rejected is not checked again by the semantic checks."""
    text = HEAD + "search:\n  method: random\n  trials: 0\n  space:\n    prompt_depth: {int: [1, 9.5]}\n"
    errors = errors_of(write(tmp_path, text))
    assert len(errors) == 2, errors
    assert "must be >= 1, got 0" in errors[0]
    assert "expected an integer, got the number 9.5" in errors[1]


def test_unreadable_file(tmp_path: Path) -> None:
    (err,) = errors_of(tmp_path / "missing.yaml")
    assert err.startswith(f"{tmp_path / 'missing.yaml'}: cannot read study file")


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"study: t\nnote: caf\xe9\n")
    (err,) = errors_of(path)
    assert err.startswith(f"{path}:2:10: not UTF-8")


def test_load_spec_does_not_import_torch(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "tiny.pt").write_bytes(b"")
    code = (
        "import sys\n"
        "from vlsm_batch.spec import load_spec\n"
        f"load_spec({str(path)!r}, env={{}})\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "assert 'lightning' not in sys.modules and 'transformers' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)


JUNK = ["null", "{a: 1}", "x y", "-1", "1.5", "[{}, ${X}]"]


def test_any_junk_value_gives_spec_error_not_a_crash(tmp_path: Path) -> None:
    """Replacing any value of the full fixture by junk yields SpecError (or a valid spec), never another exception."""
    lines = FULL.splitlines()
    for i, line in enumerate(lines):
        if ":" not in line or line.lstrip().startswith("#"):
            continue
        key = line.split(":", 1)[0]
        for junk in JUNK:
            text = "\n".join([*lines[:i], f"{key}: {junk}", *lines[i + 1 :]]) + "\n"
            try:
                load_spec(write(tmp_path, text), env={}, base_dir=tmp_path)
            except SpecError as exc:
                assert exc.errors and all(e.startswith(str(tmp_path)) for e in exc.errors), (text, exc.errors)
