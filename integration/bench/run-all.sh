#!/usr/bin/env bash
# Runs every benchmark script in this directory (not part of CI). Each prints its
# own table of measurements taken side by side in one run.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
rc=0
for b in "$here"/*.sh; do
    [ "$(basename "$b")" = run-all.sh ] && continue
    printf '\n==== %s ====\n' "$(basename "$b")"
    "$b" || rc=1
done
exit $rc
