"""Specs that validate used to accept but that could not run or that damaged things (issue 11, break 11).

Each case goes through the real CLI entry point (``vlsm-batch validate FILE``; a real subprocess where blocking,
memory or imports are the point) and must fail with exit 1 and a ``FILE:LINE:COL: key: message`` line.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from vlsm_batch.cli import main
from vlsm_batch.errors import SpecError
from vlsm_batch.spec import load_spec
from vlsm_batch.spec.schema import load_schema, pattern_matches
from vlsm_batch.spec.source import MAX_SPEC_BYTES

REPO = Path(__file__).resolve().parents[1]
HEAD = "study: t\nmodels: [clipseg-tiny]\ndatasets: [synthetic]\nstrategies: [coop]\n"  # lines 1-4
EXTRA_KEYS = [
    "exclude", "nodelist", "reservation", "gres", "mail_type", "mail_user", "licenses", "mem_per_gpu",
    "cpus_per_gpu", "wckey",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Default output_dir (runs/<study>) and data_root land in the test's folder; no site profiles leak in."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VLSM_SLURM_PROFILES", raising=False)


def validate(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str], name: str = "spec.yaml") -> list[str]:
    """Exit code 1 and the ``FILE:LINE:COL: ...`` lines of ``vlsm-batch validate``."""
    path = tmp_path / name
    path.write_text(text)
    assert main(["validate", str(path)]) == 1, "validate accepted it"
    err = capsys.readouterr().err
    return [line for line in err.splitlines() if re.match(rf"{re.escape(str(path))}:\d+:\d+: ", line)]


def assert_reported(lines: list[str], path: Path, line: int, fragment: str) -> None:
    hits = [e for e in lines if e.startswith(f"{path}:{line}:") and fragment in e]
    assert hits, f"want {path}:{line}:...{fragment!r}, got:\n" + "\n".join(lines)


def assert_valid(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> str:
    path = tmp_path / "ok.yaml"
    path.write_text(text)
    code = main(["validate", str(path)])
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The installed console script (the venv's ``vlsm-batch``), as a user runs it."""
    exe = Path(sys.executable).parent / "vlsm-batch"
    argv = [str(exe), *args] if exe.exists() else [sys.executable, "-m", "vlsm_batch", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


# -- 1. patterns match the whole value: a trailing newline is refused everywhere ------------------------------

# One case per field that has a pattern: (id, text, line of the value, fragment).
NEWLINE_CASES = [
    ("study", 'study: "t\\n"\nmodels: [clipseg-tiny]\ndatasets: [synthetic]\nstrategies: [coop]\n', 1,
     "invalid study name 't\\n'"),
    ("prompt_key", HEAD + 'prompt_key: "p1\\n"\n', 5, "invalid prompt key 'p1\\n'"),
    ("custom-dataset-name", HEAD + 'custom_datasets:\n  "mine\\n": {path: /x, layout: medvlsm, domain: medical}\n',
     6, "invalid dataset name 'mine\\n'"),
    ("custom-prompt_key",
     HEAD + 'custom_datasets:\n  mine: {path: /x, layout: medvlsm, domain: medical, prompt_key: "p2\\n"}\n', 6,
     "invalid prompt key 'p2\\n'"),
    *[(f"slurm-{key}", HEAD + f'resources:\n  slurm:\n    {key}: "gpu\\n"\n', 7,
       f"resources.slurm.{key}: 'gpu\\n': character '\\n' is not allowed")
      for key in ("profile", "partition", "account", "qos", "constraint")],
    *[(f"extra-{key}", HEAD + f'resources:\n  slurm:\n    extra:\n      {key}: "x\\n"\n', 8,
       f"resources.slurm.extra.{key}: 'x\\n': character '\\n' is not allowed") for key in EXTRA_KEYS],
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "line", "fragment"), [c[1:] for c in NEWLINE_CASES], ids=[c[0] for c in NEWLINE_CASES]
)
def test_trailing_newline_is_refused_in_every_pattern_field(tmp_path, capsys, text, line, fragment):
    lines = validate(tmp_path, text, capsys)
    assert_reported(lines, tmp_path / "spec.yaml", line, fragment)


