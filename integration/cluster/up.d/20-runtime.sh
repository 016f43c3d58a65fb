# shellcheck shell=bash
# Hook (sourced by up.sh after the base cluster is up): the runtime's site
# config, $SHIFTER_TB/etc/shifter.toml, read by the Slurm plugin, `shifter`
# and `shifterimg`; and a setuid-root copy of `shifter` for the test users.
#
# The file must be root-owned and not group/other-writable (runtime-core
# refuses it otherwise). Adds SHIFTER_CONFIG, SHIFTER_MOUNT_ROOT,
# SHIFTER_CACHE_DIR and SHIFTER_SETUID_BIN to $SHIFTER_TB/env.

rt_conf="$SHIFTER_TB/etc/shifter.toml"
rt_mnt="$SHIFTER_TB/mnt"
install -d -o root -g root -m 0755 "$SHIFTER_TB/etc" "$rt_mnt"
# Per-node cache backing files: root-owned, not writable by others (checked).
rt_cache="$SHIFTER_TB/cache"
install -d -o root -g root -m 0700 "$rt_cache"
gw_uid=$(id -u "$SHIFTER_GW_USER")

# The gateway hook (50-gateway.sh, sourced later in the same shell) listens on
# $SHIFTER_GW_PORT when that port is free. Choose it here, so the URL written
# below is the one the gateway will use even when 7777 is taken.
if [ -z "${SHIFTER_GW_PORT:-}" ] && (exec 3<>/dev/tcp/127.0.0.1/7777) 2>/dev/null; then
    SHIFTER_GW_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    say "runtime: port 7777 is busy; the gateway will use $SHIFTER_GW_PORT"
fi
export SHIFTER_GW_PORT=${SHIFTER_GW_PORT:-7777}

cat >"$rt_conf" <<CONF
# written by integration/cluster/up.d/20-runtime.sh
system = "testbed"
image_dir = "$SHIFTER_TB/images"
gateways = ["http://127.0.0.1:$SHIFTER_GW_PORT"]
gateway_uid = $gw_uid
mount_root = "$rt_mnt"
upper_size = "128m"
tmp = "private"
tmp_size = "256m"
munge_socket = "/run/munge/munge.socket.2"
lookup_timeout_secs = 10

[site_env]
SHIFTER_TESTBED = "1"

[per_node_cache]
dir = "$rt_cache"
max_size = "1G"

[modules.testmod]
description = "a module the tests enable with --module=testmod"
env = { SHIFTER_TESTMOD = "on" }
CONF
chown root:root "$rt_conf"
chmod 0644 "$rt_conf"
# The same file at the default path inside the nodes (up.sh bind-mounts
# $SHIFTER_TB/etc/shifter onto /etc/shifter in each node's namespace).
ln -f "$rt_conf" "$SHIFTER_TB/etc/shifter/shifter.toml"

# `shifter` as users run it: setuid-root, in a root-owned directory.
if [ "${SHIFTER_INSTALLED:-0}" = 1 ]; then
    # integration/package-test.sh: the packaged one, as installed.
    rt_installed=${SHIFTER_INSTALLED_SHIFTER:-/usr/bin/shifter}
    [ -u "$rt_installed" ] || die "runtime: installed $rt_installed is missing or not setuid"
    env_add SHIFTER_SETUID_BIN "$rt_installed"
elif [ -x "$SHIFTER_BIN_DIR/shifter" ]; then
    install -d -o root -g root -m 0755 "$SHIFTER_TB/sbin"
    install -o root -g root -m 4755 "$SHIFTER_BIN_DIR/shifter" "$SHIFTER_TB/sbin/shifter"
    env_add SHIFTER_SETUID_BIN "$SHIFTER_TB/sbin/shifter"
else
    say "runtime: $SHIFTER_BIN_DIR/shifter is missing (cargo build -p shifter); no setuid copy installed"
fi

env_add SHIFTER_CONFIG "$rt_conf"
env_add SHIFTER_MOUNT_ROOT "$rt_mnt"
env_add SHIFTER_CACHE_DIR "$rt_cache"
say "runtime: $rt_conf (image_dir $SHIFTER_TB/images, mount_root $rt_mnt)"
