#!/usr/bin/env bash
# The quickstart of README.md: a small real prompt-tuning study, from YAML to a plot, on this machine.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
ensure_venv || exit 1
VB=.venv/bin/vlsm-batch
SPEC=${1:-specs/quickstart.yaml}
$VB submit "$SPEC"; rc=$?
$VB status || exit 1
$VB analyze --by prompt_depth || exit 1
exit $rc