def _pattern_sites(node: Any, where: str = "") -> list[tuple[str, str]]:
    """(schema location, pattern) of every ``pattern`` in the schema."""
    out = []
    if isinstance(node, dict):
        for key, sub in node.items():
            if key == "pattern" and isinstance(sub, str):
                out.append((where, sub))
            else:
                out += _pattern_sites(sub, f"{where}/{key}")
    elif isinstance(node, list):
        for i, sub in enumerate(node):
            out += _pattern_sites(sub, f"{where}/{i}")
    return out


EXAMPLES = {  # a valid value of every pattern in the schema
    "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$": "quick-start_1.0",
    "^p[0-9]+$": "p12",
    "^[a-z0-9][a-z0-9_-]{0,63}$": "my_data-1",
    "^[A-Za-z0-9_.-]{1,64}$": "example-site",
    "^[A-Za-z0-9_.,:=@+%/\\[\\]&|*-]{1,256}$": "a100|h100",
}


def test_every_schema_pattern_refuses_a_trailing_newline():
    sites = _pattern_sites(load_schema())
    assert len(sites) == 7, sites  # study, prompt_key x2, dataset names, profile, sbatchValue(OrNull): cases above
    for where, pattern in sites:
        example = EXAMPLES[pattern]  # a new pattern needs an example here and a case in NEWLINE_CASES
        assert pattern_matches(pattern, example), where
        for tail in ("\n", "\r\n", " \n"):
            assert not pattern_matches(pattern, example + tail), (where, tail)
    # why this is needed: Python's `$` (as plain jsonschema uses it) matches before a final newline
    assert Draft202012Validator({"pattern": "^p[0-9]+$"}).is_valid("p1\n")


def test_trailing_newline_in_a_profile_file_is_refused(tmp_path, capsys, monkeypatch):
    """The site's profile values go into #SBATCH lines too: the same whole-value rule."""
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "site.yaml").write_text('partition: "gpu\\n"\n')
    monkeypatch.setenv("VLSM_SLURM_PROFILES", str(profiles))
    lines = validate(tmp_path, HEAD + "resources:\n  slurm: {profile: site}\n", capsys)
    assert_reported(lines, tmp_path / "spec.yaml", 6, "partition: 'gpu\\n' has characters sbatch values may not use")


# -- 2. finite numbers only --------------------------------------------------------------------------------------

NUMBER_CASES = [
    ("min_delta-nan", HEAD + "train:\n  early_stopping: {min_delta: .nan}\n", 6,
     "train.early_stopping.min_delta: .nan is not a finite number"),
    ("min_delta-inf", HEAD + "train:\n  early_stopping:\n    min_delta: .inf\n", 7, ".inf is not a finite number"),
    ("fixed-lr-inf", HEAD + "train:\n  lr: .Inf\n", 6, "train.lr: .inf is not a finite number"),
    ("range-minus-inf", HEAD + "search:\n  method: random\n  trials: 2\n  space:\n    lr: {uniform: [-.inf, 0.1]}\n",
     9, "search.space.lr.uniform[0]: -.inf is not a finite number"),
    ("log-range-inf",
     HEAD + "search:\n  method: random\n  trials: 2\n  space:\n    lr: {log_uniform: [1.0e-5, .inf]}\n",
     9, "search.space.lr.log_uniform[1]: .inf is not a finite number"),
    ("choice-nan", HEAD + "search:\n  space:\n    weight_decay: {choice: [0.1, .NaN]}\n", 7,
     "search.space.weight_decay.choice[1]: .nan is not a finite number"),
    ("mem-inf", HEAD + "resources:\n  mem_gb: .inf\n", 6, "resources.mem_gb: .inf is not a finite number"),
    ("seed-nan", HEAD + "seeds: [.NAN]\n", 5, "seeds[0]: .nan is not a finite number"),
    ("huge-int", HEAD + "train:\n  early_stopping: {min_delta: 1" + "0" * 400 + "}\n", 6, "is too large"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "line", "fragment"), [c[1:] for c in NUMBER_CASES], ids=[c[0] for c in NUMBER_CASES])
