#!/usr/bin/env bash
# Runs the test tiers. `all` (what `make test` and CI run): lint, build, unit and
# root tests, then the end-to-end tier on a freshly started local cluster, then
# cluster-down with a leak check, then the Debian package test
# (integration/package-test.sh). A tier that fails fails the run.
#   run-tests.sh [all|unit|e2e|package] [-- extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
tier=${1:-all}
shift || true
export SHIFTER_TB=${SHIFTER_TB:-/tmp/shifter-tb}
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

banner() { printf '\n\033[1m==== %s ====\033[0m\n' "$*"; }
t0=$SECONDS

# Every test that cannot run here records itself (crates/test-skip); the list
# is printed however the run ends, and a run with any skip fails.
SHIFTER_SKIP_LOG=$(mktemp /tmp/shifter-skips.XXXXXX)
export SHIFTER_SKIP_LOG
report_skips() {
    if [ -s "$SHIFTER_SKIP_LOG" ]; then
        banner "$(wc -l <"$SHIFTER_SKIP_LOG") tests SKIPPED (make test allows none: install what they name, run as root)"
        sort "$SHIFTER_SKIP_LOG" | uniq -c
    fi
}
trap report_skips EXIT

if [ "$tier" = all ]; then
    integration/install-deps.sh
    banner "lint: cargo fmt --check, cargo clippy -D warnings"
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    banner "build"
    cargo build --workspace --all-targets
fi

if [ "$tier" = all ] || [ "$tier" = unit ]; then
    banner "unit and root tests (root: $( [ "$(id -u)" = 0 ] && echo yes || echo 'NO - root tests will skip'))"
    cargo test --no-fail-fast --workspace --exclude shifter-integration "$@"
fi

if [ "$tier" = all ]; then
    # Seconds per target; the build is kept in /var/cache/shifter-rs (see fuzz.sh).
    banner "fuzz: every cargo-fuzz target for ${SHIFTER_FUZZ_SECONDS:-5}s, squashfs images kernel-mounted"
    integration/fuzz.sh --quick "${SHIFTER_FUZZ_SECONDS:-5}"
fi

if [ "$tier" = all ] || [ "$tier" = e2e ]; then
    banner "end-to-end tests on the local cluster"
    if [ -e "$SHIFTER_TB/pids" ]; then
        echo "a cluster is already up at $SHIFTER_TB; stopping it first" >&2
        integration/cluster/down.sh
    fi
    integration/cluster/up.sh
    rc=0
    # Select the integration crate's test targets by name but keep --workspace, so
    # dependency features resolve exactly as in the build above and nothing rebuilds
    # (`-p shifter-integration` alone would recompile dozens of crates).
    targets=()
    for t in integration/tests/*.rs; do targets+=(--test "$(basename "$t" .rs)"); done
    SHIFTER_E2E_REQUIRED=1 cargo test --no-fail-fast --workspace "${targets[@]}" "$@" -- --test-threads=1 || rc=$?
    if [ $rc != 0 ]; then
        banner "end-to-end tier FAILED; cluster logs follow"
        for f in "$SHIFTER_TB"/log/*; do printf '\n--- %s ---\n' "$f"; tail -n 40 "$f"; done
    fi
    banner "cluster-down and leak check"
    integration/cluster/down.sh || rc=$?
    [ $rc = 0 ] || exit $rc
fi
if [ "$tier" = all ] || [ "$tier" = package ]; then
    # After the e2e cluster is down: the package test brings up its own, on the
    # installed files, and purges the package again.
    banner "package: make deb, dpkg -i, demo flow on the installed files, remove, purge"
    integration/package-test.sh
fi
if [ -s "$SHIFTER_SKIP_LOG" ]; then
    banner "FAILED: tests were skipped (listed below)"
    exit 1
fi
rm -f "$SHIFTER_SKIP_LOG"
banner "all requested tiers passed in $((SECONDS - t0))s, nothing skipped"
