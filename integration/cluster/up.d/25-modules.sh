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
# `mpich`: the test image (busybox) has no C library, so on the testbed the
# module binds the host's whole library directory (MPICH from Debian's
# mpich/libmpich-dev and glibc) and the test starts its MPI program through
# that directory's ld.so. On a real site bind only the MPI libraries (see
# docs/modules.md): the image brings its own glibc.
if ! grep -q '^\[modules\.mpich\]' "$mod_conf"; then
    cat >>"$mod_conf" <<CONF

# appended by integration/cluster/up.d/25-modules.sh
[modules.mpich]
description = "host MPICH (testbed: the host's whole library directory)"
mounts = [{ source = "/usr/lib/x86_64-linux-gnu", destination = "/opt/shifter/mpich/lib", read_only = true }]
ldconfig_dirs = ["/opt/shifter/mpich/lib"]
conflicts = ["gpu-alt"]
CONF
fi
say "modules: gpu, gpu-alt, cpu-only, mpich in $mod_conf (stand-in libraries in $gpu_lib)"
