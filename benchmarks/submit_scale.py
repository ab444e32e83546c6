"""Scale benchmark: plan and submit 10,000 trials without running them, then `status` over that study folder.

    SLURM_CONF=/tmp/vlsm-slurm/etc/slurm.conf .venv/bin/python benchmarks/submit_scale.py [--trials 10000]
    .venv/bin/python benchmarks/submit_scale.py --fake-slurm      # no cluster: shims answer sbatch/squeue/...

With a real cluster the arrays are submitted held (``--hold``: nothing ever runs) and cancelled at the end; the
chunking follows the cluster's MaxArraySize (11 on slurm/start.sh's test cluster: about 910 arrays; start it with
VLSM_SLURM_MAX_ARRAY_SIZE=10001 for a single array). ``--fake-slurm`` puts shell shims for sbatch, scontrol,
squeue, sacct, srun and sacctmgr first on PATH, which measures vlsm-batch's own cost (MaxArraySize 1001).
Prints one line per phase (seconds) and a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPEC = """study: {study}
output_dir: {out}
models: [clipseg-tiny]
datasets: [synthetic]
strategies: [coop]
search:
  method: random
  trials: {trials}
  space:
    lr: {{log_uniform: [1.0e-4, 1.0e-1]}}
    prompt_depth: {{int: [1, 4]}}
    num_context: {{int: [1, 16]}}
train: {{max_epochs: 2, min_epochs: 1, context_init: null}}  # num_context is searched: random context init
resources:
  executor: slurm
  gpus_per_task: 1
  cpus_per_task: 1
  mem_gb: 1
  timeout_min: 30
  slurm: {{partition: {partition}, array_throttle: 64}}
"""

SHIMS = {
    "sbatch": """#!/bin/bash
n=$(( $(cat "$FAKE_SLURM/next" 2>/dev/null || echo 1000) + 1 )); echo $n > "$FAKE_SLURM/next"
range=$(sed -n 's/^#SBATCH --array=\\([0-9-]*\\).*/\\1/p' "$1"); echo "${n}_[${range:-0}]" >> "$FAKE_SLURM/jobs"
echo "Submitted batch job $n"
""",
    "scontrol": """#!/bin/bash
case "$*" in
  "show config") printf 'MaxArraySize            = 1001\\nMaxJobCount             = 100000\\n' ;;
  "show partition -o") echo "PartitionName=debug Default=YES MaxTime=UNLIMITED State=UP" ;;
  ping) echo "Slurmctld(primary) at fake is UP" ;;
esac
""",
    # every submitted array is pending (held); 1 task arrays are printed as ranges too, which squeue -r would not
    "squeue": "#!/bin/bash\nsed 's/$/|PENDING|JobHeldUser/' \"$FAKE_SLURM/jobs\"\n",
    "sacct": "#!/bin/bash\nexit 1\n",  # accounting disabled
    "sacctmgr": "#!/bin/bash\nexit 0\n",
    "sinfo": "#!/bin/bash\nhostname -s\n",
    "srun": "#!/bin/bash\nexit 0\n",
}


def install_shims(folder: Path) -> None:
    (folder / "bin").mkdir(parents=True)
    for name, text in SHIMS.items():
        p = folder / "bin" / name
        p.write_text(text)
        p.chmod(0o755)
    os.environ["FAKE_SLURM"] = str(folder)
    os.environ["PATH"] = f"{folder / 'bin'}{os.pathsep}{os.environ['PATH']}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=10_000)
    ap.add_argument("--fake-slurm", action="store_true", help="shims instead of a real cluster")
    ap.add_argument("--partition", default="debug")
    ap.add_argument("--keep", action="store_true", help="keep the study folder (default: delete it)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="vlsm-bench-", dir=os.environ.get("VLSM_BENCH_DIR")))
    if args.fake_slurm:
        install_shims(work / "fake")
    os.environ["VLSM_SLURM_HOLD"] = "1"  # held arrays: nothing runs
    study = f"bench{args.trials}"
    spec_path = work / "study.yaml"
    spec_path.write_text(
        SPEC.format(study=study, out=work / "runs" / study, trials=args.trials, partition=args.partition)
    )

    from vlsm_batch.jobs import cluster
    from vlsm_batch.jobs.plan import format_plan, make_plan
    from vlsm_batch.jobs.status import format_status, load_status
    from vlsm_batch.jobs.submit import submit
    from vlsm_batch.layout import StudyLayout, atomic_write_json
    from vlsm_batch.spec import load_spec
    from vlsm_batch.trials import expand

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    spec = load_spec(spec_path)
    expansion = expand(spec)
    format_plan(spec, make_plan(spec, expansion), expansion)
    timings["plan"] = time.perf_counter() - t0
    n = len(expansion.trials)
    print(f"plan ({n} trials): {timings['plan']:.2f} s", flush=True)

    t0 = time.perf_counter()
    result = submit(spec, expansion, progress=False, executor="slurm")
    timings["submit"] = time.perf_counter() - t0
    arrays = sorted({j.split("_")[0] for j in result.job_ids}, key=int)
    max_array = cluster.max_array_size(cluster.cluster_config())
    print(f"submit ({len(result.launched)} trials, {len(arrays)} held arrays, MaxArraySize {max_array}): "
          f"{timings['submit']:.2f} s", flush=True)  # fmt: skip

    layout = StudyLayout(spec.output_dir)
    try:
        t0 = time.perf_counter()
        st = load_status(layout)
        format_status(st)
        timings["status_pending"] = time.perf_counter() - t0
        counts = st.as_dict()["totals"]
        print(f"status, all pending (markers + squeue/sacct): {timings['status_pending']:.2f} s {counts}", flush=True)
    finally:
        if not args.fake_slurm:
            subprocess.run(["scancel", f"--name=vlsm-{study}"], check=False, timeout=120)

    for tid in result.launched:  # as if every trial had run: done markers and metrics
        paths = layout.trial(tid)
        atomic_write_json(paths.metrics, {"val/dice": 0.5, "test/dice": 0.5}, durable=False)
        atomic_write_json(paths.status, {"state": "done", "executor": "slurm"}, durable=False)
    t0 = time.perf_counter()
    st = load_status(layout)
    format_status(st)
    timings["status_done"] = time.perf_counter() - t0
    print(f"status, all done (markers + metrics): {timings['status_done']:.2f} s", flush=True)

    cmd = [sys.executable, "-m", "vlsm_batch", "status", "--study", str(layout.root)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    timings["status_cli_done"] = time.perf_counter() - t0
    print(f"`vlsm-batch status` CLI, all done (incl. interpreter start): {timings['status_cli_done']:.2f} s")
    print(json.dumps({"trials": n, "arrays": len(arrays), "max_array_size": max_array, "fake_slurm": args.fake_slurm,
                      **{k: round(v, 2) for k, v in timings.items()}}))  # fmt: skip
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
