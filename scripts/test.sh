#!/usr/bin/env bash
# The test command of README.md (CI runs exactly this): install what the tests need, lint, run pytest.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m slow` or `bash scripts/test.sh -k spec`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
ensure_venv
bash scripts/install_chromium.sh   # headless Chromium for the report test (installs only as root, once)
.venv/bin/ruff check vlsm_batch tests benchmarks
exec .venv/bin/python -m pytest "$@"
