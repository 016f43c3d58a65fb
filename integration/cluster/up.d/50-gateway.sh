# shellcheck shell=bash
# Hook (sourced by up.sh after the base cluster is up): run the image gateway
# as the non-root $SHIFTER_GW_USER on 127.0.0.1:${SHIFTER_GW_PORT:-7777},
# publishing into $SHIFTER_TB/images, pulling from the cluster's registry.
#
# Writes $SHIFTER_TB/etc/imagegw.toml, logs to $SHIFTER_TB/log/imagegw.log,
# records the PID in $SHIFTER_TB/pids/imagegw.pid and adds SHIFTER_GATEWAY,
# SHIFTER_GW_SYSTEM, SHIFTER_IMAGE_DIR and SHIFTER_GW_CONFIG to $SHIFTER_TB/env.
# With SHIFTER_INSTALLED=1 (the package test) it runs the installed unit's
# ExecStart as the unit's User= and installs the config where that reads it.

gw_bin="$SHIFTER_BIN_DIR/shifter-imagegw"
gw_cmd=("$gw_bin" --config "$SHIFTER_TB/etc/imagegw.toml")
gw_conf="$SHIFTER_TB/etc/imagegw.toml"
if [ "${SHIFTER_INSTALLED:-0}" = 1 ]; then
    # integration/package-test.sh: the installed unit's command line, as its
    # User=, with the config written where that command line reads it.
    gw_unit=${SHIFTER_INSTALLED_UNIT:-/lib/systemd/system/shifter-imagegw.service}
    [ -f "$gw_unit" ] || die "gateway: installed unit $gw_unit is missing"
    gw_unit_user=$(sed -n 's/^User=//p' "$gw_unit" | tail -n 1)
    [ "$gw_unit_user" = "$SHIFTER_GW_USER" ] ||
        die "gateway: $gw_unit runs as '$gw_unit_user', the cluster expects SHIFTER_GW_USER=$SHIFTER_GW_USER"
    # The unit's ExecStart has no quoting, so word splitting is exact.
    read -r -a gw_cmd <<<"$(sed -n 's/^ExecStart=//p' "$gw_unit" | tail -n 1)"
    gw_bin=${gw_cmd[0]}
    gw_conf=$(printf '%s\n' "${gw_cmd[@]}" | sed -n '/^--config$/{n;p}')
    [ -n "$gw_conf" ] || die "gateway: $gw_unit's ExecStart names no --config"
fi
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

# The allow-list: the only registry this gateway pulls from. It is on
# loopback, which the gateway refuses unless told (internal = true).
[registries."127.0.0.1:$REGISTRY_PORT"]
plain_http = true
internal = true
CONF
chmod 0644 "$SHIFTER_TB/etc/imagegw.toml"
if [ "$gw_conf" != "$SHIFTER_TB/etc/imagegw.toml" ]; then
    install -o root -g root -m 0644 "$SHIFTER_TB/etc/imagegw.toml" "$gw_conf"
fi

# setpriv execs, so the recorded PID is the gateway's own.
start_daemon imagegw setpriv --reuid="$SHIFTER_GW_USER" --regid="$(id -g "$SHIFTER_GW_USER")" --init-groups \
    env RUST_LOG="${SHIFTER_GW_LOG:-info}" "${gw_cmd[@]}"
wait_for 30 "the gateway's /healthz on port $gw_port" curl -fsS "http://127.0.0.1:$gw_port/healthz"

env_add SHIFTER_GATEWAY "http://127.0.0.1:$gw_port"
env_add SHIFTER_GW_SYSTEM "$gw_system"
env_add SHIFTER_IMAGE_DIR "$SHIFTER_TB/images"
env_add SHIFTER_GW_CONFIG "$gw_conf"
say "gateway: http://127.0.0.1:$gw_port (system $gw_system, pid $(cat "$SHIFTER_TB/pids/imagegw.pid"))"
