#!/bin/sh
# Builds and runs every cargo-fuzz target in fuzz/.
#   fuzz.sh [SECONDS]          the long run (`make fuzz`, 300 s each): optimised
#                              build in fuzz/target, corpus kept in fuzz/corpus/
#   fuzz.sh --quick [SECONDS]  the short run in `make test` (default 5 s each): an
#                              unoptimised build (about 3 min from scratch on 2 cores
#                              instead of 12) kept in $SHIFTER_FUZZ_TARGET_DIR
#                              (default /var/cache/shifter-rs/fuzz-target, outside the
#                              clone so CI machines reuse it; built there when cold),
#                              a fresh corpus from fuzz/seeds/ only, and, as root,
#                              every squashfs round trip also loop-mounted and read
#                              back through the kernel (SHIFTER_FUZZ_MOUNT=1).
# Installs cargo-fuzz into ~/.cargo/bin if missing. The toolchain is stable;
# RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its -Z flags.
# A crash stops the script with libFuzzer's report; the input is kept under
# fuzz/artifacts/<target>/ — turn it into a regression test in the crate concerned.
# Each target ends with a line `fuzz: <target> inputs=<n> exec/s=<n> failures=0`.
set -eu

QUICK=0
if [ "${1:-}" = --quick ]; then
    QUICK=1
    shift
fi
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
# debug assertions stay on so overflow and logic checks fire.
if [ $QUICK = 1 ]; then
    SECONDS_EACH=${1:-5}
    TARGET_DIR=${SHIFTER_FUZZ_TARGET_DIR:-/var/cache/shifter-rs/fuzz-target}
    mkdir -p "$TARGET_DIR"
    FLAGS="--sanitizer none --dev --target-dir $TARGET_DIR"
    CORPUS=$(mktemp -d /tmp/shifter-fuzz-corpus.XXXXXX)
    trap 'rm -rf "$CORPUS"' EXIT
    if [ "$(id -u)" = 0 ]; then
        export SHIFTER_FUZZ_MOUNT=1
    else
        echo "fuzz.sh: NOT ROOT - the squashfs round trip skips the kernel mount check" >&2
    fi
else
    SECONDS_EACH=${1:-10}
    # 16 codegen units cut the (from scratch, several-minute) build at a small
    # cost in exec/s.
    FLAGS="--sanitizer none --debug-assertions --codegen-units 16"
    CORPUS=corpus
fi
TARGETS=$(cargo fuzz list)

echo "fuzz.sh: building $(echo $TARGETS | wc -w) targets ($FLAGS)"
start=$(date +%s)
cargo fuzz build $FLAGS
echo "fuzz.sh: build took $(( $(date +%s) - start ))s"

for t in $TARGETS; do
    mkdir -p "$CORPUS/$t"
    # Hand-made starting inputs (small tars, real manifests, configs) in git; new
    # finds go to the corpus dir, which libFuzzer reads and writes.
    seeds=""
    [ -d "seeds/$t" ] && seeds="seeds/$t"
    # The round trip forks unsquashfs (and mounts) for every input; cap its input
    # size so a short run still covers many trees.
    extra=""
    [ "$t" = sqfs_roundtrip ] && extra="-max_len=4096"
    log="$CORPUS/fuzz-$t.log"
    [ $QUICK = 1 ] || log="target/fuzz-$t.log"
    mkdir -p "$(dirname "$log")"
    if ! cargo fuzz run $FLAGS "$t" "$CORPUS/$t" $seeds -- \
        -max_total_time="$SECONDS_EACH" -print_final_stats=1 $extra >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "fuzz.sh: $t FOUND A FAILURE; the input is in fuzz/artifacts/$t/" >&2
        exit 1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    if [ -z "$runs" ] || [ "$runs" = 0 ]; then
        tail -n 20 "$log" >&2
        echo "fuzz.sh: $t ran no input" >&2
        exit 1
    fi
    how=""
    [ "$t" = sqfs_roundtrip ] && [ -n "${SHIFTER_FUZZ_MOUNT:-}" ] && how=" (each image also kernel-mounted)"
    echo "fuzz: $t inputs=$runs exec/s=$rate failures=0$how"
done
echo "fuzz.sh: all targets ran ${SECONDS_EACH}s without a failure"
