#!/usr/bin/env bash
# Builds the pull benchmark's realistic image as an OCI layout, once, and caches it:
#   1: debootstrap --variant=minbase bookworm     2: + python3
#   3: + python3-numpy                            4: whiteouts (apt lists, docs, man
#                                                    pages; /usr/share/doc is opaque)
# Each layer is the difference between two successive root trees, as `docker build`
# would commit it. Needs network access to a Debian mirror the first time only.
#   debootstrap-image.sh OUT_LAYOUT_DIR
#   BENCH_CACHE   where the trees and the layout are kept (default /var/cache/shifter-bench)
#   DEBIAN_MIRROR (default http://deb.debian.org/debian)
set -euo pipefail
out=$1
cache=${BENCH_CACHE:-/var/cache/shifter-bench}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
here=$(cd "$(dirname "$0")" && pwd)

if [ -f "$cache/layout/index.json" ]; then
    rm -rf "$out" && cp -a "$cache/layout" "$out"
    exit 0
fi
command -v debootstrap >/dev/null || apt-get install -y -q debootstrap >/dev/null
mkdir -p "$cache" && cd "$cache"
rm -rf s1 s2 s3 s4 layout
say() { echo "debootstrap-image: $*" >&2; }

clean_apt() { rm -f "$1"/var/cache/apt/archives/*.deb "$1"/var/cache/apt/*.bin; }
in_chroot() { # tree command...: apt inside the tree, with /proc so maintainer scripts work
    local t=$1; shift
    mount -t proc proc "$t/proc"
    DEBIAN_FRONTEND=noninteractive chroot "$t" "$@" >>"$cache/build.log" 2>&1 || { umount "$t/proc"; return 1; }
    umount "$t/proc"
}

say "stage 1: debootstrap --variant=minbase bookworm (log: $cache/build.log)"
debootstrap --variant=minbase bookworm s1 "$mirror" >"$cache/build.log" 2>&1
in_chroot s1 apt-get update -q
clean_apt s1
say "stage 2: python3"
cp -a s1 s2
in_chroot s2 apt-get install -y -q --no-install-recommends python3
clean_apt s2
say "stage 3: python3-numpy"
cp -a s2 s3
in_chroot s3 apt-get install -y -q --no-install-recommends python3-numpy
clean_apt s3
say "stage 4: remove apt lists, docs and man pages"
cp -a s3 s4
rm -rf s4/var/lib/apt/lists/* s4/usr/share/man s4/usr/share/doc
mkdir s4/usr/share/doc
echo "docs removed to save space" >s4/usr/share/doc/README

python3 "$here/tree-diff-layers.py" layout s1 s2 s3 s4
rm -rf "$out" && cp -a layout "$out"
