#!/usr/bin/env bash
# The package test (run by `integration/run-tests.sh all` after the e2e tier):
#  1. `make deb` from the debug build the earlier tiers tested;
#  2. install it with dpkg and check owners, modes, the `shifter` account,
#     its directories, conffiles, man pages, completions and the unit;
#  3. bring the test cluster up on the installed files only (SHIFTER_INSTALLED=1:
#     the plugin through the installed plugstack.conf.d snippet, the gateway
#     from the installed unit's ExecStart as its User=, /usr/bin/shifter) and
#     run the demo flow as the test user: shifterimg pull, srun -N2 --image;
#  4. remove the package: nothing of it may remain but its conffiles; purge
#     it: the conffiles, the account and its directories must be gone.
# Leaves the machine as it found it. Needs root and a Debian host with Slurm
# and munge installed (integration/install-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
export SHIFTER_TB=${SHIFTER_TB:-/tmp/shifter-tb}
pkg=shifter-rs
step() { printf '\n\033[1;34m[package] %s\033[0m\n' "$*"; }
fail() { printf '\033[1;31m[package] FAILED: %s\033[0m\n' "$*" >&2; exit 1; }
check() { # DESCRIPTION CMD...
    local what=$1
    shift
    if "$@"; then printf '  ok: %s\n' "$what"; else fail "$what"; fi
}
t0=$SECONDS

[ "$(id -u)" = 0 ] || fail "must run as root (it installs a package)"
if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -qv 'not-installed'; then
    fail "$pkg is already installed here; the test installs and purges it (dpkg --purge $pkg first)"
fi
if getent passwd shifter >/dev/null; then
    fail "a 'shifter' account already exists; the package's purge would delete it"
fi
[ ! -e "$SHIFTER_TB/pids" ] || fail "a cluster is up at $SHIFTER_TB; stop it first (or set SHIFTER_TB)"

cluster_up=0
installed=0
etc_guard=""
etc_existed=""
[ -d /etc/shifter ] && etc_existed=1
# Other clusters on this machine bind their config onto /etc/shifter inside their
# nodes' namespaces; dpkg's rmdir of it at purge would silently detach those
# mounts. A file of ours in it keeps dpkg from removing a directory that was
# there before or that someone mounts on.
guard_etc() {
    if [ -d /etc/shifter ] && { [ -n "$etc_existed" ] || grep -qs ' /etc/shifter ' /proc/[0-9]*/mountinfo; }; then
        etc_guard=/etc/shifter/.package-test-guard
        : >"$etc_guard"
    fi
}
cleanup() {
    rc=$?
    if [ "$cluster_up" = 1 ]; then
        SHIFTER_INSTALLED=1 SHIFTER_GW_USER=shifter "$repo/integration/cluster/down.sh" || true
    fi
    if [ "$installed" = 1 ]; then
        echo "[package] cleaning up: purging $pkg" >&2
        guard_etc
        dpkg --purge "$pkg" >/dev/null 2>&1 || true
    fi
    if [ -n "$etc_guard" ]; then rm -f "$etc_guard"; fi
    exit $rc
}
trap cleanup EXIT

# --- 1. build ------------------------------------------------------------------
step "make deb PROFILE=debug (packages the build the tests used)"
t=$SECONDS
deb=$(make --no-print-directory deb PROFILE=debug DEB_COMPRESSION=gzip | tail -n 1)
[ -f "$deb" ] || fail "make deb printed no package ($deb)"
echo "  $deb ($(du -h "$deb" | cut -f1)) in $((SECONDS - t))s"
dpkg-deb --field "$deb" Depends

# What existed before, so removal can be checked against it.
mapfile -t content < <(dpkg-deb --fsys-tarfile "$deb" | tar -t | sed -e 's|^\./|/|' -e 's|/$||' | grep -v '^/\?$')
declare -A existed=()
for p in "${content[@]}" /var/lib/shifter /var/cache/shifter /etc/shifter; do
    if [ -e "$p" ]; then existed[$p]=1; fi
