#!/bin/bash
# Startup overhead of `shifter` against a hand-made floor, measured in one run.
#
#   shifter:  shifter --image=id:<busybox image> /bin/true            (x RUNS)
#   floor:    unshare -m + losetup/mount squashfs ro + chroot + /bin/true (x RUNS)
#
# Prints median and p95 wall time of each and their ratio. Not a test: run it
# by hand as root, ideally with a release build:
#   cargo build --release -p shifter && integration/bench/shifter-startup.sh
# Environment: SHIFTER_BIN (default target/release/shifter, else target/debug),
# RUNS (default 50), BENCH_USER (default shiftertest, else nobody), SQFS_COMP (the
# image's compression: gzip (default), zstd, lz4; the first exec from a freshly
# mounted image pays its decompression, floor and shifter alike).
set -euo pipefail

[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
repo=$(cd "$(dirname "$0")/../.." && pwd)
runs=${RUNS:-50}
bin=${SHIFTER_BIN:-}
if [ -z "$bin" ]; then
    bin=$repo/target/release/shifter
    [ -x "$bin" ] || bin=$repo/target/debug/shifter
fi
[ -x "$bin" ] || { echo "no shifter binary; cargo build -p shifter" >&2; exit 1; }
user=${BENCH_USER:-shiftertest}
id -u "$user" >/dev/null 2>&1 || user=nobody

work=$(mktemp -d /tmp/shifter-bench.XXXXXX)
chmod 0755 "$work"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work"/tree/{bin,etc,proc,sys,dev,tmp} "$work/images" "$work/floor"
chmod 0755 "$work/images"
cp "$(command -v busybox)" "$work/tree/bin/busybox"
ln -s busybox "$work/tree/bin/true"
ln -s busybox "$work/tree/bin/sh"
mksquashfs "$work/tree" "$work/img.sqfs" -noappend -all-root -quiet -comp "${SQFS_COMP:-gzip}" >/dev/null
img_id=$(sha256sum "$work/img.sqfs" | cut -c1-64)
mv "$work/img.sqfs" "$work/images/$img_id.squashfs"
printf '{"id":"%s","format":"squashfs","itype":"custom","env":["PATH=/bin"]}\n' "$img_id" >"$work/images/$img_id.json"
chmod 0644 "$work/images/"*
cat >"$work/shifter.toml" <<CONF
system = "bench"
image_dir = "$work/images"
mount_root = "$work/mnt"
CONF
chmod 0644 "$work/shifter.toml"
image=$work/images/$img_id.squashfs

now_us() { echo $(( $(date +%s%N) / 1000 )); }

measure() { # measure OUTFILE CMD...: appends the wall time of each run in µs
    local out=$1 t0 t1 i
    shift
    for i in $(seq 1 "$runs"); do
        t0=$(now_us)
        "$@" >/dev/null
        t1=$(now_us)
        echo $((t1 - t0)) >>"$out"
    done
}

stats() { # stats FILE -> "median p95" in µs
    sort -n "$1" | awk '{v[NR]=$1} END {m=v[int((NR+1)/2)]; p=v[int(NR*0.95+0.999)]; print m, p}'
}

floor() {
    unshare --mount --propagation slave sh -c \
        "mount -t squashfs -o loop,ro,nosuid,nodev '$image' '$work/floor' && exec chroot '$work/floor' /bin/true"
}

# Warm the page cache and the binaries once.
floor
"$bin" --config "$work/shifter.toml" --user "$user" --image="id:$img_id" /bin/true

: >"$work/t-floor"
: >"$work/t-shifter"
measure "$work/t-floor" floor
measure "$work/t-shifter" "$bin" --config "$work/shifter.toml" --user "$user" --image="id:$img_id" /bin/true

read -r f_med f_p95 < <(stats "$work/t-floor")
read -r s_med s_p95 < <(stats "$work/t-shifter")
left=$(losetup -a | grep -c "$work" || true)
awk -v fm="$f_med" -v fp="$f_p95" -v sm="$s_med" -v sp="$s_p95" -v n="$runs" -v b="$bin" -v l="$left" -v c="${SQFS_COMP:-gzip}" 'BEGIN {
    printf "runs: %d   binary: %s   image compression: %s\n", n, b, c
    printf "floor   (unshare+loop+mount+chroot+true): median %7.2f ms   p95 %7.2f ms\n", fm/1000, fp/1000
    printf "shifter --image=... /bin/true           : median %7.2f ms   p95 %7.2f ms\n", sm/1000, sp/1000
    printf "ratio shifter/floor: median %.2fx   p95 %.2fx   (target: median <= 2x and < 20 ms)\n", sm/fm, sp/fp
    printf "loop devices left behind: %d\n", l
}'
