#!/usr/bin/env bash
# Prints Slurm's plugin directory (where slurmd/srun look for plugins such as
# auth_munge.so), so the SPANK plugin can be installed next to them.
# SLURM_PLUGIN_DIR overrides the detection. Exits 1 when nothing is found.
set -euo pipefail
if [ -n "${SLURM_PLUGIN_DIR:-}" ]; then
    echo "$SLURM_PLUGIN_DIR"
    exit 0
fi
# Slurm's own pkg-config file (libslurm-dev / a source install) knows it.
if libdir=$(pkg-config --variable=libdir slurm 2>/dev/null) && [ -f "$libdir/slurm/auth_munge.so" ]; then
    echo "$libdir/slurm"
    exit 0
fi
# Otherwise the directory holding an always-built plugin: Debian's
# /usr/lib/<triplet>/slurm-wlm, RPMs' /usr/lib64/slurm, source installs' lib/slurm.
for d in /usr/lib/*/slurm-wlm /usr/lib64/slurm /usr/lib/slurm /usr/local/lib/slurm /usr/local/lib64/slurm /opt/slurm/lib/slurm; do
    if [ -f "$d/auth_munge.so" ] || [ -f "$d/proctrack_linuxproc.so" ]; then
        echo "$d"
        exit 0
    fi
done
echo "slurm-plugin-dir: Slurm's plugin directory not found; set SLURM_PLUGIN_DIR=..." >&2
exit 1
