#!/usr/bin/env bash
# Stops the local test cluster: cancels jobs, stops exactly the processes up.sh and
# its hooks started (and their sessions), then checks that no process, mount or loop
# device of the cluster remains. Exits 3 if it had to clean up a leak.
#   --keep-logs   keep $SHIFTER_TB (logs, state) instead of deleting it
set -uo pipefail
. "$(dirname "$0")/lib.sh"
keep=${SHIFTER_KEEP_TB:-0}
[ "${1:-}" = --keep-logs ] && keep=1

[ -d "$TB/pids" ] || { say "no cluster at $TB"; exit 0; }
export SLURM_CONF=$TB/etc/slurm.conf

if [ -f "$TB/pids/slurmctld.pid" ] && [ -f "$SLURM_CONF" ]; then
    timeout 10 scancel --full --quiet --user=root >/dev/null 2>&1 || true
    for u in "$TEST_USER" "$TEST_USER2"; do timeout 10 scancel --quiet --user="$u" >/dev/null 2>&1 || true; done
    for _ in $(seq 1 100); do
        [ -z "$(timeout 5 squeue -h -o %i 2>/dev/null)" ] && break
        sleep 0.1
    done
fi

session_of() { awk '{print $6}' "/proc/$1/stat" 2>/dev/null; }

# Stop order: area services, nodes, controller, registry, munged (only if ours).
order=()
for f in "$TB"/pids/*.pid; do
    [ -e "$f" ] || continue
    case $(basename "$f") in
        slurmd-*|slurmctld.pid|registry.pid|munged.pid) ;;
        *) order+=("$f") ;;
    esac
done
for f in "$TB"/pids/slurmd-*.pid; do [ -e "$f" ] && order+=("$f"); done
order+=("$TB/pids/slurmctld.pid" "$TB/pids/registry.pid" "$TB/pids/munged.pid")

sessions=()
for f in "${order[@]}"; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    [ -n "$pid" ] && [ -d "/proc/$pid" ] || continue
    sid=$(session_of "$pid")
    [ "$sid" = "$pid" ] && sessions+=("$sid")
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 100); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
    if [ -d "/proc/$pid" ]; then
        say "$(basename "$f" .pid) (pid $pid) ignored SIGTERM; killing"
        kill -KILL "$pid" 2>/dev/null
        sleep 0.2
    fi
done

leaks=0
# Anything still alive in the sessions we started (slurmstepd, tasks, helpers).
if [ ${#sessions[@]} -gt 0 ]; then
    for _ in 1 2 3; do
        left=$(ps -eo pid=,sid= | awk -v s=" ${sessions[*]} " 'index(s, " " $2 " ") {print $1}')
        [ -z "$left" ] && break
        # shellcheck disable=SC2086
        kill -KILL $left 2>/dev/null
        sleep 0.3
    done
    if [ -n "${left:-}" ]; then
        say "leak: processes still alive: $left"
        leaks=1
    fi
fi

# Mounts under the state dir seen from here (nodes' own mounts die with their namespaces).
while read -r mnt; do
    [ -n "$mnt" ] || continue
    say "leak: mount $mnt"
    umount -l "$mnt" 2>/dev/null
    leaks=1
done < <(awk -v tb="$TB" 'index($5, tb) == 1 {print $5}' /proc/self/mountinfo | sort -r)

# Loop devices backed by files of the cluster.
for b in /sys/block/loop*/loop/backing_file; do
    [ -f "$b" ] || continue
    if [[ "$(cat "$b")" == "$TB"* ]]; then
        dev=/dev/$(basename "$(dirname "$(dirname "$b")")")
        say "leak: loop device $dev -> $(cat "$b")"
        losetup -d "$dev" 2>/dev/null
        leaks=1
    fi
done

rm -rf "$TB/pids"
if [ -f "$TB/state/created-etc-shifter" ]; then
    # Another cluster on this machine may have bound its config here in its nodes'
    # namespaces; removing the directory would silently detach those mounts.
    if grep -qs ' /etc/shifter ' /proc/[0-9]*/mountinfo; then
        say "left /etc/shifter in place: another cluster's nodes still mount it"
    else
        rmdir /etc/shifter 2>/dev/null || say "left /etc/shifter in place: it is not empty"
    fi
    rm -f "$TB/state/created-etc-shifter"
fi
if [ "$keep" = 1 ]; then
    say "cluster stopped; state and logs kept in $TB"
else
    rm -rf "$TB"
    say "cluster stopped and $TB removed"
fi
[ "$leaks" = 0 ] || exit 3