def test_non_finite_numbers_are_refused(tmp_path, capsys, text, line, fragment):
    lines = validate(tmp_path, text, capsys)
    assert_reported(lines, tmp_path / "spec.yaml", line, fragment)
    assert len(lines) == 1, lines  # reported once, not again as a schema error


# -- 3. context_init must make num_context tokens ----------------------------------------------------------------

CONTEXT_CASES = [
    ("fixed", HEAD + "train:\n  num_context: 4\n  context_init: a photo\n", 7,
     "train.context_init: context_init 'a photo' is 2 CLIP tokens but num_context is 4 (train.num_context"),
    ("default-init-searched-count", HEAD + "search:\n  space:\n    num_context: {choice: [4, 8]}\n", 7,
     "the default context_init 'a photo of a' is 4 CLIP tokens but num_context can be 8 (search.space.num_context"),
    ("int-range", HEAD + "search:\n  space:\n    num_context: {int: [3, 5]}\ntrain: {context_init: a photo of a}\n",
     8, "is 4 CLIP tokens but num_context can be 3, 5"),
    ("per-strategy-choice", "study: t\nmodels: [clipseg-tiny]\ndatasets: [synthetic]\nstrategies: [coop, cocoop]\n"
     "search:\n  per_strategy:\n    cocoop:\n      context_init: {choice: [a photo of a, a photo of the polyp]}\n", 8,
     "context_init 'a photo of the polyp' is 6 CLIP tokens but num_context is 4 (the default num_context; "
     "strategies cocoop)"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "line", "fragment"), [c[1:] for c in CONTEXT_CASES], ids=[c[0] for c in CONTEXT_CASES]
)
def test_context_init_token_count_must_match_num_context(tmp_path, capsys, text, line, fragment):
    lines = validate(tmp_path, text, capsys)
    assert_reported(lines, tmp_path / "spec.yaml", line, fragment)
    assert "context_init: null for random init" in lines[0]


@pytest.mark.parametrize(
    "train",
    [
        "{num_context: 2, context_init: a photo}",
        "{num_context: 8, context_init: null}",
        "{num_context: 8, context_init: ''}",
        "{num_context: 6, context_init: a photo of the polyp}",
    ],
)
def test_matching_or_random_context_init_is_accepted(tmp_path, capsys, train):
    assert "ok (t:" in assert_valid(tmp_path, HEAD + f"train: {train}\n", capsys)


def test_token_count_equals_the_training_tokenizer():
    """count_tokens (no transformers) and the CLIPTokenizer a trial uses agree, unicode and special tokens too."""
    from vlsm_batch.models.tokenizer import count_tokens, offline_clip_tokenizer

    tok = offline_clip_tokenizer()
    texts = ["a photo of a", "A  Photo\tof\nthe", "  ", "polyp", "x <|endoftext|> y", "naïve café", "日本語 テキスト",
             "it's we'll", "123 4567", "!!!???...", "🎉🎉", "e\u0301", "ﬁ", "hello,world", "x" * 200]  # fmt: skip
    for text in texts:
        assert count_tokens(text) == len(tok(text, add_special_tokens=False)["input_ids"]), text


