#!/usr/bin/env bash
# One prepared run on a lent GPU machine (see README "Development"): the quickstart study end to end through
# the local executor on the GPU, then the step-time and data-pipeline benchmarks on CUDA. Results land in $OUT (or ./device-out).
# Packages the GPU image lacks travel as wheels in .whl/ (not committed); torch/transformers/Lightning are its own.
set -uo pipefail
OUT=${OUT:-device-out}; mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
nvidia-smi -L
python3 -c "import torch, transformers, pytorch_lightning as pl; print('torch', torch.__version__, 'transformers', transformers.__version__, 'lightning', pl.__version__)"
export VLSM_RUNS=/tmp/vb-runs VLSM_DATA=/tmp/vb-data
start=$(date +%s.%N)
python3 -m vlsm_batch submit specs/quickstart.yaml --no-progress 2>&1 | tee "$OUT/quickstart.log"
end=$(date +%s.%N)
echo "quickstart submit wall time: $(python3 -c "print(round($end - $start, 1))") s" | tee -a "$OUT/quickstart.log"
python3 -m vlsm_batch status 2>&1 | tee -a "$OUT/quickstart.log"
python3 -m vlsm_batch analyze --by prompt_depth 2>&1 | tee -a "$OUT/quickstart.log"
cp /tmp/vb-runs/quickstart/analysis/plots/score_by_prompt_depth.png "$OUT/" 2>/dev/null
python3 - <<'PY' | tee -a "$OUT/quickstart.log"
import json, pathlib
for p in sorted(pathlib.Path("/tmp/vb-runs/quickstart/trials").glob("*/metrics.json")):
    m = json.loads(p.read_text())
    print(p.parent.name, "epochs", m["epochs"], "img/s", round(m["train_images_per_s"], 1),
          "peak MB", round(m["peak_memory_mb"], 1), "wall s", round(m["wall_time_s"], 1))
PY
python3 benchmarks/step_time.py --device cuda --repeats 20 --json "$OUT/step_time_cuda.json" 2>&1 | tee "$OUT/step_time.log"
python3 benchmarks/sam3_step_time.py --device cuda --ks 1,4,8 --batch 4 --repeats 3 --json "$OUT/sam3_step_cuda.json" 2>&1 | tee "$OUT/sam3_step.log"
python3 benchmarks/data_pipeline.py --device cuda --workers 8 --source-sizes 560x510 1500x1000 --ablate-affine \
  --json "$OUT/data_pipeline_cuda.json" 2>&1 | tee "$OUT/data_pipeline.log"
