#!/usr/bin/env bash
# Stop what slurm/start.sh started in BASE, by pid file (never by process name). Leaves BASE in place.
# Usage: slurm/stop.sh [BASE]     (default $VLSM_SLURM_BASE or /tmp/vlsm-slurm)
B=$(realpath -m "${1:-${VLSM_SLURM_BASE:-/tmp/vlsm-slurm}}")
export SLURM_CONF=$B/etc/slurm.conf
stop_pid() {  # stop_pid NAME PIDFILE: TERM, wait up to 15 s, then KILL
  [ -f "$2" ] || return 0
  local pid; pid=$(cat "$2")
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$pid" 2>/dev/null && { echo "$1 ($pid) ignored TERM: KILL" >&2; kill -KILL "$pid"; }
    echo "stopped $1 ($pid)" >&2
  fi
  rm -f "$2"
}
# cancel jobs first, so that no job step outlives slurmd
if [ -f "$B/slurmctld.pid" ] && kill -0 "$(cat "$B/slurmctld.pid")" 2>/dev/null; then
  timeout 10 scancel --quiet --user="$(id -un)" 2>/dev/null || true
  for _ in $(seq 1 40); do [ -z "$(timeout 5 squeue -h -t R,CG 2>/dev/null)" ] && break; sleep 0.5; done
fi
stop_pid slurmd "$B/slurmd.pid" & stop_pid slurmctld "$B/slurmctld.pid" & wait
stop_pid slurmdbd "$B/slurmdbd.pid" & stop_pid mariadbd "$B/mysql/mysqld.pid" & stop_pid munged "$B/munge/munged.pid" & wait
exit 0
