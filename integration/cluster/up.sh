#!/usr/bin/env bash
# Brings up the local test cluster as root: munged (if not already running), a
# docker-registry on loopback with the test images, slurmctld and NODE_COUNT slurmd
# nodes each in its own mount + UTS namespace. All state goes to $SHIFTER_TB.
# Then sources integration/cluster/up.d/*.sh (gateway, runtime config, plugin).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || die "must run as root (it starts Slurm and mounts filesystems)"
if [ -e "$TB/pids" ]; then
    die "a cluster is already up at $TB: run 'make cluster-down' first (or set SHIFTER_TB)"
fi
rm -rf "$TB"
mkdir -p "$TB"/{state,spool,pids,log,out,etc,etc/shifter,work,nodelocal,oci,build,pmix}
chmod 0755 "$TB"
chmod 1777 "$TB/out" "$TB/work"
: >"$TB/env"
env_add SHIFTER_TB "$TB"
started=$SECONDS
trap 'rc=$?; if [ $rc != 0 ]; then say "bring-up failed; stopping what was started"; "$REPO_ROOT/integration/cluster/down.sh" --keep-logs || true; fi' EXIT

# --- users -------------------------------------------------------------------
ensure_user "$TEST_USER"
ensure_user "$TEST_USER2"
ensure_user "$GW_USER" system
env_add SHIFTER_TEST_USER "$TEST_USER"
env_add SHIFTER_TEST_USER2 "$TEST_USER2"
env_add SHIFTER_GW_USER "$GW_USER"
env_add SHIFTER_BIN_DIR "$BIN_DIR"

# --- munge -------------------------------------------------------------------
if timeout 5 munge -n 2>/dev/null | timeout 5 unmunge >/dev/null 2>&1; then
    say "munged already running; using it"
else
    [ -s /etc/munge/munge.key ] || { mungekey --create --keyfile /etc/munge/munge.key && chown munge:munge /etc/munge/munge.key && chmod 0600 /etc/munge/munge.key; }
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
    rm -f /run/munge/munged.pid
    runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
    wait_for 10 munged sh -c 'timeout 5 munge -n | timeout 5 unmunge'
    cp /run/munge/munged.pid "$TB/pids/munged.pid"
    say "started munged (pid $(cat "$TB/pids/munged.pid"))"
fi
env_add SHIFTER_MUNGE_SOCKET /run/munge/munge.socket.2

# --- registry ----------------------------------------------------------------
mkdir -p "$TB/registry"
cat >"$TB/etc/registry.yml" <<YML
version: 0.1
log: {level: warn, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $TB/registry}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$REGISTRY_PORT}
YML
start_daemon registry docker-registry serve "$TB/etc/registry.yml"
wait_for 15 "docker-registry on 127.0.0.1:$REGISTRY_PORT" curl -sf "http://127.0.0.1:$REGISTRY_PORT/v2/"
env_add SHIFTER_REGISTRY "127.0.0.1:$REGISTRY_PORT"
"$REPO_ROOT/integration/images/build.sh" "$TB" "127.0.0.1:$REGISTRY_PORT"

