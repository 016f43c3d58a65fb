#!/usr/bin/env bash
# build.sh STATE_DIR REGISTRY: builds the test images (reproducibly, offline) and
# pushes them to REGISTRY (plain http). Records the pushed references in STATE_DIR/env.
set -euo pipefail
tb=$1
registry=$2
here=$(cd "$(dirname "$0")" && pwd)

mkdir -p "$tb/build" "$tb/oci"
gcc -static -O2 -o "$tb/build/capcheck" "$here/helpers/capcheck.c"
# The mpi image's programs, against Debian's MPICH (mpich, libmpich-dev) and
# PMIx (libpmix-dev); without those the image is left out and the tests that
# use it say so.
mpi_programs=()
if command -v mpicc >/dev/null && [ -e /usr/lib/x86_64-linux-gnu/pmix2/include/pmix.h ]; then
    mpicc -O2 -o "$tb/build/mpi-ring" "$here/helpers/mpi-ring.c"
    gcc -O2 -I/usr/lib/x86_64-linux-gnu/pmix2/include -o "$tb/build/pmix-hello" \
        "$here/helpers/pmix-hello.c" -lpmix
    mpi_programs=(--mpi-programs "$tb/build/mpi-ring" "$tb/build/pmix-hello")
else
    echo "[images] no mpicc or PMIx headers (install-deps.sh installs them): no mpi image" >&2
fi
rm -rf "$tb/oci"/*
python3 "$here/mkoci.py" --out "$tb/oci" --capcheck "$tb/build/capcheck" --busybox /bin/busybox \
    "${mpi_programs[@]}"
# integration/tests/attacks.rs: busybox with a system directory replaced by a
# symlink (/opt/shifter points at node n1's slurmd spool dir).
python3 "$here/attacks.py" --out "$tb/oci" --capcheck "$tb/build/capcheck" --busybox /bin/busybox \
    --node-spool "$tb/spool/n1" >/dev/null

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
# Kept out of SHIFTER_IMAGES: only integration/tests/attacks.rs runs them.
attack_images=""
for a in etc-ssh-link etc-link usr-bin-link opt-shifter-link proc-link sys-link dev-link tmp-link site-proc-link; do
    push "attack-$a" "attack/$a:latest" --format v2s2
    attack_images="$attack_images attack/$a:latest"
done
printf "export SHIFTER_ATTACK_IMAGES='%s'\n" "${attack_images# }" >>"$tb/env"
# Kept out of SHIFTER_IMAGES: the tests that walk every image need not pay
# for its 60 MB of libraries; integration/tests/modules.rs uses it.
if [ -d "$tb/oci/mpi" ]; then
    push mpi mpi:latest --format v2s2
    printf "export SHIFTER_MPI_IMAGE='mpi:latest'\n" >>"$tb/env"
fi
echo "[images] pushed the test images to $registry" >&2
