"""Search benchmark: random vs tpe vs tpe + asha on the real tiny CLIPSeg (CoOp, generated shapes), over seeds.

    .venv/bin/python benchmarks/search.py [--seeds 0 1 2] [--trials 12] [--epochs 8] [--startup 4] [--out DIR]

Each (method, search seed) is a real study run through ``vlsm-batch submit`` (local executor, the real task,
the real Lightning pruning callback and the cell's Optuna journal). Printed per method: best val Dice among the
trials that finished (pruned trials never count as best; mean and 95 % CI over seeds, t-interval), trial-epochs
spent (sum of epochs trained over all trials), and wall time. Target: tpe + asha reaches random's best val Dice
(within random's CI) with <= 40 % of random's trial-epochs. A JSON summary is the last line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

SPEC = """study: {study}
output_dir: {out}
data_root: {data}
seeds: [0]
models: [clipseg-tiny]
datasets: [synthetic]
strategies: [coop]
search:
  method: {method}
  trials: {trials}
  seed: {seed}
{extra}  objective: {{metric: val/dice, mode: max}}
  space:
    lr: {{log_uniform: [1.0e-4, 3.0e-1]}}
    prompt_depth: {{int: [1, 4]}}
train:
  max_epochs: {epochs}
  min_epochs: {epochs}
  batch_size: 8
  precision: "32"
  early_stopping: {{monitor: val/loss, patience: 50, min_delta: 0.0}}
  num_context: 4
  context_init: "a photo of a"
  learnable_upsampler: {upsampler}
resources:
  executor: local
  timeout_min: 30
  local: {{max_parallel: {parallel}}}
"""

METHODS = {
    "random": ("random", ""),
    "tpe": ("tpe", "  n_startup_trials: {startup}\n"),
    "tpe+asha": (
        "tpe",
        "  n_startup_trials: {startup}\n  pruner: {{type: asha, min_resource: {mr}, reduction_factor: {rf}}}\n",
    ),
}

T95 = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776, 6: 2.571, 7: 2.447, 8: 2.365, 9: 2.306, 10: 2.262}


def ci95(values: list[float]) -> float | None:
    """Half-width of the t-interval of the mean (None for a single value)."""
    if len(values) < 2:
        return None
    return T95.get(len(values), 1.96) * statistics.stdev(values) / math.sqrt(len(values))


def run_study(work: Path, name: str, method: str, seed: int, args: argparse.Namespace) -> dict[str, object]:
    kind, extra = METHODS[method]
    spec = work / f"{name}.yaml"
    spec.write_text(
        SPEC.format(
            study=name,
            out=work / "runs" / name,
            data=work / "data",
            method=kind,
            trials=args.trials,
            seed=seed,
            extra=extra.format(startup=args.startup, rf=args.reduction_factor, mr=args.min_resource),
            epochs=args.epochs,
            parallel=args.parallel,
            upsampler=str(args.upsampler).lower(),
        )
    )
    vlsm = Path(sys.executable).parent / "vlsm-batch"
    started = time.perf_counter()
    out = subprocess.run([str(vlsm), "submit", str(spec), "--no-progress"], capture_output=True, text=True)
    wall = time.perf_counter() - started
    if out.returncode != 0:
        raise SystemExit(f"{name}: submit failed ({out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    best, epochs, pruned = None, 0, 0
    for trial in sorted((work / "runs" / name / "trials").iterdir()):
        status = json.loads((trial / "status.json").read_text())
        history = trial / "history.csv"
        epochs += max(0, len(history.read_text().splitlines()) - 1) if history.is_file() else 0
        if status["state"] == "pruned":
            pruned += 1
        elif status["state"] == "done":
            dice = json.loads((trial / "metrics.json").read_text()).get("val/dice")
            best = dice if best is None or (dice is not None and dice > best) else best
        else:
            raise SystemExit(f"{name}: trial {trial.name} ended {status['state']}")
    return {"method": method, "seed": seed, "best": best, "trial_epochs": epochs, "pruned": pruned, "wall_s": wall}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--startup", type=int, default=4, help="tpe n_startup_trials")
    parser.add_argument("--reduction-factor", type=int, default=3, help="asha reduction_factor")
    parser.add_argument("--min-resource", type=int, default=1, help="asha min_resource (epochs)")
    parser.add_argument("--parallel", type=int, default=2, help="local max_parallel")
    parser.add_argument(
        "--upsampler",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="learnable_upsampler as in the quickstart (without it val Dice is flat in lr on this toy)",
    )
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    work = args.out or Path(tempfile.mkdtemp(prefix="vlsm-search-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    runs = []
    for seed in args.seeds:
        for method in args.methods:
            row = run_study(work, f"{method.replace('+', '-')}-s{seed}", method, seed, args)
            runs.append(row)
            print(
                f"{method:9s} seed {seed}: best val/dice {row['best']:.4f}  trial-epochs {row['trial_epochs']:3d}  "
                f"pruned {row['pruned']}  wall {row['wall_s']:.0f} s",
                flush=True,
            )
    summary = {}
    for method in args.methods:
        rows = [r for r in runs if r["method"] == method]
        bests = [float(r["best"]) for r in rows]
        summary[method] = {
            "best_mean": statistics.mean(bests),
            "best_ci95": ci95(bests),
            "trial_epochs": statistics.mean(float(r["trial_epochs"]) for r in rows),
            "wall_s": statistics.mean(float(r["wall_s"]) for r in rows),
            "pruned": statistics.mean(float(r["pruned"]) for r in rows),
            "seeds": len(rows),
        }
    print(f"\n{args.trials} trials x {args.epochs} epochs per study, seeds {args.seeds}")
    print(
        f"{'method':9s}  {'best val/dice (mean ± 95% CI)':30s}  {'trial-epochs':>12s}  {'pruned':>6s}  {'wall s':>7s}"
    )
    for method, s in summary.items():
        ci = f"± {s['best_ci95']:.4f}" if s["best_ci95"] is not None else ""
        print(
            f"{method:9s}  {s['best_mean']:.4f} {ci:23s}  {s['trial_epochs']:12.1f}  {s['pruned']:6.1f}  "
            f"{s['wall_s']:7.0f}"
        )
    verdict = None
    if "random" in summary and "tpe+asha" in summary:
        r, a = summary["random"], summary["tpe+asha"]
        reaches = a["best_mean"] >= r["best_mean"] - (r["best_ci95"] or 0.0)
        share = a["trial_epochs"] / r["trial_epochs"]
        verdict = {
            "reaches_random_best_within_ci": reaches,
            "epoch_share_vs_random": share,
            "met": reaches and share <= 0.4,
        }
        print(
            f"tpe+asha vs random: best {'within' if reaches else 'below'} random's CI, "
            f"{100 * share:.0f} % of random's trial-epochs -> target {'met' if verdict['met'] else 'NOT met'}"
        )
    print(json.dumps({"runs": runs, "summary": summary, "verdict": verdict, "work": str(work)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
