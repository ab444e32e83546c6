#!/usr/bin/env bash
# The test command of README.md (CI runs exactly this): install what the tests need, lint, run pytest.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m slow` or `bash scripts/test.sh -k spec`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
ensure_venv
bash scripts/install_chromium.sh   # headless Chromium for the report test (installs only as root, once)
# A real single-node Slurm for the cluster tests: started when root and CI=true (or VLSM_START_SLURM=1),
# a no-op elsewhere (those tests then skip and say why). Stop it with: slurm/stop.sh /tmp/vlsm-slurm-ci
slurm_env=$(bash slurm/ci_start.sh)
eval "$slurm_env"
.venv/bin/ruff check vlsm_batch tests benchmarks
.venv/bin/ruff format --check vlsm_batch tests benchmarks
.venv/bin/mypy   # types over vlsm_batch/ ([tool.mypy] in pyproject.toml: check_untyped_defs, clean)
exec .venv/bin/python -m pytest "$@"
