#!/usr/bin/env bash
# Stop the one-node Slurm cluster of .ci/slurm/start-slurm.sh: cancel every job, then stop
# slurmd, slurmctld and munged. Only the daemons named in their pid files are signalled.
# Configuration, state (/var/lib/slurm) and logs (/var/log/slurm) are left in place, so
# start-slurm.sh brings the same cluster back.
set -euo pipefail

say() { printf 'slurm: %s\n' "$*" >&2; }

if [ "$(id -u)" != 0 ]; then
  say "not root: nothing done"
  exit 0
fi

# alive PID NAME: is process PID running, and is it NAME? (A zombie is not.)
alive() {
  [ -n "$1" ] && [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ] &&
    ! grep -qE '^State:[[:space:]]+[ZX]' "/proc/$1/status" 2>/dev/null
}

# stop_daemon PIDFILE NAME: SIGTERM the process if it is NAME, SIGKILL after 10 s.
stop_daemon() {
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 0
  alive "$pid" "$2" || return 0
  say "stopping $2 (pid $pid)"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do
    alive "$pid" "$2" || return 0
    sleep 0.2
  done
  say "$2 still running after 10 s: SIGKILL"
  kill -9 "$pid" 2>/dev/null || true
}

# (Only with slurmctld up: squeue takes 9 s to give up on a controller that is not there.)
if alive "$(cat /run/slurmctld.pid 2>/dev/null)" slurmctld &&
  jobs=$(squeue -h -o %A 2>/dev/null) && [ -n "$jobs" ]; then
  say "cancelling jobs: ${jobs//$'\n'/ }"
  # shellcheck disable=SC2086  # one argument per job id
  scancel $jobs || true
  # Let slurmd see the jobs' processes killed (KillWait=5) before it goes away itself.
  for _ in $(seq 40); do
    [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break
    sleep 0.25
  done
fi

stop_daemon /run/slurmd.pid slurmd
stop_daemon /run/slurmctld.pid slurmctld
stop_daemon /run/munge/munged.pid munged
say "stopped"