def test_validate_counts_tokens_without_torch_or_transformers(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(HEAD + "train:\n  num_context: 4\n  context_init: a photo\n")
    code = (
        "import sys\nfrom vlsm_batch.cli import main\n"
        f"assert main(['validate', {str(spec)!r}]) == 1\n"
        "heavy = [m for m in ('torch', 'transformers', 'lightning') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "is 2 CLIP tokens" in proc.stderr


# -- 4. the Slurm profile exists, and resources respect its limits -----------------------------------------------


def test_unknown_profile_lists_the_profiles_that_exist(tmp_path, capsys):
    lines = validate(tmp_path, HEAD + "resources:\n  slurm:\n    profile: nosuchprofile\n", capsys)
    assert_reported(lines, tmp_path / "spec.yaml", 7, "Slurm profile 'nosuchprofile' not found")
    assert "profiles that exist: example-site, local" in lines[0]


def _site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    profiles = tmp_path / "profiles"
    profiles.mkdir(exist_ok=True)
    (profiles / "site.yaml").write_text(text)
    monkeypatch.setenv("VLSM_SLURM_PROFILES", str(profiles))


def test_resources_respect_the_profile_limits(tmp_path, capsys, monkeypatch):
    _site(tmp_path, monkeypatch, "partition: gpu\nlimits: {mem_gb: 32, timeout_min: 60, cpus_per_task: 4}\n")
    text = HEAD + "resources:\n  executor: slurm\n  mem_gb: 64\n  timeout_min: 120\n  slurm: {profile: site}\n"
    lines = validate(tmp_path, text, capsys)
    path = tmp_path / "spec.yaml"
    assert_reported(lines, path, 7, "resources.mem_gb: mem_gb 64 GB exceeds the 32 GB Slurm profile 'site'")
    assert_reported(lines, path, 8, "timeout_min 120 min exceeds the 60 min Slurm profile 'site'")
    # cpus_per_task is not written: its default (8) is over the limit, reported at the profile
    assert_reported(lines, path, 9, "resources.cpus_per_task defaults to 8 cores, above the 4 cores")
    assert len(lines) == 3


def test_profile_limits_do_not_apply_to_a_local_run(tmp_path, capsys, monkeypatch):
    _site(tmp_path, monkeypatch, "limits: {mem_gb: 8}\n")
    assert_valid(tmp_path, HEAD + "resources: {executor: local, mem_gb: 64, slurm: {profile: site}}\n", capsys)
    assert "ok (t:" in assert_valid(tmp_path, HEAD + "resources: {mem_gb: 8, slurm: {profile: site}}\n", capsys)


def test_a_broken_profile_is_reported_at_the_profile_key(tmp_path, capsys, monkeypatch):
    _site(tmp_path, monkeypatch, "limits: {mem_gb: -1, disk_gb: 5}\n")
    lines = validate(tmp_path, HEAD + "resources:\n  slurm: {profile: site}\n", capsys)
    assert_reported(lines, tmp_path / "spec.yaml", 6, "Slurm profile 'site' is unusable")
    assert "limits.mem_gb: -1 is not a positive integer" in lines[0] and "limits.disk_gb" in lines[0]


# -- 5. resource bounds ------------------------------------------------------------------------------------------

BOUND_CASES = [
    ("timeout-over-30-days", "timeout_min: 43201", "must be <= 43200, got 43201 (30 days"),
    ("timeout-1e30-float", "timeout_min: 1e30", "expected an integer, got the number 1e+30"),
    ("timeout-1e30-int", "timeout_min: 1" + "0" * 30, "is too large"),
    ("mem", "mem_gb: 16385", "must be <= 16384, got 16385"),
    ("mem-float", "mem_gb: 1.5", "expected an integer, got the number 1.5"),
    ("cpus", "cpus_per_task: 1025", "must be <= 1024, got 1025"),
    ("gpus", "gpus_per_task: 17", "must be <= 16, got 17"),
    ("throttle", "array_parallelism: 100001", "must be <= 100000"),
    ("local", "local: {max_parallel: 1025}", "must be <= 1024"),
]


@pytest.mark.parametrize(("value", "fragment"), [c[1:] for c in BOUND_CASES], ids=[c[0] for c in BOUND_CASES])
def test_resources_have_stated_maxima(tmp_path, capsys, value, fragment):
    lines = validate(tmp_path, HEAD + f"resources:\n  {value}\n", capsys)
    assert_reported(lines, tmp_path / "spec.yaml", 6, fragment)


def test_schema_descriptions_state_the_maxima():
    resources = load_schema()["properties"]["resources"]["properties"]
    for key in ("timeout_min", "mem_gb", "cpus_per_task", "gpus_per_task", "array_parallelism"):
        assert str(resources[key]["maximum"]) in resources[key]["description"], key
    assert "30 days" in resources["timeout_min"]["description"]


# -- 6. output_dir is usable, and a folder that is not this study is never written into --------------------------


def _output_cases(tmp_path: Path) -> list[tuple[str, str]]:
    (tmp_path / "afile").write_text("mine\n")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "study.yaml").write_text("study: t\n# my own notes\n")  # the user's spec, no trials.jsonl
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("keep me\n")
    for name, study in (("foreign", "study: other\n"), ("garbled", "study: [\n")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "trials.jsonl").write_text("")
        (tmp_path / name / "study.yaml").write_text(study)
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    return [
        (str(tmp_path / "afile"), "afile is a file, not a folder"),
        (str(tmp_path / "afile" / "sub"), "afile is a file, so"),
        ("/dev/null", "/dev/null is under /dev"),
        ("/proc/x", "is under /proc"),
        ("/sys/x", "is under /sys"),
        ("/dev/x/runs", "is under /dev"),
        (str(tmp_path / "mine"), "holds a study.yaml but no trials.jsonl"),
        (str(tmp_path / "other"), "is not a vlsm-batch study folder (it holds notes.txt"),
        (str(tmp_path / "foreign"), "is the folder of study 'other', not 't'"),
        (str(tmp_path / "garbled"), "cannot be read as a study"),
        (str(tmp_path / "dangling"), "is a broken symbolic link"),
        ('"runs/a\\nb"', "control character '\\n'"),
    ]


def test_unusable_output_dirs_are_refused(tmp_path, capsys):
    for value, fragment in _output_cases(tmp_path):
        lines = validate(tmp_path, HEAD + f"output_dir: {value}\n", capsys)
        assert_reported(lines, tmp_path / "spec.yaml", 5, fragment)
        assert "choose another output_dir" in lines[0] or "control character" in lines[0]


def test_default_output_dir_is_checked_too(tmp_path, capsys):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "t").write_text("")
    lines = validate(tmp_path, HEAD, capsys)
    assert_reported(lines, tmp_path / "spec.yaml", 1, "output_dir: (default runs/<study>)")


