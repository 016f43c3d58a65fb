#!/usr/bin/env bash
# The main job: bring up the local cluster and run, as the non-root test user,
#   shifterimg pull <image>   then   srun -N2 --image=<image> cat /etc/os-release
# Stops the cluster at the end unless SHIFTER_DEMO_KEEP=1.
set -euo pipefail
cd "$(dirname "$0")/.."
export SHIFTER_TB=${SHIFTER_TB:-/tmp/shifter-tb}
step() { printf '\n\033[1;34m$ %s\033[0m\n' "$*"; }

if [ -e "$SHIFTER_TB/pids" ]; then
    integration/cluster/down.sh
fi
integration/cluster/up.sh
if [ "${SHIFTER_DEMO_KEEP:-0}" != 1 ]; then
    trap 'integration/cluster/down.sh' EXIT
fi
# shellcheck disable=SC1091
. "$SHIFTER_TB/env"
cd "$SHIFTER_TB/work"
as_user() { timeout 120 runuser -u "$SHIFTER_TEST_USER" -- "$@"; }

echo
echo "Cluster: nodes $SHIFTER_NODES, registry $SHIFTER_REGISTRY, user $SHIFTER_TEST_USER"
step "srun -N2 hostname        (as $SHIFTER_TEST_USER)"
as_user srun -N2 -l hostname

image="docker:$SHIFTER_REGISTRY/layered:latest"
shifterimg=$SHIFTER_BIN_DIR/shifterimg
if [ -n "${SHIFTER_GATEWAY:-}" ] && [ -x "$shifterimg" ] && grep -q '^required' "$SHIFTER_PLUGSTACK" 2>/dev/null; then
    step "shifterimg pull $image"
    as_user "$shifterimg" pull "$image"
    step "shifterimg images"
    as_user "$shifterimg" images
    step "srun -N2 --image=$image cat /etc/os-release"
    as_user srun -N2 -l --image="$image" cat /etc/os-release
    step "srun -N2 --image=$image /usr/local/bin/capcheck-suid   (a setuid-root binary in the image)"
    as_user srun -N2 -l --image="$image" /usr/local/bin/capcheck-suid
else
    echo
    echo "(the image gateway and the Slurm plugin are not built yet: the demo stops at plain srun)"
fi
echo
echo "demo finished"
