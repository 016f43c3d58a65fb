#!/usr/bin/env bash
# build.sh STATE_DIR REGISTRY: builds the test images (reproducibly, offline) and
# pushes them to REGISTRY (plain http). Records the pushed references in STATE_DIR/env.
set -euo pipefail
tb=$1
registry=$2
here=$(cd "$(dirname "$0")" && pwd)

mkdir -p "$tb/build" "$tb/oci"
gcc -static -O2 -o "$tb/build/capcheck" "$here/helpers/capcheck.c"
rm -rf "$tb/oci"/*
python3 "$here/mkoci.py" --out "$tb/oci" --capcheck "$tb/build/capcheck" --busybox /bin/busybox

push() {  # push LAYOUT DEST [skopeo flags]
    local src=$1 dest=$2
    shift 2
    timeout 120 skopeo --insecure-policy copy --quiet --dest-tls-verify=false "$@" \
        "oci:$tb/oci/$src:latest" "docker://$registry/$dest"
}
push busybox busybox:latest --format v2s2
push busybox busybox:oci --format oci
push layered layered:latest --format v2s2
push layered layered:oci --format oci
push multi multi:latest --all --format oci
push multi multi:dockerlist --all --format v2s2
printf "export SHIFTER_IMAGES='%s'\n" \
    "busybox:latest busybox:oci layered:latest layered:oci multi:latest multi:dockerlist" >>"$tb/env"
echo "[images] pushed 6 test images to $registry" >&2
