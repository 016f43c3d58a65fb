#!/usr/bin/env bash
# `make reliability`: the hostile-input, faults and load tiers (issue 7) on a local
# cluster this script brings up and down itself, plus a short run of every fuzz
# target, then one table of what was tried, what held and what was lost.
# Every test states its figures as `RELIABILITY<TAB>tier<TAB>check<TAB>tried<TAB>
# held<TAB>lost` (integration/src/report.rs); the run fails if a test fails or
# anything was lost.
#   reliability.sh [FUZZ_SECONDS]   (default 10 per fuzz target; 0 skips fuzzing)
set -euo pipefail
cd "$(dirname "$0")/.."
fuzz_seconds=${1:-10}
export SHIFTER_TB=${SHIFTER_TB:-/tmp/shifter-tb}
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
figures=$(mktemp /tmp/shifter-reliability.XXXXXX)
export SHIFTER_RELIABILITY_LOG=$figures
banner() { printf '\n\033[1m==== %s ====\033[0m\n' "$*"; }
t0=$SECONDS
rc=0

cargo build --workspace --all-targets

if [ "$fuzz_seconds" != 0 ]; then
    banner "fuzz: every target for ${fuzz_seconds}s"
    fuzz_out=$(mktemp /tmp/shifter-reliability-fuzz.XXXXXX)
    integration/fuzz.sh --quick "$fuzz_seconds" | tee "$fuzz_out" || rc=1
    # fuzz: <target> inputs=<n> exec/s=<n> failures=0
    sed -n 's/^fuzz: \([a-z_]*\) inputs=\([0-9]*\) .*failures=\([0-9]*\).*/\1 \2 \3/p' "$fuzz_out" |
        while read -r t n f; do
            printf 'RELIABILITY\tfuzz\t%s: inputs without a crash\t%s\t%s\t%s\n' "$t" "$n" "$((n - f))" "$f"
        done >>"$figures"
    rm -f "$fuzz_out"
fi

banner "hostile, faults and load tiers on the local cluster at $SHIFTER_TB"
if [ -e "$SHIFTER_TB/pids" ]; then
    echo "a cluster is already up at $SHIFTER_TB; stopping it first" >&2
    integration/cluster/down.sh
fi
integration/cluster/up.sh
SHIFTER_E2E_REQUIRED=1 cargo test --no-fail-fast --workspace \
    --test hostile --test faults --test load -- --test-threads=1 || rc=1
banner "cluster-down and leak check"
integration/cluster/down.sh || rc=1

banner "reliability figures ($((SECONDS - t0))s)"
awk -F'\t' '
    $1 == "RELIABILITY" {
        printf "| %-7s | %-58s | %9s | %9s | %4s |\n", $2, $3, $4, $5, $6
        tried += $4; held += $5; lost += $6; n++
    }
    BEGIN {
        printf "| %-7s | %-58s | %9s | %9s | %4s |\n", "tier", "check", "tried", "held", "lost"
        printf "|---------|------------------------------------------------------------|-----------|-----------|------|\n"
    }
    END {
        printf "| %-7s | %-58s | %9d | %9d | %4d |\n", "total", n " checks", tried, held, lost
        if (lost != 0) exit 1
    }' "$figures" || rc=1
rm -f "$figures"
if [ $rc != 0 ]; then
    echo "reliability: FAILED (a test failed or something was lost; see above)" >&2
    exit 1
fi
echo "reliability: every check held, nothing lost"