# --- slurm -------------------------------------------------------------------
host=$(hostname -s)
nodes=$(node_names)
: >"$TB/etc/plugstack.conf"
conf=$TB/etc/slurm.conf
{
    echo "ClusterName=shiftertb"
    echo "SlurmctldHost=$host(127.0.0.1)"
    echo "SlurmctldPort=$SLURMCTLD_PORT"
    echo "SlurmUser=root"
    echo "SlurmdUser=root"
    echo "AuthType=auth/munge"
    echo "CredType=cred/munge"
    echo "MpiDefault=none"
    echo "ProctrackType=proctrack/linuxproc"
    echo "TaskPlugin=task/none"
    echo "JobAcctGatherType=jobacct_gather/none"
    echo "AccountingStorageType=accounting_storage/none"
    echo "JobCompType=jobcomp/none"
    echo "SelectType=select/cons_tres"
    echo "SelectTypeParameters=CR_Core"
    echo "SchedulerType=sched/builtin"
    echo "ReturnToService=2"
    echo "MailProg=/bin/true"
    echo "KillWait=5"
    echo "MessageTimeout=10"
    echo "StateSaveLocation=$TB/state"
    echo "SlurmdSpoolDir=$TB/spool/%n"
    echo "SlurmctldPidFile=$TB/state/slurmctld.pid"
    echo "SlurmdPidFile=$TB/state/slurmd-%n.pid"
    echo "SlurmctldLogFile=$TB/log/slurmctld.log"
    echo "SlurmdLogFile=$TB/log/slurmd-%n.log"
    echo "SlurmctldDebug=info"
    echo "SlurmdDebug=debug"
    echo "PlugStackConfig=$TB/etc/plugstack.conf"
    i=0
    for n in $nodes; do
        i=$((i + 1))
        echo "NodeName=$n NodeHostname=$host NodeAddr=127.0.0.1 Port=$((SLURMD_PORT_BASE + i)) CPUs=2 RealMemory=1000 State=UNKNOWN"
    done
    echo "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP"
} >"$conf"
# srun --mpi=pmix: slurmstepd makes each step's PMIx rendezvous directory
# (PMIX_SERVER_TMPDIR) under this base. Its default, /tmp, is shared by the
# nodes of this machine (and by other clusters on it), so two nodes of one
# step would collide; each node mounts its own tmpfs here (below).
echo "PMIxCliTmpDirBase=$TB/pmix" >"$TB/etc/mpi.conf"
export SLURM_CONF=$conf
env_add SLURM_CONF "$conf"
env_add SHIFTER_PLUGSTACK "$TB/etc/plugstack.conf"
env_add SHIFTER_NODES "$nodes"

# Inside the nodes, /etc/shifter is the cluster's own $TB/etc/shifter (bind-mounted in
# each node's namespace), so a setuid `shifter` finds its config at the default path
# on the nodes without the host's /etc being touched beyond an empty mount point.
if [ ! -e /etc/shifter ]; then
    mkdir -m 0755 /etc/shifter
    touch "$TB/state/created-etc-shifter"
fi

start_daemon slurmctld slurmctld -D -f "$conf"
for n in $nodes; do
    mkdir -p "$TB/spool/$n" "$TB/nodelocal/$n"
    # Each node gets private mounts (so one node's image mounts are invisible to the
    # others and to the host) and its own hostname. unshare and sh exec, so the
    # recorded PID is slurmd's own.
    start_daemon "slurmd-$n" unshare --mount --propagation private --uts \
        sh -c "hostname $n && mount --bind '$TB/etc/shifter' /etc/shifter && mount -t tmpfs -o size=512m,mode=0755 shifter-$n '$TB/nodelocal/$n' && mount -t tmpfs -o size=64m,mode=0755 pmix-$n '$TB/pmix' && exec slurmd -D -N $n -f '$conf'"
done

all_idle() {
    local states
    states=$(timeout 5 sinfo -h -N -o '%N %t' 2>/dev/null) || return 1
    [ -n "$states" ] || return 1
    ! echo "$states" | awk '{print $2}' | grep -qv '^idle$'
}
wait_for 60 "all Slurm nodes ($nodes) to be idle" all_idle
say "slurm up: $(timeout 5 sinfo -h -N -o '%N=%t' | tr '\n' ' ')"

# --- area hooks ----------------------------------------------------------------
export SHIFTER_TB=$TB SHIFTER_BIN_DIR=$BIN_DIR SHIFTER_GW_USER=$GW_USER SHIFTER_TEST_USER=$TEST_USER SHIFTER_TEST_USER2=$TEST_USER2
for hook in "$REPO_ROOT"/integration/cluster/up.d/*.sh; do
    [ -e "$hook" ] || continue
    say "hook $(basename "$hook")"
    # shellcheck disable=SC1090
    . "$hook"
done

trap - EXIT
say "cluster up in $((SECONDS - started))s at $TB (source $TB/env to use it)"
