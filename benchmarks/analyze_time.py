"""Time ``vlsm-batch analyze`` on a generated study of 10,000 trials: cold, then with the Parquet cache.

The study folder is written directly (trials.jsonl and every trial's config/status/metrics files, as the jobs
layer writes them; no training). Three timings:

- cold: no cache (every status.json and metrics.json is read);
- cached: nothing changed since the last run (only running trials and file signatures are checked);
- cached + 1 % changed: 100 trials rewrote their metrics (as a running study does between two looks).

Usage: .venv/bin/python benchmarks/analyze_time.py [--trials 10000] [--dir /tmp/vlsm-analyze-bench] [--keep]
Each timing is of the whole ``analyze`` call (collection, selection, takeaways, tables, plots, report), and
separately of the collection alone.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vlsm_batch.analysis.collect import cache_path
from vlsm_batch.analysis.run import analyze
from vlsm_batch.analysis.synthetic import write_study
from vlsm_batch.layout import StudyLayout

DATASETS = ("kvasir_polyp", "isic", "busi", "voc2012", "cityscapes")
STRATEGIES = ("coop", "vpt", "maple", "shared_attn", "zero_shot", "decoder_finetune", "finetune")
SEEDS = (0, 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=10_000)
    ap.add_argument("--dir", type=Path, default=None, help="where to write the study (default: a temp folder)")
    ap.add_argument("--keep", action="store_true", help="keep the generated study")
    args = ap.parse_args()

    base = args.dir or Path(tempfile.mkdtemp(prefix="vlsm-analyze-bench-"))
    root = base / "runs" / "bench"
    if root.exists():
        shutil.rmtree(root)
    # trials = datasets * seeds * (4 searched strategies * configs + 2 per fine-tune + zero_shot 1)
    per = len(DATASETS) * len(SEEDS)
    configs = max(1, math.ceil((args.trials / per - 5) / 4))
    t0 = time.perf_counter()
    syn = write_study(root, datasets=DATASETS, strategies=STRATEGIES, configs=configs, seeds=SEEDS)
    gen = time.perf_counter() - t0
    layout = StudyLayout(root)
    print(f"study: {len(syn.trials)} trials in {root} (generated in {gen:.1f} s)")

    def run(label: str) -> None:
        t = time.perf_counter()
        r = analyze(layout, ["prompt_depth"])
        total = time.perf_counter() - t
        stages = "  ".join(f"{k} {v:5.2f}" for k, v in r.timings.items())
        print(
            f"{label:<26} analyze {total:6.2f} s  (read {r.cache['read']:>5}, cached {r.cache['cached']:>5})  "
            f"stages [s]: {stages}"
        )

    cache_path(layout).unlink(missing_ok=True)
    run("cold (no cache)")
    run("cached, nothing changed")
    done = [t for t in syn.trials if layout.trial(t.trial_id).metrics.exists()]
    for trial in done[:: max(1, len(done) // 100)]:
        m = layout.trial(trial.trial_id).metrics
        data = json.loads(m.read_text())
        data["test/dice"] = data["test/dice"] - 1e-6
        m.write_text(json.dumps(data))
        st = m.stat()
        os.utime(m, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    run("cached, ~1 % changed")
    print("(running trials are always re-read: a local process may have died without touching its files)")
    if not args.keep and args.dir is None:
        shutil.rmtree(base)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
