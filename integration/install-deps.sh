#!/usr/bin/env bash
# Installs every Debian package the build, the demo and the tests need. Idempotent:
# apt runs only when something is missing. Nothing is fetched from anywhere but
# Debian's archive (and crates.io, by cargo, for the build).
set -euo pipefail

PACKAGES=(
    # build
    build-essential pkg-config clang libclang-dev
    libslurm-dev libmunge-dev libdeflate-dev libzstd-dev libsqlite3-dev
    # the local cluster
    slurm-wlm slurmctld slurmd slurm-client munge
    docker-registry skopeo umoci busybox-static
    # images, mounts, tests
    squashfs-tools util-linux e2fsprogs xfsprogs attr libcap2-bin
    curl jq python3 apache2-utils procps iproute2 time zstd openssl
    mpich libmpich-dev libpmix-dev
    openssh-server openssh-client
    postgresql
    # the package test (dpkg-shlibdeps, strip, the maintainer scripts)
    dpkg-dev binutils adduser
)

if [ "$(id -u)" != 0 ]; then
    echo "install-deps: run as root (make demo / make test are meant for a root shell on a test machine)" >&2
    exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "install-deps: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    # Daemons from these packages must not start by themselves: the harness starts
    # its own, on its own ports.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
    for c in "$HOME/.cargo/bin/cargo" /root/.cargo/bin/cargo /usr/local/cargo/bin/cargo; do
        [ -x "$c" ] && { echo "install-deps: cargo is at $c; add $(dirname "$c") to PATH" >&2; exit 1; }
    done
    echo "install-deps: no Rust toolchain found: install Rust (rustup, 1.85 or newer) and re-run" >&2
    exit 1
fi
echo "install-deps: all ${#PACKAGES[@]} packages present; $(cargo --version)" >&2
