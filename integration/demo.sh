#!/usr/bin/env bash
# The main job: bring up the local cluster and run, as the non-root test user,
#   shifterimg pull <image>   then   srun -N2 --image=<image> cat /etc/os-release
# Stops the cluster at the end unless SHIFTER_DEMO_KEEP=1.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
export SHIFTER_TB=${SHIFTER_TB:-/tmp/shifter-tb}
step() { printf '\n\033[1;34m$ %s\033[0m\n' "$*"; }

if [ -e "$SHIFTER_TB/pids" ]; then
    integration/cluster/down.sh
fi
integration/cluster/up.sh
if [ "${SHIFTER_DEMO_KEEP:-0}" != 1 ]; then
    trap '"$repo/integration/cluster/down.sh"' EXIT
fi
# shellcheck disable=SC1091
. "$SHIFTER_TB/env"
# /tmp exists on the host and in the image, so Slurm keeps the working directory.
cd /tmp
as_user() { timeout 120 runuser -u "$SHIFTER_TEST_USER" -- "$@"; }

echo
echo "Cluster: nodes $SHIFTER_NODES, registry $SHIFTER_REGISTRY, user $SHIFTER_TEST_USER"
step "srun -N2 hostname        (as $SHIFTER_TEST_USER)"
as_user srun -N2 -l hostname

image="docker:$SHIFTER_REGISTRY/layered:latest"
shifterimg=$SHIFTER_BIN_DIR/shifterimg
step "shifterimg pull $image"
as_user "$shifterimg" pull "$image"
step "shifterimg images"
as_user "$shifterimg" images
step "srun -N2 --image=$image cat /etc/os-release"
as_user srun -N2 -l --image="$image" cat /etc/os-release
step "srun -N2 --image=$image /usr/local/bin/capcheck-suid   (a setuid-root binary in the image gives nothing)"
as_user srun -N2 -l --image="$image" /usr/local/bin/capcheck-suid
echo
echo "demo finished"
