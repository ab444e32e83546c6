"""The README's study-file example is a valid spec: a newcomer copying it gets no error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _study_example() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index("```yaml", text.index("## The study file")) + len("```yaml\n")
    return text[start : text.index("```", start)]


def test_readme_study_example_validates(tmp_path: Path) -> None:
    spec = tmp_path / "example.yaml"
    spec.write_text(_study_example(), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "vlsm_batch", "validate", str(spec)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "DATA": str(tmp_path / "data"), "HOME": str(tmp_path)},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok (quickstart:" in done.stdout
