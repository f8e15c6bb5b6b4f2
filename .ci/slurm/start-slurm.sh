#!/usr/bin/env bash
# A real one-node Slurm cluster on this machine, for tests/hpc (see .ci/slurm/README.md).
#
#   .ci/slurm/start-slurm.sh     install (Debian packages), configure and start munged,
#                                slurmctld and slurmd; wait until the node is idle
#   .ci/slurm/stop-slurm.sh      cancel all jobs and stop the three daemons
#
# Needs root and Debian's package registry; works without systemd (daemons are started
# directly). Idempotent: when everything is already up with this configuration it only
# checks and exits 0 (in well under 2 s).
#
# The cluster:
#   ClusterName=outpost, node <hostname -s> at 127.0.0.1 with this machine's cores
#   partitions  debug (default) and batch, both on that node, OverSubscribe=FORCE:4 so
#               several one-core jobs (several users' jobs) run on the node at once
#   accounts    physics, chemistry and bench. A job submitted with any other --account
#               is refused at submit time, by slurmctld, with
#                 sbatch: error: Job's account not permitted: nope (allowed: physics,...)
#                 sbatch: error: Batch job submission failed: Invalid account or
#                 account/partition combination specified
#               A job with no --account is accepted (and has no account). These names
#               are repeated in tests/hpc/conftest.py and .ci/slurm/README.md.
#
# Why a job_submit.lua and not the partitions' AllowAccounts: without slurmdbd a job has
# no association, and slurmctld checks AllowAccounts against the association's account,
# not --account, so AllowAccounts refuses every job ("Job's account not known, so it
# can't use this partition"). Running slurmdbd would need a MariaDB server as well.
set -euo pipefail

MARKER="# written by outpost .ci/slurm/start-slurm.sh"
CONF=/etc/slurm/slurm.conf
LUA=/etc/slurm/job_submit.lua
ACCOUNTS=physics,chemistry,bench
LOGDIR=/var/log/slurm
STATEDIR=/var/lib/slurm
TIMEOUT=${SLURM_START_TIMEOUT:-60}

say() { printf 'slurm: %s\n' "$*" >&2; }

if [ "$(id -u)" != 0 ]; then
  say "not root: nothing done (run $0 as root to get a local Slurm cluster)"
  exit 0
fi

dump_logs() {
  local f
  for f in "$LOGDIR/slurmctld.log" "$LOGDIR/slurmd.log" /var/log/munge/munged.log; do
    [ -f "$f" ] || continue
    echo "----- last 50 lines of $f" >&2
    tail -n 50 "$f" >&2
  done
}

die() { say "ERROR: $*"; dump_logs; exit 1; }

# alive PID NAME: is process PID running, and is it NAME? A killed daemon can stay a
# zombie for a while here (PID 1 reaps slowly): that counts as dead.
alive() {
  [ -n "$1" ] && [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ] &&
    ! grep -qE '^State:[[:space:]]+[ZX]' "/proc/$1/status" 2>/dev/null
}

# running PIDFILE NAME: is the daemon of that pid file running, and is it NAME?
running() {
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 1
  alive "$pid" "$2"
}

# Stop the daemon whose pid file is $1 (and named $2), waiting up to 10 s.
stop_daemon() {
  local pid
  running "$1" "$2" || return 0
  pid=$(cat "$1")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do
    alive "$pid" "$2" || return 0
    sleep 0.2
  done
  kill -9 "$pid" 2>/dev/null || true
}

# ---- packages ------------------------------------------------------------------------
# slurm-wlm is only a metapackage for these three; without --no-install-recommends it also
# drags in some forty -dev and extra plugin packages that nothing here uses.
PACKAGES=(slurmctld slurmd slurm-client munge)
missing=()
for p in "${PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  # Without systemd the packages' postinst scripts cannot start anything (policy-rc.d or
  # "could not determine current runlevel"): that's expected, we start the daemons below.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

