#!/usr/bin/env bash
# Lookup benchmark (not CI): lookups per second and p99 latency at 64
# concurrent keep-alive clients on loopback, each request with a fresh Munge
# credential, against a gateway started here as the gateway account; compared
# in the same run with a static file served by the same axum stack (the floor).
# Target: the gateway reaches at least 50% of the floor's rate.
#
# Needs a running cluster (make cluster-up) for munged, the registry and the
# users. Usage: integration/bench/gateway-lookup.sh [REQUESTS] [CONCURRENCY]
#   PROFILE=release (default) or debug; RUST_LOG is set to warn for both servers.
# Also prints munged's own decode rate: no gateway can authenticate faster.
set -euo pipefail
REQUESTS=${1:-20000}
CONC=${2:-64}
PROFILE=${PROFILE:-release}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
TB=${SHIFTER_TB:-/tmp/shifter-tb}
[ -f "$TB/env" ] || { echo "no cluster at $TB: run make cluster-up" >&2; exit 1; }
# shellcheck disable=SC1091
. "$TB/env"
[ "$(id -u)" = 0 ] || { echo "run as root (it starts the gateway as $SHIFTER_GW_USER)" >&2; exit 1; }

flag=""; [ "$PROFILE" = release ] && flag=--release
(cd "$REPO" && cargo build $flag -p shifter-imagegw --bin shifter-imagegw --example lookup_bench --example static_floor --example munge_rate)
bin="$REPO/target/$PROFILE"

dir="$TB/bench-gateway"
rm -rf "$dir"; mkdir -p "$dir"/{images,state,cache,work}
chown -R "$SHIFTER_GW_USER:" "$dir"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
gw_port=$(port); floor_port=$(port)
cat >"$dir/imagegw.toml" <<CONF
listen = "127.0.0.1:$gw_port"
store = "sqlite://$dir/state/gw.sqlite"
work_dir = "$dir/work"
cache_dir = "$dir/cache"
[systems.bench]
image_dir = "$dir/images"
[registries."$SHIFTER_REGISTRY"]
plain_http = true
CONF

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
RUST_LOG=warn setpriv --reuid="$SHIFTER_GW_USER" --regid="$(id -g "$SHIFTER_GW_USER")" --init-groups \
    "$bin/shifter-imagegw" --config "$dir/imagegw.toml" >"$dir/gateway.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$gw_port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done

# A credential bound to one request (docs/gateway.md "Credentials"): body-less here.
cred() { munge -s "shifter-imagegw v1 $1 $2 $(printf '' | sha256sum | cut -d' ' -f1)"; }
tag=$(python3 -c 'import sys,urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$SHIFTER_REGISTRY/busybox:latest")
for _ in $(seq 100); do
    st=$(curl -fsS -X POST -H "authentication: $(cred POST "/api/pull/bench/docker/$tag/")" "http://127.0.0.1:$gw_port/api/pull/bench/docker/$tag/" | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
    [ "$st" = READY ] && break
    [ "$st" = FAILURE ] && { echo "pull failed; see $dir/gateway.log" >&2; exit 1; }
    sleep 0.5
done
lookup="http://127.0.0.1:$gw_port/api/lookup/bench/docker/$tag/"
curl -fsS -H "authentication: $(cred GET "/api/lookup/bench/docker/$tag/")" "$lookup" >"$dir/record.json"

RUST_LOG=warn "$bin/examples/static_floor" "127.0.0.1:$floor_port" "$dir/record.json" >"$dir/floor.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$floor_port/static" >/dev/null 2>&1 && break; sleep 0.1; done

echo "profile=$PROFILE requests=$REQUESTS concurrency=$CONC"
floor=$("$bin/examples/lookup_bench" "http://127.0.0.1:$floor_port/static" "$REQUESTS" "$CONC")
echo "floor   (static file, same stack): $floor"
gw=$("$bin/examples/lookup_bench" "$lookup" "$REQUESTS" "$CONC")
echo "gateway (lookup, fresh munge cred): $gw"
rps() { sed -n 's/.* rps=\([0-9]*\).*/\1/p'; }
f=$(echo "$floor" | rps); g=$(echo "$gw" | rps)
pct=$((100 * g / (f > 0 ? f : 1)))
echo "gateway/floor = ${pct}% (target >= 50%)"
echo "munged ceiling (decodes/s, 16 threads, no HTTP): $("$bin/examples/munge_rate" "$REQUESTS" 16)"
