"""SAM 3 in study files, torch-free: what validation refuses and skips for it, with the reason, and that the
shipped SAM 3 benchmark validates and plans its packs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from vlsm_batch.errors import SpecError
from vlsm_batch.spec import load_spec
from vlsm_batch.trials import expand

ROOT = Path(__file__).resolve().parent.parent
HEAD = "study: t\nmodels: [sam3-tiny]\ndatasets: [synthetic]\n"


def load(tmp_path: Path, text: str) -> Any:
    (tmp_path / "data").mkdir(exist_ok=True)
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return load_spec(path, env={}, base_dir=tmp_path)


def errors(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        load(tmp_path, text)
    return info.value.errors


def test_detr_vpt_depth_is_bounded_by_the_detr_encoder_not_the_text_tower(tmp_path: Path) -> None:
    space = "search:\n  method: random\n  trials: 2\n  space:\n    prompt_depth: {int: [1, 4]}\n"
    found = errors(tmp_path, HEAD + "strategies: [coop, detr_vpt]\n" + space)
    assert any("DETR encoder layers 3" in e and "per_strategy.detr_vpt" in e for e in found), found
    ok = load(tmp_path, HEAD + "strategies: [coop]\n" + space)  # CoOp: 4 text layers
    assert ok.strategies == ("coop",)
    own = space + "  per_strategy:\n    detr_vpt: {prompt_depth: {int: [1, 3]}}\n"
    spec = load(tmp_path, HEAD + "strategies: [coop, detr_vpt]\n" + own)
    depths = {(t.strategy, t.params["prompt_depth"]) for t in expand(spec).trials}
    assert all(d <= 3 for s, d in depths if s == "detr_vpt")


def test_num_context_leaves_room_in_sam3s_32_positions(tmp_path: Path) -> None:
    found = errors(tmp_path, HEAD + "strategies: [coop]\ntrain: {num_context: 30}\n")
    assert any("num_context 30" in e and "sam3-tiny" in e for e in found), found
    load(tmp_path, HEAD + "strategies: [coop]\ntrain: {num_context: 29, context_init: null}\n")


def test_visual_strategies_skip_sam3_with_the_reason(tmp_path: Path) -> None:
    spec = load(tmp_path, HEAD.replace("[sam3-tiny]", "[sam3-tiny, clipseg-tiny]") + "strategies: [vpt, detr_vpt]\n")
    skipped = {(c.model, c.strategy): c.skipped for c in expand(spec).cells if c.skipped}
    assert "windows" in skipped[("sam3-tiny", "vpt")] and "detr_vpt" in skipped[("sam3-tiny", "vpt")]
    assert "fusion encoder" in skipped[("clipseg-tiny", "detr_vpt")]
    assert errors(tmp_path, HEAD + "strategies: [maple]\n")  # no listed model runs it: an error


def test_the_shipped_sam3_benchmark_validates(tmp_path: Path) -> None:
    spec = load_spec(ROOT / "specs" / "sam3_benchmark.yaml", env={}, base_dir=tmp_path)
    assert spec.models == ("sam3",) and spec.resources.pack == "auto"
    cells = expand(spec).cells
    assert {c.strategy for c in cells if not c.skipped} == {"coop", "cocoop", "detr_vpt", "zero_shot", "finetune"}