# ---- munge ---------------------------------------------------------------------------
# munged refuses to start unless its key and directories are owned by munge and not
# group/world writable.
install -d -o munge -g munge -m 0700 /etc/munge /var/log/munge
install -d -o munge -g munge -m 0711 /var/lib/munge
install -d -o munge -g munge -m 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
  say "creating /etc/munge/munge.key"
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key

if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  say "starting munged"
  # munged forks into the background itself; --force gets past a stale socket left by
  # a munged that was killed.
  runuser -u munge -- /usr/sbin/munged --force
  for _ in $(seq 50); do
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
    sleep 0.1
  done
  munge -n | unmunge >/dev/null || die "munge does not work"
fi

# ---- slurm.conf ----------------------------------------------------------------------
HOST=$(hostname -s)
# The node's real topology (CPUs, sockets, cores, threads) as slurmd sees it, so that
# slurmd's registration matches the configuration; memory is declared a bit lower than
# what the node has (it is not a consumable resource here: it only bounds --mem).
read -r -a hw < <(slurmd -C | head -n 1)
node_line="NodeName=$HOST NodeAddr=127.0.0.1"
for kv in "${hw[@]}"; do
  case "$kv" in
    NodeName=*) ;;
    RealMemory=*) node_line+=" RealMemory=$(( ${kv#RealMemory=} * 9 / 10 ))" ;;
    *) node_line+=" $kv" ;;
  esac
done
node_line+=" State=UNKNOWN"

new_conf=$(cat <<EOF
$MARKER
# A one-node test cluster; rewritten by that script whenever this marker is present.
ClusterName=outpost
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# $LUA: refuses jobs whose --account is not one of $ACCOUNTS.
JobSubmitPlugins=lua
# Refuse at submit time (not leave pending) a job that breaks a partition's limits.
EnforcePartLimits=ALL
StateSaveLocation=$STATEDIR/slurmctld
SlurmdSpoolDir=$STATEDIR/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# A node that was down comes back as soon as its slurmd registers.
ReturnToService=2
# Short times, for tests: finished jobs leave slurmctld's memory after 30 s, a cancelled
# job gets 5 s between SIGTERM and SIGKILL.
MinJobAge=30
KillWait=5
InactiveLimit=0
$node_line
# Both partitions on the one node; FORCE:4 lets up to 4 jobs share each core, so several
# users' jobs run at once on this 2-core node.
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
PartitionName=batch Nodes=ALL Default=NO MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF
)

