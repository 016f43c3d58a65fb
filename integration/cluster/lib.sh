# Shared helpers for the cluster scripts. Sourced, not run.
# shellcheck shell=bash

TB=${SHIFTER_TB:-/tmp/shifter-tb}
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
NODE_COUNT=${SHIFTER_NODE_COUNT:-2}
REGISTRY_PORT=${SHIFTER_REGISTRY_PORT:-5000}
SLURMCTLD_PORT=${SHIFTER_SLURMCTLD_PORT:-7817}
SLURMD_PORT_BASE=${SHIFTER_SLURMD_PORT_BASE:-7900}
TEST_USER=${SHIFTER_TEST_USER:-shiftertest}
TEST_USER2=${SHIFTER_TEST_USER2:-shiftertest2}
GW_USER=${SHIFTER_GW_USER:-shiftergw}
BIN_DIR=${SHIFTER_BIN_DIR:-$REPO_ROOT/target/debug}

say() { printf '\033[1m[cluster]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[cluster] error:\033[0m %s\n' "$*" >&2; exit 1; }

# Prints the last lines of every log of the cluster, for failures.
log_tails() {
    local f
    for f in "$TB"/log/*; do
        [ -f "$f" ] || continue
        printf '\n===== %s (last 25 lines) =====\n' "$f" >&2
        tail -n 25 "$f" >&2
    done
}

# wait_for SECONDS DESCRIPTION CMD...: polls CMD every 0.1 s.
wait_for() {
    local secs=$1 what=$2
    shift 2
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            log_tails
            die "timed out after ${secs}s waiting for $what"
        fi
        sleep 0.1
    done
}

# start_daemon NAME CMD...: runs CMD in its own session in the background,
# logging to log/NAME.log and recording its PID in pids/NAME.pid.
start_daemon() {
    local name=$1
    shift
    setsid "$@" >>"$TB/log/$name.log" 2>&1 </dev/null &
    echo $! >"$TB/pids/$name.pid"
}

# env_add KEY VALUE: records a fact about the cluster in $TB/env.
env_add() {
    printf "export %s='%s'\n" "$1" "$2" >>"$TB/env"
}

ensure_user() {
    local name=$1 system=${2:-}
    id -u "$name" >/dev/null 2>&1 && return 0
    if [ -n "$system" ]; then
        useradd --system --create-home --home-dir "/var/lib/$name" --shell /usr/sbin/nologin "$name"
    else
        useradd --create-home --shell /bin/bash "$name"
    fi
}

node_names() {
    local i out=""
    for i in $(seq 1 "$NODE_COUNT"); do out="$out n$i"; done
    echo "${out# }"
}
