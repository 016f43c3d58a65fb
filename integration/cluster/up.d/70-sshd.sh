# shellcheck shell=bash
# Hook (sourced by up.sh after the runtime and plugin hooks): the per-job sshd
# in the containers (`enable_sshd`, docs/plugin.md).
#
# The nodes share the host's network namespace, so two sshd on one port need
# two addresses: node nI is 127.0.1.I, written into an /etc/hosts that is
# bind-mounted in each node's own mount namespace only (the host's is left
# alone; containers copy the node's). The port is per cluster
# ($SHIFTER_SSHD_PORT, default slurmd's port base + 50), so clusters of other
# state dirs running at the same time do not clash.
#
# Adds SHIFTER_SSHD_PORT and SHIFTER_NODE_ADDRS ("n1=127.0.1.1 n2=…") to
# $SHIFTER_TB/env. shifter.toml is hardlinked to the nodes' copy: rewrite it
# in place, never replace it.

sshd_port=${SHIFTER_SSHD_PORT:-$((SLURMD_PORT_BASE + 50))}
sshd_conf="$SHIFTER_TB/etc/shifter.toml"
sshd_secret="$SHIFTER_TB/etc/sshd.secret"

if [ ! -x /usr/sbin/sshd ]; then
    say "sshd: /usr/sbin/sshd is missing (integration/install-deps.sh installs openssh-server); sshd stays off"
elif grep -q '^enable_sshd' "$sshd_conf"; then
    say "sshd: $sshd_conf already sets enable_sshd; left as is"
else
    (umask 077 && head -c 32 /dev/urandom >"$sshd_secret")
    hosts="$SHIFTER_TB/etc/hosts"
    cat /etc/hosts >"$hosts"
    addrs=""
    i=0
    for n in $(node_names); do
        i=$((i + 1))
        echo "127.0.1.$i $n" >>"$hosts"
        addrs="$addrs $n=127.0.1.$i"
    done
    chmod 0644 "$hosts"
    for n in $(node_names); do
        nsenter -t "$(cat "$SHIFTER_TB/pids/slurmd-$n.pid")" -m mount --bind "$hosts" /etc/hosts ||
            die "sshd: cannot bind $hosts over /etc/hosts in node $n"
    done
    # enable_sshd is a top-level key: it must come before the first table.
    new=$(awk -v line='enable_sshd = true  # integration/cluster/up.d/70-sshd.sh' \
        '!done && /^\[/ {print line; print ""; done=1} {print} END {if (!done) print line}' "$sshd_conf")
    printf '%s\n' "$new" >"$sshd_conf"
    cat >>"$sshd_conf" <<CONF

# appended by integration/cluster/up.d/70-sshd.sh
[sshd]
port = $sshd_port
listen_address = "hostname"
key_secret = "$sshd_secret"
CONF
    env_add SHIFTER_SSHD_PORT "$sshd_port"
    env_add SHIFTER_NODE_ADDRS "${addrs# }"
    say "sshd: port $sshd_port,${addrs}"
fi