# job_submit.lua: a Lua set {["physics"]=true, ...} of the accounts.
lua_set=$(printf '["%s"]=true, ' ${ACCOUNTS//,/ })
new_lua=$(cat <<EOF
-- ${MARKER#\# }
-- slurmctld's job_submit plugin (JobSubmitPlugins=lua): the cluster's accounts.
local allowed = { ${lua_set% } }
local listed = "$ACCOUNTS"

local function check(job_desc, uid)
  local acct = job_desc.account
  if acct == nil or acct == "" or allowed[acct] then
    return slurm.SUCCESS
  end
  slurm.log_info("job_submit.lua: uid %d: account %s refused", uid, acct)
  slurm.log_user("Job's account not permitted: %s (allowed: %s)", acct, listed)
  return slurm.ESLURM_INVALID_ACCOUNT
end

function slurm_job_submit(job_desc, part_list, submit_uid)
  return check(job_desc, submit_uid)
end

function slurm_job_modify(job_desc, job_rec, part_list, modify_uid)
  return check(job_desc, modify_uid)
end

return slurm.SUCCESS
EOF
)

conf_changed=0
# write_ours FILE CONTENT: (re)write FILE unless it is someone else's (has no marker).
write_ours() {
  if [ -f "$1" ] && ! grep -qF "${MARKER#\# }" "$1"; then
    say "$1 was not written by this script: leaving it as it is"
  elif [ "$(cat "$1" 2>/dev/null)" != "$2" ]; then
    say "writing $1"
    install -d -m 0755 "$(dirname "$1")"
    printf '%s\n' "$2" >"$1.tmp"
    chmod 0644 "$1.tmp"
    mv "$1.tmp" "$1"
    conf_changed=1
  fi
}
write_ours "$CONF" "$new_conf"
write_ours "$LUA" "$new_lua"

# ---- daemons -------------------------------------------------------------------------
# The spool must be searchable by everyone: a job's script is run from
# $STATEDIR/slurmd/jobNNNNN/ as the job's user ("execve(): ... Permission denied" otherwise).
install -d -m 0755 "$LOGDIR" "$STATEDIR" "$STATEDIR/slurmctld" "$STATEDIR/slurmd"

# Daemons older than their configuration (changed now, or by a run that stopped before
# restarting them; a pid file is written when its daemon starts) are restarted: a changed
# node or partition line needs that, not only "scontrol reconfigure". Jobs and node state
# survive it in StateSaveLocation.
if [ "$conf_changed" = 1 ] || [ "$CONF" -nt /run/slurmctld.pid ] || [ "$CONF" -nt /run/slurmd.pid ] ||
  [ "$LUA" -nt /run/slurmctld.pid ]; then
  if running /run/slurmd.pid slurmd || running /run/slurmctld.pid slurmctld; then
    say "configuration changed: restarting slurmctld and slurmd"
  fi
  stop_daemon /run/slurmd.pid slurmd
  stop_daemon /run/slurmctld.pid slurmctld
fi

if ! running /run/slurmctld.pid slurmctld; then
  say "starting slurmctld"
  slurmctld || die "slurmctld did not start"
fi
slurmd_started=0
if ! running /run/slurmd.pid slurmd; then
  say "starting slurmd"
  slurmd_started=$(date +%s)
  slurmd || die "slurmd did not start"
fi

# slurmctld keeps the node's last state (e.g. "idle") in StateSaveLocation, so a fresh
# slurmd counts only once slurmctld has heard from it: SlurmdStartTime moves forward.
registered() {
  [ "$slurmd_started" = 0 ] && return 0
  local t
  t=$(scontrol show node -o "$HOST" 2>/dev/null | grep -o 'SlurmdStartTime=[^ ]*') || return 1
  t=$(date -d "${t#SlurmdStartTime=}" +%s 2>/dev/null) || return 1
  [ "$t" -ge $(( slurmd_started - 1 )) ]
}

# ---- wait for the node ---------------------------------------------------------------
deadline=$(( SECONDS + TIMEOUT ))
resumed=0
last=""
while :; do
  state=$(sinfo -h -N -n "$HOST" -o %T 2>/dev/null | head -n 1 || true)
  # "idle*" etc: the trailing "*" means the node is not responding (yet).
  running /run/slurmctld.pid slurmctld || die "slurmctld is not running"
  running /run/slurmd.pid slurmd || die "slurmd is not running"
  case "$state" in
    idle | mixed | allocated | completing) registered && break ;;
    *'*') ;; # not responding yet: wait for slurmd to register
    down* | drain*)
      if [ "$resumed" = 0 ]; then
        say "node $HOST is $state: resuming it"
        scontrol update nodename="$HOST" state=resume || true
        resumed=1
      fi
      ;;
  esac
  if [ "$state" != "$last" ]; then
    say "waiting for node $HOST (state: ${state:-no answer from slurmctld yet})"
    last=$state
  fi
  [ $SECONDS -lt $deadline ] || die "node $HOST not up after ${TIMEOUT}s (state: ${state:-?})"
  sleep 0.5
done

partitions=$(sinfo -h -o %R | paste -sd, -)
accounts=$ACCOUNTS
grep -qF "${MARKER#\# }" "$LUA" 2>/dev/null || accounts="(not ours: see $LUA)"
echo "slurm: node $HOST $state; partitions $partitions; accounts $accounts"
