# shellcheck shell=bash
# Hook (sourced by up.sh after the base cluster is up): run the image gateway
# as the non-root $SHIFTER_GW_USER on 127.0.0.1:${SHIFTER_GW_PORT:-7777},
# publishing into $SHIFTER_TB/images, pulling from the cluster's registry.
#
# Writes $SHIFTER_TB/etc/imagegw.toml, logs to $SHIFTER_TB/log/imagegw.log,
# records the PID in $SHIFTER_TB/pids/imagegw.pid and adds SHIFTER_GATEWAY,
# SHIFTER_GW_SYSTEM, SHIFTER_IMAGE_DIR and SHIFTER_GW_CONFIG to $SHIFTER_TB/env.

gw_bin="$SHIFTER_BIN_DIR/shifter-imagegw"
[ -x "$gw_bin" ] || die "gateway $gw_bin is missing: run 'cargo build -p shifter-imagegw' (make build) first"

# The system name must match the runtime's shifter.toml when a hook wrote one.
gw_system=testbed
if [ -f "$SHIFTER_TB/etc/shifter.toml" ]; then
    gw_found=$(sed -n 's/^[[:space:]]*system[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' "$SHIFTER_TB/etc/shifter.toml" | head -n 1)
    [ -n "$gw_found" ] && gw_system=$gw_found
fi

# 20-runtime.sh chooses SHIFTER_GW_PORT (7777, or a free port when another
# cluster on this machine holds 7777) and writes it into shifter.toml, so the
# port is not changed here: a busy port is an error.
gw_port=${SHIFTER_GW_PORT:-7777}
if (exec 3<>"/dev/tcp/127.0.0.1/$gw_port") 2>/dev/null; then
    die "gateway port $gw_port is already in use (set SHIFTER_GW_PORT to a free port)"
fi

gw_dir="$SHIFTER_TB/gw"
install -d -o "$SHIFTER_GW_USER" -g "$SHIFTER_GW_USER" -m 0755 "$SHIFTER_TB/images"
install -d -o "$SHIFTER_GW_USER" -g "$SHIFTER_GW_USER" -m 0700 "$gw_dir" "$gw_dir/work" "$gw_dir/cache"

cat >"$SHIFTER_TB/etc/imagegw.toml" <<CONF
# written by integration/cluster/up.d/50-gateway.sh
listen = "127.0.0.1:$gw_port"
default_registry = "127.0.0.1:$REGISTRY_PORT"
workers = 2
expire_after_days = 30
store = "sqlite://$gw_dir/imagegw.sqlite"
work_dir = "$gw_dir/work"
cache_dir = "$gw_dir/cache"

[systems.$gw_system]
image_dir = "$SHIFTER_TB/images"
munge_socket = "/run/munge/munge.socket.2"
admins = [0]
import_users = ["$SHIFTER_TEST_USER"]
os = "linux"
arch = "amd64"
compression = "${SHIFTER_GW_COMPRESSION:-gzip}"

[registries."127.0.0.1:$REGISTRY_PORT"]
plain_http = true
CONF
chmod 0644 "$SHIFTER_TB/etc/imagegw.toml"

# setpriv execs, so the recorded PID is the gateway's own.
start_daemon imagegw setpriv --reuid="$SHIFTER_GW_USER" --regid="$(id -g "$SHIFTER_GW_USER")" --init-groups \
    env RUST_LOG="${SHIFTER_GW_LOG:-info}" "$gw_bin" --config "$SHIFTER_TB/etc/imagegw.toml"
wait_for 30 "the gateway's /healthz on port $gw_port" curl -fsS "http://127.0.0.1:$gw_port/healthz"

env_add SHIFTER_GATEWAY "http://127.0.0.1:$gw_port"
env_add SHIFTER_GW_SYSTEM "$gw_system"
env_add SHIFTER_IMAGE_DIR "$SHIFTER_TB/images"
env_add SHIFTER_GW_CONFIG "$SHIFTER_TB/etc/imagegw.toml"
say "gateway: http://127.0.0.1:$gw_port (system $gw_system, pid $(cat "$SHIFTER_TB/pids/imagegw.pid"))"
