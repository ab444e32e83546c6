#!/usr/bin/env bash
# For scripts/test.sh: when running as root and CI=true (or VLSM_START_SLURM=1), install the Debian packages if
# missing, start the single-node cluster in a scratch folder and wait until it answers. Idempotent. Exports
# nothing: prints `export SLURM_CONF=...` on stdout (use: eval "$(bash slurm/ci_start.sh)"); slurm/start.sh also
# writes that line to $VLSM_SLURM_BASE/env.sh (default /tmp/vlsm-slurm-ci/env.sh), where tests/slurm_cluster.py
# looks when SLURM_CONF is not set. Elsewhere it does nothing and exits 0. Stop it with slurm/stop.sh BASE.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${CI:-}" != true ] && [ "${VLSM_START_SLURM:-}" != 1 ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "slurm/ci_start: not root, cannot install or start a cluster (the Slurm tests will say so)" >&2
  exit 0
fi
PKGS="slurmctld slurmd slurm-client munge slurmdbd mariadb-server"
if ! command -v slurmctld >/dev/null || ! command -v slurmdbd >/dev/null || ! command -v mariadbd >/dev/null \
  || ! command -v srun >/dev/null || ! command -v munged >/dev/null; then
  echo "== installing $PKGS (about 15-40 s)" >&2
  apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $PKGS >&2
fi
export VLSM_SLURM_BASE=${VLSM_SLURM_BASE:-/tmp/vlsm-slurm-ci}
slurm/start.sh "$VLSM_SLURM_BASE" | tail -n 1
