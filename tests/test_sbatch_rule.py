"""One rule for what sbatch may be given: the schema's ``$defs.sbatchValue`` pattern, read by every checker."""

from __future__ import annotations

from pathlib import Path

import pytest

from vlsm_batch.errors import SubmissionError
from vlsm_batch.spec.schema import load_schema, pattern_matches, sbatch_problem
from vlsm_batch.spec.site_profiles import load_profile

VALUES = ["gpu", "a100|h100", "node[01-03]", "x" * 256, "x" * 257, "", "gpu\n", "a b", "a;b", "$(id)", "é"]


def test_both_schema_definitions_are_one_pattern() -> None:
    defs = load_schema()["$defs"]
    assert defs["sbatchValue"]["pattern"] == defs["sbatchValueOrNull"]["pattern"]


@pytest.mark.parametrize("value", VALUES)
def test_spec_check_is_the_schema_pattern(value: str) -> None:
    assert (sbatch_problem(value) is None) is pattern_matches(load_schema()["$defs"]["sbatchValue"]["pattern"], value)


@pytest.mark.parametrize("value", [v for v in VALUES if v])  # a profile leaves an unused key out, never empty
def test_site_profiles_use_the_same_rule(value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "site.yaml").write_text(f"partition: {value!r}\nextra: {{exclude: {value!r}}}\n".replace("'", '"'))
    monkeypatch.setenv("VLSM_SLURM_PROFILES", str(tmp_path))
    if sbatch_problem(value) is None:
        data, _ = load_profile("site")
        assert data["partition"] == value and data["extra"]["exclude"] == value
        return
    with pytest.raises(SubmissionError) as info:
        load_profile("site")
    assert "partition:" in str(info.value) and "extra.exclude:" in str(info.value)
