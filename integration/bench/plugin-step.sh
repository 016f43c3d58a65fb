#!/usr/bin/env bash
# Time the Slurm plugin adds to a step: `srun -N2 --image=X /bin/true` against
# `srun -N2 /bin/true`, 30 runs each, interleaved in one run on the local cluster
# (median and p95 of each and the difference). Not a test: `make bench` runs it.
# Uses a running cluster ($SHIFTER_TB) or starts one and stops it afterwards.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
export SHIFTER_TB=${SHIFTER_TB:-/tmp/shifter-tb}
started=0
if [ ! -e "$SHIFTER_TB/pids" ]; then
    "$repo/integration/cluster/up.sh"
    started=1
fi
[ "$started" = 1 ] && trap '"$repo/integration/cluster/down.sh"' EXIT
cd "$repo"
SHIFTER_E2E_REQUIRED=1 cargo test -q -p shifter-integration --test plugin -- --ignored --nocapture bench_added_time_per_two_node_step
