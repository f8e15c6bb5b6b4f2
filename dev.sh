#!/usr/bin/env bash
# Outpost developer entry point. Installs what it needs, then runs it.
#   ./dev.sh demo    service + endpoint + a function, result printed
#   ./dev.sh test    the whole test suite (plain-install check, lint, unit, in-process API, end to end,
#                    globus-compute-sdk compatibility)
#   ./dev.sh bench   the benchmarks (benchmarks/README.md)
#   ./dev.sh compare Outpost against Dask, Celery and Parsl (benchmarks/compare.py)
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
VENV=.venv
COMPAT_VENV=.venv-compat

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root to run: $*" >&2; return 1; fi
}

apt_install() {
  # Debian packages, installed only when missing.
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

ensure_python() {
  command -v "$PY" >/dev/null || apt_install python3
  if ! "$PY" -c 'import venv, ensurepip' 2>/dev/null; then
    apt_install python3-venv
  fi
  "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "Outpost needs Python >= 3.11 (found $("$PY" --version))" >&2; exit 1; }
}

ensure_venv() {  # $1: extras ("" or "test")
  ensure_python
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    "$PY" -m venv "$VENV"
  fi
  local spec="."
  [ -n "${1:-}" ] && spec=".[$1]"
  # editable_mode=compat: the checkout goes on sys.path through a plain .pth line. The
  # default mode installs an import hook that every Python process of ours (service,
  # endpoint, each worker) loads at start (pathlib, fnmatch, urllib: ~1 MB and ~10-35 ms a
  # process) and that a `pip install` of Outpost does not have, so benchmarks would
  # count it.
  local stamp="$VENV/.installed-${1:-base}-compat"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    say "installing Outpost into $VENV"
    "$VENV/bin/pip" install -q -e "$spec" --config-settings editable_mode=compat
    touch "$stamp"
  fi
}

ensure_compat_venv() {
  # globus-compute-sdk lives in its own environment, as a user would install it.
  if [ ! -x "$COMPAT_VENV/bin/python" ]; then
    say "creating $COMPAT_VENV with globus-compute-sdk 4.19.0"
    "$PY" -m venv "$COMPAT_VENV"
  fi
  "$COMPAT_VENV/bin/python" -c 'import globus_compute_sdk' 2>/dev/null ||
    "$COMPAT_VENV/bin/pip" install -q "globus-compute-sdk==4.19.0"
  # Parsl's GlobusComputeExecutor wraps that SDK's Executor (tests/compat/test_executor_amqp.py).
  "$COMPAT_VENV/bin/python" -c 'import parsl' 2>/dev/null ||
    "$COMPAT_VENV/bin/pip" install -q "parsl>=2026.10.26,<2027"
}


quietly() {  # run a command; show its output only if it fails
  local out
  out=$(mktemp)
  if ! "$@" >"$out" 2>&1; then cat "$out" >&2; rm -f "$out"; return 1; fi
  rm -f "$out"
}

check_plain_install() {
  # What `pip install outpost-faas` gives, without extras: build the wheel, install it
  # alone in a new venv and run the command, the demo and both local engines from outside
  # the checkout (so nothing is imported from the source tree). The wheel is built from a
  # copy of the source tree (setuptools writes in the tree it builds, and $VENV's
  # editable install may be building in this one), with a pip of its own; the new venv
  # gets no pip (or setuptools) of its own, and nothing is byte-compiled ahead in it.
  local plain=.venv-plain tmp
  tmp=$(mktemp -d)
  mkdir "$tmp/src"
  tar -c --exclude=./.git --exclude='./.venv*' --exclude=./build --exclude='./*.egg-info' \
    --exclude=node_modules --exclude=__pycache__ --exclude=.mypy_cache --exclude=.ruff_cache \
    . | tar -x -C "$tmp/src"
  say "plain install: building the wheel"
  "$PY" -m venv "$tmp/pip"
  quietly "$tmp/pip/bin/pip" wheel -q --no-deps -w "$tmp/wheels" "$tmp/src" || return 1
  rm -rf "$plain"
  "$PY" -m venv --without-pip "$plain"
  say "plain install: pip install $(basename "$tmp"/wheels/outpost_faas-*.whl) (no extras) into $plain"
  quietly "$tmp/pip/bin/pip" --python "$plain/bin/python" install -q --no-compile \
    "$tmp"/wheels/outpost_faas-*.whl || return 1
  rm -rf "$tmp"
  local here=$PWD
  ( cd "$(mktemp -d)" &&
    "$here/$plain/bin/outpost" --help >/dev/null &&
    "$here/$plain/bin/outpost" demo &&
    "$here/$plain/bin/python" "$here/.ci/plain_install_check.py" ) || {
      echo "the plain install (no extras) is broken: see above" >&2; return 1; }
}

ensure_browser() {
  # The web console's tests drive Debian's Chromium through Debian's chromedriver
  # (tests/service/console; openssl makes the TLS test's certificate); no browser is
  # downloaded at test time.
  apt_install chromium chromium-driver openssl ||
    say "could not install chromium: the console browser tests will be skipped (CI fails them)"
}

ensure_slurm() {
  # The HPC tests (tests/hpc) run on a one-node Slurm cluster on loopback: installed
  # from Debian's packages and started here when root (.ci/slurm/README.md).
  [ "$(id -u)" = 0 ] || return 0
  say "Slurm (one node, loopback)"
  .ci/slurm/start-slurm.sh
}

ensure_user_python() {
  # The multi-user tests (as root) run user endpoints as test accounts, from a venv built
  # with the system Python (tests/multi_user/uservenv.py); it needs Debian's venv module.
  [ "$(id -u)" = 0 ] || return 0
  [ -x /usr/bin/python3 ] || apt_install python3
  /usr/bin/python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv
  command -v useradd >/dev/null || apt_install passwd
}

apt_install_servers() {
  # Server packages whose own system services must not start: the tests run private
  # instances on free loopback ports with their own data directories (tests/servers/).
  local missing=() p policy=/usr/sbin/policy-rc.d added=""
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "note: ${missing[*]} missing (need root to install); their tests will skip" >&2
    return 0
  fi
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && added=1
  fi
  apt_install "${missing[@]}"
  [ -n "$added" ] && rm -f "$policy"
  return 0
}

ensure_servers() {
  # Real servers the tests start on loopback with private data directories and free
  # ports (tests/servers/): PostgreSQL, RabbitMQ, haproxy, nginx (the reverse-proxy
  # recipe). Only the binaries are used; the services Debian's packages start are not.
  apt_install_servers postgresql haproxy rabbitmq-server nginx-light
}

ensure_ops_tools() {
  # Operations tests: nginx (the reverse-proxy recipe, tests/e2e/test_reverse_proxy.py),
  # systemd-analyze (checks the generated unit files) and Chromium (renders /docs).
  [ "$(id -u)" = 0 ] || return 0
  command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || apt_install nginx-light
  command -v systemd-analyze >/dev/null || apt_install systemd
  command -v chromium >/dev/null || apt_install chromium
}

ensure_issuer() {
  # The sign-in tests run a real OpenID Connect issuer (panva's oidc-provider from the npm
  # registry, on Debian's Node): tests/servers/oidc.
  command -v node >/dev/null && command -v npm >/dev/null || {
    [ "$(id -u)" = 0 ] || command -v sudo >/dev/null || return 0
    apt_install nodejs npm
  }
  local dir=tests/servers/oidc
  if [ ! -d "$dir/node_modules/oidc-provider" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules" ]; then
    say "npm ci (test OpenID Connect issuer)"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    touch "$dir/node_modules"
  fi
}

# Install steps that do not depend on each other run at the same time (`./dev.sh test`):
# each in the background with its output kept, shown once it has ended. Only one of them
# runs apt-get (dpkg's lock is machine-wide). If the script stops early (a step failed),
# it first waits for the jobs under way, so that none is left running.
JOB_PIDS=() JOB_NAMES=() JOB_LOGS=()
start_job() {  # NAME COMMAND [ARGS...]
  local name=$1 log
  shift
  log=$(mktemp)
  say "$name: started in the background"
  ( SECONDS=0; "$@"; say "$name: done in $SECONDS s" ) >"$log" 2>&1 &
  JOB_PIDS+=("$!") JOB_NAMES+=("$name") JOB_LOGS+=("$log")
}

wait_jobs() {  # wait for every job, show its output; fail if one failed
  local i failed=()
  for i in "${!JOB_PIDS[@]}"; do
    if ! wait "${JOB_PIDS[$i]}"; then
      failed+=("${JOB_NAMES[$i]}")
      echo "${JOB_NAMES[$i]}: FAILED (its output is above)" >>"${JOB_LOGS[$i]}"
    fi
    cat "${JOB_LOGS[$i]}" >&2
    rm -f "${JOB_LOGS[$i]}"
  done
  JOB_PIDS=() JOB_NAMES=() JOB_LOGS=()
  [ ${#failed[@]} -eq 0 ] || { echo "failed: ${failed[*]}" >&2; return 1; }
}

wait_jobs_on_exit() {
  local rc=$?
  if [ ${#JOB_PIDS[@]} -gt 0 ]; then
    echo "waiting for the installs under way to end" >&2
    wait_jobs || true
  fi
  exit "$rc"
}

system_prerequisites() {
  # Everything apt-get may install, in turn (one dpkg lock), then what needs it.
  ensure_user_python
  ensure_servers
  ensure_ops_tools
  ensure_browser
  ensure_issuer
  ensure_slurm
}

cmd=${1:-help}
shift || true
case "$cmd" in
  demo)
    ensure_venv ""
    exec "$VENV/bin/outpost" demo "$@"
    ;;
  test)
    ensure_python
    # The Slurm cluster the HPC tests need is stopped after them if this run started it.
    slurm_was_up=0
    pid=$(cat /run/slurmctld.pid 2>/dev/null) &&
      [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = slurmctld ] && slurm_was_up=1
    trap wait_jobs_on_exit EXIT
    start_job "servers, browser, Node, Slurm" system_prerequisites
    start_job "$COMPAT_VENV" ensure_compat_venv
    start_job "plain install" check_plain_install
    ensure_venv test
    say "ruff"
    "$VENV/bin/ruff" check outpost tests benchmarks
    say "mypy (all of outpost)"
    "$VENV/bin/mypy" outpost
    wait_jobs
    trap - EXIT
    say "pytest"
    export OUTPOST_COMPAT_PYTHON="$PWD/$COMPAT_VENV/bin/python"
    rc=0
    "$VENV/bin/pytest" -q --durations=25 "$@" || rc=$?
    if [ "$(id -u)" = 0 ] && [ "$slurm_was_up" = 0 ]; then
      .ci/slurm/stop-slurm.sh || say "could not stop the Slurm cluster this run started"
    fi
    exit "$rc"
    ;;
  bench)
    ensure_venv test
    exec "$VENV/bin/python" benchmarks/run_all.py "$@"
    ;;
  compare)
    ensure_venv test
    exec "$VENV/bin/python" benchmarks/compare.py "$@"
    ;;
  *)
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
    ;;
esac