def test_usable_output_dirs_are_accepted(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / ".vlsm-lock").write_text("")  # the tool's own hidden files do not count
    (tmp_path / "same").mkdir()
    (tmp_path / "same" / "trials.jsonl").write_text("")
    (tmp_path / "same" / "study.yaml").write_text(HEAD)
    (tmp_path / "partial" / "trials").mkdir(parents=True)  # an interrupted submit, before study.yaml
    dirs = ["new/deeper", "empty", "locked", "same", "partial"]
    if Path("/dev/shm").is_dir() and os.access("/dev/shm", os.W_OK):
        dirs.append(f"/dev/shm/vlsm-test-{os.getpid()}/runs")
    for d in dirs:
        assert_valid(tmp_path, HEAD + f"output_dir: {d}\n", capsys)
    assert not (tmp_path / "new").exists()  # validate writes nothing
    assert sorted(os.listdir(tmp_path / "same")) == ["study.yaml", "trials.jsonl"]


def test_unwritable_output_dir_is_refused():
    """As a plain user (root writes anywhere, so as root the check runs as nobody through setpriv)."""
    as_user: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: permission bits would not stop root")
        as_user = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
    base = Path(tempfile.mkdtemp(prefix="vlsm-ro-"))  # under /tmp, reachable by nobody
    try:
        base.chmod(0o755)
        (base / "ro").mkdir(mode=0o555)
        (base / "ro").chmod(0o555)
        spec = base / "s.yaml"
        spec.write_text(HEAD + f"output_dir: {base / 'ro' / 'runs'}\n")
        spec.chmod(0o644)
        exe = Path(sys.executable).parent / "vlsm-batch"
        proc = subprocess.run(
            [*as_user, str(exe), "validate", str(spec)], cwd=base, capture_output=True, text=True, timeout=60
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"{spec}:5:13: output_dir: {base / 'ro' / 'runs'} cannot be created: {base / 'ro'} is not writable" in (
        proc.stderr
    )


def test_submit_never_writes_into_a_folder_that_is_not_a_study(tmp_path, capsys):
    """The user's own study.yaml in output_dir survives a submit; nothing (not even synthetic data) is written."""
    folder = tmp_path / "mine"
    folder.mkdir()
    spec = folder / "study.yaml"  # the classic mistake: output_dir is the folder that holds the user's spec
    spec.write_text(HEAD + f"output_dir: {folder}\ndata_root: {tmp_path / 'data'}\n# my notes\n")
    before = spec.read_text()
    assert main(["submit", str(spec), "--executor", "local", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert f"{spec}:5:13: output_dir: {folder} holds a study.yaml but no trials.jsonl" in err
    assert spec.read_text() == before
    assert sorted(os.listdir(folder)) == ["study.yaml"]
    assert not (tmp_path / "data").exists()


def test_data_root_must_be_a_folder(tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    lines = validate(tmp_path, HEAD + f"data_root: {tmp_path / 'afile'}\n", capsys)
    assert_reported(lines, tmp_path / "spec.yaml", 5, "afile is a file, not a folder")
    lines = validate(tmp_path, HEAD + "data_root: /proc/self\n", capsys)
    assert_reported(lines, tmp_path / "spec.yaml", 5, "is under /proc")


# -- 7. local weights exist; hub ids are well-formed -------------------------------------------------------------


def test_weights_paths_and_hub_ids(tmp_path, capsys):
    os.mkfifo(tmp_path / "pipe.pt")
    bad = [
        ("./missing.pt", "is a local path (it starts with '.'): local weights"),
        (str(tmp_path / "nope" / "w.safetensors"), "do not exist"),
        ("ckpt/tiny.pth", "(it ends with .pth)"),
        ("a/b/c", "(it has more than one '/')"),
        ("/dev/zero", "is under /dev"),
        (str(tmp_path / "pipe.pt"), "is a FIFO (named pipe)"),
        ("clipseg-rd64", "is read as a Hugging Face id: it is no existing local path and no Hugging Face id"),
        ("org/-name", "each part starting and ending with a letter or digit"),
        ("org/name.", "each part starting and ending with a letter or digit"),
        ("org/na--me", "may not contain '--' or '..'"),
        ("org/na..me", "may not contain '--' or '..'"),
        ("o/" + "n" * 95, "at most 96 characters"),
    ]
    for value, fragment in bad:
        lines = validate(tmp_path, HEAD + f"weights:\n  clipseg-tiny: '{value}'\n", capsys)
        assert_reported(lines, tmp_path / "spec.yaml", 6, fragment)
        assert "weights.clipseg-tiny" in lines[0]


def test_existing_weights_and_hub_ids_are_accepted(tmp_path, capsys):
    (tmp_path / "w.pt").write_bytes(b"")
    (tmp_path / "org" / "local").mkdir(parents=True)  # exists here: a local folder, not a hub id
    for value in ("./w.pt", str(tmp_path / "w.pt"), "org/local", "CIDAS/clipseg-rd64", "openai/clip-vit-base-patch16"):
        assert_valid(tmp_path, HEAD + f"weights: {{clipseg-tiny: '{value}'}}\n", capsys)
    spec = load_spec(tmp_path / "ok.yaml", env={})
    assert spec.weights == {"clipseg-tiny": "openai/clip-vit-base-patch16"}


# -- 8. the spec file itself: a regular file of at most 1 MiB, refused at once otherwise -------------------------


def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "spec.yaml"
    os.mkfifo(fifo)
    start = time.monotonic()
    proc = cli("validate", str(fifo), timeout=30)  # would block forever on open/read without a writer
    assert proc.returncode == 1, proc.stderr
    assert f"{fifo}: is a FIFO (named pipe), not a regular file" in proc.stderr
    assert time.monotonic() - start < 20


def test_dev_zero_is_refused_without_reading(tmp_path):
    proc = cli("validate", "/dev/zero", timeout=30)
    assert proc.returncode == 1
    assert "/dev/zero: is a character device, not a regular file" in proc.stderr


def test_a_directory_is_refused(tmp_path, capsys):
    assert main(["validate", str(tmp_path)]) == 1
    assert f"{tmp_path}: is a directory, not a regular file" in capsys.readouterr().err


def test_a_huge_spec_is_refused_at_once(tmp_path):
    big = tmp_path / "big.yaml"
    with open(big, "w") as f:  # 50 MB of plausible YAML: it took 50 s to parse
        f.write(HEAD + "search:\n  space:\n    lr: {choice: [")
        f.writelines("1.0e-5, " * 1000 for _ in range(6400))
        f.write("1.0e-4]}\n")
    assert big.stat().st_size > 50_000_000
    start = time.perf_counter()
    with pytest.raises(SpecError) as info:
        load_spec(big, env={})
    elapsed = time.perf_counter() - start
    assert elapsed < 0.1, elapsed
    (err,) = info.value.errors
    assert err.startswith(f"{big}: the file is 4") and "MiB; a study file may be at most 1.0 MiB" in err


def test_the_size_limit_is_exact(tmp_path, capsys):
    path = tmp_path / "limit.yaml"
    body = HEAD + "# " + "x" * (MAX_SPEC_BYTES - len(HEAD) - 3) + "\n"
    path.write_text(body)
    assert path.stat().st_size == MAX_SPEC_BYTES
    assert load_spec(path, env={}).study == "t"
    path.write_text(body + "\n")
    assert main(["validate", str(path)]) == 1
    assert "a study file may be at most 1.0 MiB" in capsys.readouterr().err


def test_a_symlink_to_a_spec_is_fine(tmp_path):
    (tmp_path / "real.yaml").write_text(HEAD)
    os.symlink(tmp_path / "real.yaml", tmp_path / "link.yaml")
    assert load_spec(tmp_path / "link.yaml", env={}).study == "t"


# -- 9. together: every problem of a hostile spec in one run, in file order ---------------------------------------


def test_a_hostile_spec_reports_everything_at_once(tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    text = (
        'study: "t\\n"\n'  # 1
        "models: [clipseg-tiny]\n"
        "datasets: [synthetic]\n"
        "strategies: [coop]\n"
        f"output_dir: {tmp_path / 'afile'}\n"  # 5
        "weights: {clipseg-tiny: ./gone.pt}\n"  # 6
        "train:\n"
        "  early_stopping: {min_delta: .nan}\n"  # 8
        "  context_init: a photo\n"  # 9
        "resources:\n"
        "  timeout_min: 100000\n"  # 11
        "  slurm: {profile: nosuchprofile}\n"  # 12
    )
    lines = validate(tmp_path, text, capsys)
    assert [int(e.split(":")[1]) for e in lines] == [1, 5, 6, 8, 9, 11, 12], lines


def test_node_limits_word_what_no_node_can_meet():
    """The submit-time check (facts from sinfo/scontrol) that sbatch would otherwise refuse after writing."""
    from vlsm_batch.spec.resources import NodeLimits, node_limit_problems
    from vlsm_batch.spec.types import ResourcesSpec

    node = NodeLimits("gpu", mem_mb=64 * 1024, cpus=16, gpus=0)
    problems = node_limit_problems(ResourcesSpec(mem_gb=128, cpus_per_task=32, gpus_per_task=1), node)
    assert problems == [
        "mem_gb 128 exceeds the 64 GB of the largest node in partition gpu; set resources.mem_gb to at most 64",
        "cpus_per_task 32 exceeds the 16 CPUs of the largest node in partition gpu; set resources.cpus_per_task to "
        "at most 16",
        "gpus_per_task 1 exceeds the 0 GPUs of the largest node in partition gpu; set resources.gpus_per_task: 0 or "
        "choose a GPU partition",
    ]
    assert node_limit_problems(ResourcesSpec(mem_gb=64, cpus_per_task=16, gpus_per_task=0), node) == []
    assert node_limit_problems(ResourcesSpec(mem_gb=10**4), NodeLimits("cpu")) == []  # unknown facts: no refusal
