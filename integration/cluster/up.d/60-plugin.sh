# shellcheck shell=bash
# Hook (sourced by up.sh after the base cluster is up): load the shifter SPANK
# plugin in every srun/sbatch/salloc and slurmstepd of the cluster.
#
# srun, sbatch and slurmstepd re-read plugstack.conf for every command and
# step, so nothing needs a restart; the plugin has no prolog/epilog, so slurmd
# does not need one either. The runtime hook (20-runtime.sh) writes the
# shifter.toml named here; the plugin reads it only when --image is used.

if [ "${SHIFTER_INSTALLED:-0}" = 1 ]; then
    # integration/package-test.sh: the package's plugstack.conf.d snippet as
    # installed, and the runtime config copied to the path it names (srun runs
    # on the host; the nodes see $SHIFTER_TB/etc/shifter there anyway).
    pl_snippet=${SHIFTER_INSTALLED_PLUGSTACK:-/etc/slurm/plugstack.conf.d/shifter.conf}
    [ -f "$pl_snippet" ] || die "plugin: installed $pl_snippet is missing"
    plugin_so=$(awk '$1 == "required" || $1 == "optional" {print $2; exit}' "$pl_snippet")
    pl_conf=$(sed -n 's/.*[[:space:]]config=\([^[:space:]]*\).*/\1/p' "$pl_snippet" | head -n 1)
    [ -f "$plugin_so" ] || die "plugin: $pl_snippet loads $plugin_so, which is missing"
    install -o root -g root -m 0644 "$SHIFTER_TB/etc/shifter.toml" "${pl_conf:-/etc/shifter/shifter.toml}"
    printf '# written by integration/cluster/up.d/60-plugin.sh\ninclude %s\n' "$pl_snippet" >"$SHIFTER_TB/etc/plugstack.conf"
else
    plugin_so="$SHIFTER_BIN_DIR/libshifter_spank.so"
    [ -f "$plugin_so" ] || die "plugin $plugin_so is missing: run 'cargo build -p shifter-spank' (make build) first"
    cat >"$SHIFTER_TB/etc/plugstack.conf" <<CONF
# written by integration/cluster/up.d/60-plugin.sh
required $plugin_so config=$SHIFTER_TB/etc/shifter.toml
CONF
fi
chmod 0644 "$SHIFTER_TB/etc/plugstack.conf"
env_add SHIFTER_PLUGIN "$plugin_so"
say "plugin: $(tail -n 1 "$SHIFTER_TB/etc/plugstack.conf")"
