# shellcheck shell=bash
# Hook (sourced by up.sh after 20-runtime.sh): the example site modules of
# docs/modules.md, appended to the runtime's shifter.toml.
#
# The machines have no GPU: `gpu` binds whatever /dev/nvidia* nodes the node
# has; integration/tests/modules.rs creates stand-ins /dev/nvidia0, nvidia1
# and nvidiactl (char 1:3, like /dev/null) only while it runs, and puts a stand-in libnvidia-ml.so.1 into $SHIFTER_TB/modules/gpu/lib.
# `gpu-alt` (same library destination) and `cpu-only` (declared conflict)
# exist to test that conflicting modules are refused at submit.
#
# $SHIFTER_TB/etc/shifter.toml is hardlinked to the nodes' copy: append in
# place, never replace it.

mod_conf="$SHIFTER_TB/etc/shifter.toml"
gpu_lib="$SHIFTER_TB/modules/gpu/lib"
install -d -o root -g root -m 0755 "$SHIFTER_TB/modules" "$SHIFTER_TB/modules/gpu" "$gpu_lib"

if grep -q '^\[modules\.gpu\]' "$mod_conf"; then
    say "modules: $mod_conf already has [modules.gpu]; left as is"
else
    cat >>"$mod_conf" <<CONF

# appended by integration/cluster/up.d/25-modules.sh
[modules.gpu]
description = "NVIDIA devices and driver libraries (stand-ins on the testbed)"
devices = ["/dev/nvidia*"]  # every NVIDIA node the host has
select_devices_by = ["SLURM_STEP_GPUS", "CUDA_VISIBLE_DEVICES"]
mounts = [{ source = "$gpu_lib", destination = "/opt/shifter/gpu/lib", read_only = true }]
ldconfig_dirs = ["/opt/shifter/gpu/lib"]

[modules.gpu-alt]
description = "another driver stack at the same place: conflicts with gpu"
mounts = [{ source = "$gpu_lib", destination = "/opt/shifter/gpu/lib", read_only = true }]

[modules.cpu-only]
description = "declares a conflict with gpu"
conflicts = ["gpu"]
env = { SHIFTER_CPU_ONLY = "1" }
CONF
fi
# `mpich`: the site's MPI library directory, as a site would have it: here
# Debian's libmpich.so.12 and the libraries it needs that are not part of the
# C library, copied into $SHIFTER_TB/modules/mpich/lib. The `mpi` test image
# brings its own glibc (and its own MPICH, which the module overrides).
mpich_lib="$SHIFTER_TB/modules/mpich/lib"
install -d -o root -g root -m 0755 "$SHIFTER_TB/modules/mpich" "$mpich_lib"
if [ -e /usr/lib/x86_64-linux-gnu/libmpich.so.12 ]; then
    cp -L /usr/lib/x86_64-linux-gnu/libmpich.so.12 "$mpich_lib/"
    ldd /usr/lib/x86_64-linux-gnu/libmpich.so.12 | awk '$2 == "=>" && $3 ~ /^\// {print $3}' |
        grep -Ev '/(libc|libm|libpthread|libdl|librt|ld-linux[^/]*)\.so' |
        while read -r lib; do cp -L "$lib" "$mpich_lib/"; done
fi
# `pmix`: for srun --mpi=pmix. Slurm's PMIx server puts each step's
# rendezvous files (PMIX_SERVER_TMPDIR, the dstore of PMIX_GDS_MODULE) in
# SlurmdSpoolDir/pmix.<job>.<step>, and the job's PMIX_NSDIR in
# PMIxCliTmpDirBase (mpi.conf), both created after the container is
# assembled: the module binds both parents at the same path. Here the nodes'
# spool dirs are $SHIFTER_TB/spool/<node>, and $SHIFTER_TB/pmix is a tmpfs of
# each node (up.sh).
if ! grep -q '^\[modules\.mpich\]' "$mod_conf"; then
    cat >>"$mod_conf" <<CONF

# appended by integration/cluster/up.d/25-modules.sh
[modules.mpich]
description = "host MPICH (testbed: Debian's libmpich.so.12 and its non-libc libraries)"
mounts = [{ source = "$mpich_lib", destination = "/opt/shifter/mpich/lib", read_only = true }]
ldconfig_dirs = ["/opt/shifter/mpich/lib"]
conflicts = ["gpu-alt"]

[modules.pmix]
description = "PMIx rendezvous of Slurm's slurmstepd (srun --mpi=pmix)"
mounts = [{ source = "$SHIFTER_TB/spool", destination = "$SHIFTER_TB/spool" },
          { source = "$SHIFTER_TB/pmix", destination = "$SHIFTER_TB/pmix" }]
CONF
fi
say "modules: gpu, gpu-alt, cpu-only, mpich, pmix in $mod_conf (stand-in libraries in $gpu_lib)"
