#!/bin/sh
# Builds and runs every cargo-fuzz target in fuzz/ for SECONDS each (default 10).
# `make fuzz` runs it with 300. Installs cargo-fuzz into ~/.cargo/bin if missing.
# The toolchain is stable; RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its -Z flags.
# A crash stops the script with libFuzzer's report; the input is kept under
# fuzz/artifacts/<target>/ — turn it into a regression test in the crate concerned.
set -eu

SECONDS_EACH=${1:-10}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$HOME/.cargo/bin:$PATH"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi

cd "$ROOT/fuzz"
# No sanitizer: the targets are safe Rust (the unsafe code is in -sys crates the
# targets do not reach), so AddressSanitizer would only slow builds and runs;
# debug assertions stay on so overflow and logic checks fire; 16 codegen units
# cut the (from scratch, several-minute) build at a small cost in exec/s.
FLAGS="--sanitizer none --debug-assertions --codegen-units 16"
TARGETS=$(cargo fuzz list)

echo "fuzz.sh: building $(echo $TARGETS | wc -w) targets"
cargo fuzz build $FLAGS

for t in $TARGETS; do
    mkdir -p "corpus/$t"
    # Hand-made starting inputs (small tars, real manifests) in git; new finds go to
    # corpus/, which libFuzzer reads and writes.
    seeds=""
    [ -d "seeds/$t" ] && seeds="seeds/$t"
    # The round trip forks unsquashfs for every input; cap its input size so a
    # short run still covers many trees.
    extra=""
    [ "$t" = sqfs_roundtrip ] && extra="-max_len=4096"
    echo "fuzz.sh: $t for ${SECONDS_EACH}s"
    log="target/fuzz-$t.log"
    if ! cargo fuzz run $FLAGS "$t" "corpus/$t" $seeds -- \
        -max_total_time="$SECONDS_EACH" -print_final_stats=1 $extra >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "fuzz.sh: $t FOUND A FAILURE; the input is in fuzz/artifacts/$t/" >&2
        exit 1
    fi
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec)' "$log" | tr '\n' ' '
    echo
done
echo "fuzz.sh: all targets ran ${SECONDS_EACH}s without a failure"
