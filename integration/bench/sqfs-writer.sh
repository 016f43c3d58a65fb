#!/usr/bin/env bash
# sqfs-writer against mksquashfs on the same directory tree: wall time, CPU time,
# peak RSS and image size per compressor, RUNS runs each, side by side.
#   SQFS_BENCH_SRC  tree to pack (default /usr/share)
#   RUNS            runs per tool and compressor (default 3)
#   THREADS         compression threads for both tools (default: all cores)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
src=${SQFS_BENCH_SRC:-/usr/share}
runs=${RUNS:-3}
threads=${THREADS:-$(nproc)}
command -v mksquashfs >/dev/null || { echo "mksquashfs (squashfs-tools) is needed" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "/usr/bin/time (Debian package time) is needed" >&2; exit 1; }

(cd "$root" && cargo build --quiet --release -p sqfs-writer --example dir2sqfs)
bin="${CARGO_TARGET_DIR:-$root/target}/release/examples/dir2sqfs"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "source: $src ($(du -sh "$src" 2>/dev/null | cut -f1), $(find "$src" | wc -l) entries), $runs runs, $threads threads"
printf '%-11s %-8s %8s %8s %9s %12s\n' tool comp wall_s cpu_s rss_mib bytes
measure() { # tool comp command...
    local tool=$1 comp=$2; shift 2
    for _ in $(seq "$runs"); do
        rm -f "$work/out.sqfs"
        /usr/bin/time -o "$work/t" -f '%e %U %S %M' "$@" >/dev/null 2>&1
        read -r wall user sys rss <"$work/t"
        awk -v t="$tool" -v c="$comp" -v w="$wall" -v u="$user" -v s="$sys" -v r="$rss" \
            -v b="$(stat -c %s "$work/out.sqfs")" \
            'BEGIN { printf "%-11s %-8s %8.2f %8.2f %9.1f %12d\n", t, c, w, u + s, r / 1024, b }'
    done
}
for comp in gzip zstd:3 lz4; do
    case $comp in
        gzip) mk=(-comp gzip) ;;
        zstd:3) mk=(-comp zstd -Xcompression-level 3) ;;
        lz4) mk=(-comp lz4) ;;
    esac
    measure sqfs-writer "$comp" "$bin" "$src" "$work/out.sqfs" "$comp" 131072 "$threads"
    measure mksquashfs "$comp" mksquashfs "$src" "$work/out.sqfs" -noappend -no-xattrs \
        -all-time 0 -processors "$threads" "${mk[@]}"
done
