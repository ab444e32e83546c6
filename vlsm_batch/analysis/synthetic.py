"""A finished study written straight to disk, with known planted effects (tests and the analyze benchmark).

The files are those the jobs layer writes (``trials.jsonl``, ``trials/<id>/{config,status,metrics}.json``);
no training runs. Planted truth (Dice, before noise):

- per dataset a base level (medical datasets lower than natural ones);
- strategy offsets: ``vpt`` wins on medical data, ``maple`` on natural data, ``coop`` is poor on medical data;
  of the baselines ``finetune`` (every weight) beats ``decoder_finetune`` (decoder only), and ``zero_shot`` is poor;
- ``prompt_depth`` adds ``DEPTH_GAIN`` per layer for strategies that prompt the vision tower, nothing for text;
- ``lr`` matters (a parabola in log10(lr) peaking at 1e-3); ``weight_decay`` does not matter at all;
- ``learnable_upsampler: true`` adds ``UPSAMPLER_GAIN``;
- seeds add small noise; val and test carry independent noise;
- per model an offset (``MODEL_OFFSET``: SAM 3 above CLIPSeg and CRIS, which tie); ``detr_vpt`` (SAM 3's prompts in
  its DETR fusion encoder) gains with depth like the visual strategies;
- a model gets only the strategies the catalogs let it run (no ``vpt`` or ``maple`` on CRIS or SAM 3, no
  ``detr_vpt`` on CLIPSeg or CRIS), and the k-th configuration of a (dataset, strategy) has the same parameters
  on every model (as a grid or a Sobol sample gives), so models differ by their planted offset and noise only.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..jobs import store
from ..layout import TrialPaths
from ..strategies import STRATEGIES
from ..trials import Trial

DEPTH_GAIN = 0.02
UPSAMPLER_GAIN = 0.03
LR_CURVATURE = 0.08
BASE = {"kvasir_polyp": 0.60, "isic": 0.66, "busi": 0.52, "voc2012": 0.68, "cityscapes": 0.66}
OFFSET_MEDICAL = {"vpt": 0.06, "maple": 0.03, "shared_attn": 0.02, "coop": -0.10, "finetune": 0.08, "zero_shot": -0.4,
                  "decoder_finetune": 0.05, "detr_vpt": 0.05}  # fmt: skip
OFFSET_NATURAL = {"vpt": 0.02, "maple": 0.06, "shared_attn": 0.03, "coop": 0.00, "finetune": 0.04, "zero_shot": -0.2,
                  "decoder_finetune": 0.01, "detr_vpt": 0.03}  # fmt: skip
MODEL_OFFSET = {"clipseg": 0.0, "cris": 0.0, "sam3": 0.05}  # added to every strategy of the model
FINETUNES = ("finetune", "decoder_finetune")  # baselines with lr and weight decay only, two configurations each
# strategies with image-side prompts: in a ViT (vpt, maple, ...) or in SAM 3's DETR fusion encoder (detr_vpt)
VISION = {s for s in STRATEGIES if STRATEGIES.get(s).towers & {"vision", "fusion"}}
TRAIN = {"max_epochs": 20, "batch_size": 16}
OBJECTIVE = {"metric": "val/dice", "mode": "max"}


@dataclass
class Synthetic:
    root: Path
    trials: list[Trial] = field(default_factory=list)
    truth: dict[str, float] = field(default_factory=dict)  # trial_id -> noiseless Dice
    trap_ids: list[str] = field(default_factory=list)  # best test, poor validation: must never be selected


def _params(strategy: str, rng: random.Random) -> dict[str, Any]:
    if strategy == "zero_shot":
        return {}
    p: dict[str, Any] = {
        "lr": float(f"{10 ** rng.uniform(-4, -2):.6g}"),
        "weight_decay": float(f"{rng.uniform(0, 0.1):.6g}"),
    }
    if strategy in FINETUNES:
        return p
    p["prompt_depth"] = rng.randint(1, 6)
    p["num_context"] = 4
    p["learnable_upsampler"] = rng.random() < 0.5
    if strategy in ("coop", "cocoop", "maple"):
        p["context_init"] = rng.choice(["a photo of a", None])
    if strategy == "maple":
        p["intermediate_dim"] = rng.choice([32, 64, 96, 128])
    return p


def runs_on(model: str, strategy: str) -> bool:
    """Whether the catalogs let ``strategy`` run on ``model`` (names either catalog does not know: yes)."""
    from ..models import MODELS
    from ..strategies import refusal

    if model not in MODELS or strategy not in STRATEGIES:
        return True
    return refusal(STRATEGIES.get(strategy), MODELS.get(model)) is None


def true_dice(
    dataset: str, strategy: str, p: dict[str, Any], model: str = "clipseg", model_offset: dict[str, float] | None = None
) -> float:
    medical = dataset not in ("voc2012", "cityscapes")
    y = BASE.get(dataset, 0.7) + (OFFSET_MEDICAL if medical else OFFSET_NATURAL).get(strategy, 0.0)
    y += (MODEL_OFFSET if model_offset is None else model_offset).get(model, 0.0)
    if "lr" in p:
        y -= LR_CURVATURE * (math.log10(p["lr"]) + 3) ** 2
    if strategy in VISION:
        y += DEPTH_GAIN * (p.get("prompt_depth", 1) - 1)
    if p.get("learnable_upsampler"):
        y += UPSAMPLER_GAIN
    return min(max(y, 0.0), 1.0)


def _write(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, sort_keys=True), encoding="utf-8")


def _history(path: Path, final: float, epochs: int, rng: random.Random) -> None:
    """A plausible history.csv: losses falling, val Dice rising towards ``final`` (the trial's val score)."""
    rows = ["epoch,train/loss,val/loss,val/dice,val/iou,lr,train_images,train_time_s,epoch_time_s"]
    for e in range(1, epochs + 1):
        f = 1 - math.exp(-3 * e / epochs)
        dice = max(0.0, final * f + rng.gauss(0, 0.003))
        rows.append(
            f"{e},{1.2 - 0.7 * f:.4f},{1.25 - 0.7 * f + rng.gauss(0, 0.01):.4f},{dice:.4f},{dice * 0.85:.4f},"
            f"0.001,64,9.5,10.0"
        )
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


def write_study(
    root: Path,
    *,
    datasets: tuple[str, ...] = ("kvasir_polyp", "isic", "voc2012"),
    strategies: tuple[str, ...] = ("coop", "vpt", "maple", "zero_shot", "decoder_finetune", "finetune"),
    models: tuple[str, ...] = ("clipseg",),
    model_offset: dict[str, float] | None = None,
    configs: int = 12,
    seeds: tuple[int, ...] = (0, 1),
    noise: float = 0.004,
    failed: float = 0.05,
    running: float = 0.02,
    missing_cells: tuple[tuple[str, str, str], ...] = (),
    trap: bool = True,
    rng_seed: int = 0,
    history: bool = False,
    train: dict[str, Any] | None = None,
    spec_version: str | None = None,
) -> Synthetic:
    """Write the study folder under ``root``; ``missing_cells`` are (model, dataset, strategy) that all failed.

    ``models`` may be any catalog names (``("clipseg", "cris", "sam3")``): each runs the ``strategies`` it can;
    ``model_offset`` replaces ``MODEL_OFFSET`` (the planted Dice offset of each model).

    ``history`` also writes a history.csv per finished trial (learning curves); ``train`` replaces the train
    settings (a resubmission with other ``max_epochs`` is a second call with ``trap=False`` into the same root).
    """
    train = dict(TRAIN if train is None else train)
    version: dict[str, Any] = {"spec_version": spec_version} if spec_version else {}
    rng = random.Random(rng_seed)
    out = Synthetic(Path(root))
    tdir = out.root / "trials"
    tdir.mkdir(parents=True, exist_ok=True)
    lines = []
    drawn: dict[tuple[str, str, int], dict[str, Any]] = {}  # the k-th configuration, shared by every model
    for model in models:
        for dataset in datasets:
            for strategy in strategies:
                if not runs_on(model, strategy):
                    continue
                n_cfg = 1 if strategy == "zero_shot" else (2 if strategy in FINETUNES else configs)
                for k in range(n_cfg):
                    if (dataset, strategy, k) not in drawn:  # drawn once: one model's stream is unchanged
                        drawn[dataset, strategy, k] = _params(strategy, rng)
                    p = drawn[dataset, strategy, k]
                    for seed in seeds:
                        t = Trial(model, dataset, strategy, seed, p, train, OBJECTIVE, sample_index=k).with_id()
                        out.trials.append(t)
                        lines.append(json.dumps(t.manifest_record(), sort_keys=True))
                        d = tdir / t.trial_id
                        d.mkdir(exist_ok=True)
                        _write(d / "config.json", {**t.manifest_record(), "study": "synthetic"})
                        y = true_dice(dataset, strategy, p, model, model_offset)
                        out.truth[t.trial_id] = y
                        u = rng.random()
                        if (model, dataset, strategy) in missing_cells or u < failed:
                            err = {"class": "RuntimeError", "message": "planted failure"}
                            store.import_record(TrialPaths(d), store.FAILED, executor="slurm", error=err, **version)
                            continue
                        if u < failed + running:
                            store.import_record(TrialPaths(d), store.RUNNING, executor="slurm", **version)
                            continue
                        val = y + rng.gauss(0, noise)
                        test = y + rng.gauss(0, noise)
                        if trap and strategy == "vpt" and k == 0:
                            val, test = y - 0.3, 0.999  # looks perfect on test, poor on validation
                            out.trap_ids.append(t.trial_id)
                        metrics = {
                            "val/dice": val,
                            "val/iou": val * 0.85,
                            "val/loss": 1 - val,
                            "test/dice": test,
                            "test/iou": test * 0.85,
                            "epochs": 20,
                            "wall_time_s": 100.0,
                        }
                        _write(d / "metrics.json", metrics)
                        if history:
                            _history(d / "history.csv", val, int(train.get("max_epochs", 20)), rng)
                        store.import_record(TrialPaths(d), store.DONE, executor="slurm", **version)
    manifest = out.root / "trials.jsonl"
    known = manifest.read_text(encoding="utf-8").splitlines() if manifest.is_file() else []
    seen = set(known)
    lines = known + [ln for ln in lines if ln not in seen]  # a resubmission adds its trials
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out
