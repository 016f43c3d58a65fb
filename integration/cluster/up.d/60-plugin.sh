# shellcheck shell=bash
# Hook (sourced by up.sh after the base cluster is up): load the shifter SPANK
# plugin in every srun/sbatch/salloc and slurmstepd of the cluster.
#
# srun, sbatch and slurmstepd re-read plugstack.conf for every command and
# step, so nothing needs a restart; the plugin has no prolog/epilog, so slurmd
# does not need one either. The runtime hook (20-runtime.sh) writes the
# shifter.toml named here; the plugin reads it only when --image is used.

plugin_so="$SHIFTER_BIN_DIR/libshifter_spank.so"
[ -f "$plugin_so" ] || die "plugin $plugin_so is missing: run 'cargo build -p shifter-spank' (make build) first"
cat >"$SHIFTER_TB/etc/plugstack.conf" <<CONF
# written by integration/cluster/up.d/60-plugin.sh
required $plugin_so config=$SHIFTER_TB/etc/shifter.toml
CONF
chmod 0644 "$SHIFTER_TB/etc/plugstack.conf"
env_add SHIFTER_PLUGIN "$plugin_so"
say "plugin: $(tail -n 1 "$SHIFTER_TB/etc/plugstack.conf")"