done
mapfile -t conffiles < <(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles)
[ ${#conffiles[@]} -ge 3 ] || fail "the package declares ${#conffiles[@]} conffiles, expected /etc/shifter/*.toml and the plugstack snippet"

# --- 2. install ----------------------------------------------------------------
step "dpkg -i $(basename "$deb")"
installed=1
dpkg -i "$deb"
plugin_dir=$(packaging/slurm-plugin-dir.sh)
mode() { stat -c '%a %U:%G' "$1"; }
check "/usr/bin/shifter is setuid root (4755 root:root)" test "$(mode /usr/bin/shifter)" = "4755 root:root"
check "shifterimg, shifter-config and the gateway are 0755 root:root" \
    test "$(mode /usr/bin/shifterimg)/$(mode /usr/bin/shifter-config)/$(mode /usr/sbin/shifter-imagegw)" = "755 root:root/755 root:root/755 root:root"
check "the plugin is in Slurm's plugin directory $plugin_dir" test "$(mode "$plugin_dir/shifter_spank.so")" = "644 root:root"
check "the shifter account is a system account without a login shell" \
    sh -c 'u=$(getent passwd shifter) && [ "$(echo "$u" | cut -d: -f3)" -lt 1000 ] && [ "$(echo "$u" | cut -d: -f7)" = /usr/sbin/nologin ]'
check "image dir 0755 shifter, gateway state and cache 0700 shifter, mount root root's" \
    test "$(mode /var/lib/shifter/images)/$(mode /var/lib/shifter/imagegw)/$(mode /var/cache/shifter)/$(mode /var/lib/shifter)/$(mode /var/lib/shifter/mnt)" \
    = "755 shifter:shifter/700 shifter:shifter/700 shifter:shifter/755 root:root/755 root:root"
check "conffiles registered: ${conffiles[*]}" \
    sh -c "dpkg-query -W -f='\${Conffiles}\n' $pkg | grep -c '^ /' | grep -qx ${#conffiles[@]}"
check "the shipped gateway config is valid for the installed gateway, as the shifter account" \
    runuser -u shifter -- /usr/sbin/shifter-imagegw --check
for page in man1/shifter.1 man1/shifterimg.1 man1/shifterimg-pull.1 man1/shifter-config.1 man8/shifter-imagegw.8 man5/shifter.toml.5; do
    check "man page $page" sh -c "zcat /usr/share/man/$page.gz | grep -q '^\.TH'"
done
if command -v man >/dev/null; then
    check "man finds shifter.toml(5)" sh -c 'man -w 5 shifter.toml | grep -q /usr/share/man/man5/shifter.toml.5.gz'
fi
check "bash completion for shifterimg loads" \
    bash -c '. /usr/share/bash-completion/completions/shifterimg && complete -p shifterimg >/dev/null'
check "zsh completion for shifterimg" sh -c 'head -n 1 /usr/share/zsh/vendor-completions/_shifterimg | grep -q "^#compdef shifterimg"'
unit=/lib/systemd/system/shifter-imagegw.service
check "the unit runs the gateway as shifter, sandboxed" sh -c "grep -qx User=shifter $unit && grep -qx NoNewPrivileges=yes $unit && grep -qx ProtectSystem=strict $unit && grep -q '^ReadWritePaths=.*/var/lib/shifter/images' $unit"
if command -v systemd-analyze >/dev/null; then
    # No systemd runs here (PID 1 is not systemd), but the unit file can still be checked.
    check "systemd-analyze verify accepts the unit" systemd-analyze verify "$unit"
fi

# --- 3. the demo flow on the installed files -------------------------------------
step "cluster on the installed files (SHIFTER_INSTALLED=1)"
cluster_up=1
SHIFTER_INSTALLED=1 SHIFTER_GW_USER=shifter integration/cluster/up.sh
# shellcheck disable=SC1091
. "$SHIFTER_TB/env"
# The installed commands read the installed default /etc/shifter/shifter.toml.
unset SHIFTER_CONFIG
cd /tmp
as_user() { timeout 120 runuser -u "$SHIFTER_TEST_USER" -- "$@"; }
gw_pid=$(cat "$SHIFTER_TB/pids/imagegw.pid")
check "the gateway runs /usr/sbin/shifter-imagegw as shifter" \
    test "$(readlink "/proc/$gw_pid/exe"):$(stat -c %U "/proc/$gw_pid")" = "/usr/sbin/shifter-imagegw:shifter"
check "the cluster's plugstack.conf only includes the installed snippet" \
    grep -qx 'include /etc/slurm/plugstack.conf.d/shifter.conf' "$SHIFTER_PLUGSTACK"
image="docker:$SHIFTER_REGISTRY/layered:latest"
step "shifterimg pull $image (installed /usr/bin/shifterimg, as $SHIFTER_TEST_USER)"
as_user /usr/bin/shifterimg pull "$image"
step "srun -N2 --image=$image cat /etc/os-release"
out=$(as_user srun -N2 -l --image="$image" cat /etc/os-release)
echo "$out"
check "both nodes ran in the image" test "$(echo "$out" | grep -c ': ID=shifter-layered$')" = 2
step "srun -N2 --image=$image /usr/local/bin/capcheck-suid"
out=$(as_user srun -N2 -l --image="$image" /usr/local/bin/capcheck-suid)
echo "$out"
check "a setuid-root binary in the image gets no capabilities" test "$(echo "$out" | grep -c ': CapEff:[[:space:]]*0000000000000000$')" = 2
check "and cannot become root" test "$(echo "$out" | grep -c ': setuid0=Operation not permitted$')" = 2
step "srun -N1 /usr/bin/shifter --image=$image (the installed setuid runtime)"
out=$(as_user srun -N1 /usr/bin/shifter --image="$image" -- /usr/local/bin/capcheck)
echo "$out"
check "shifter ran the command as the user" grep -q "^uid=$(id -u "$SHIFTER_TEST_USER") euid=$(id -u "$SHIFTER_TEST_USER") " <<<"$out"
step "cluster down"
cluster_up=0
SHIFTER_INSTALLED=1 SHIFTER_GW_USER=shifter "$repo/integration/cluster/down.sh"
cd "$repo"

# --- 4. remove, then purge ---------------------------------------------------------
is_conffile() { local c; for c in "${conffiles[@]}"; do [ "$c" = "$1" ] && return 0; done; return 1; }
step "dpkg -r $pkg"
dpkg -r "$pkg"
left=()
for p in "${content[@]}"; do
    [ -n "${existed[$p]:-}" ] && continue
    is_conffile "$p" && continue
    # Directories holding conffiles stay with them.
    [ -d "$p" ] && [ -n "$(ls -A "$p" 2>/dev/null)" ] && continue
    if [ -e "$p" ]; then left+=("$p"); fi
done
check "nothing of the package remains after remove but conffiles (left: ${left[*]:-none})" test ${#left[@]} = 0
for c in "${conffiles[@]}"; do check "conffile $c kept" test -f "$c"; done
check "the account stays until purge" getent passwd shifter
step "dpkg --purge $pkg"
guard_etc
dpkg --purge "$pkg"
installed=0
left=()
for p in "${content[@]}" /var/lib/shifter /var/cache/shifter; do
    [ -n "${existed[$p]:-}" ] && continue
    [ "$p" = /etc/shifter ] && [ -n "$etc_guard" ] && continue
    if [ -e "$p" ]; then left+=("$p"); fi
done
check "nothing of the package remains after purge (left: ${left[*]:-none})" test ${#left[@]} = 0
check "the shifter account and group are gone" sh -c '! getent passwd shifter && ! getent group shifter'
check "dpkg no longer knows the package" sh -c "! dpkg-query -W -f='\${Status}' $pkg 2>/dev/null | grep -q installed"
if [ -n "$etc_guard" ]; then
    rm -f "$etc_guard"
    etc_guard=""
    [ -n "$etc_existed" ] || echo "  note: left an empty /etc/shifter: another cluster's nodes mount it"
fi
step "package test passed in $((SECONDS - t0))s"
