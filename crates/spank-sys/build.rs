//! Generates the raw SPANK bindings from the installed Slurm headers, so the
//! plugin is always built against the Slurm it will be loaded by (Slurm refuses
//! a plugin whose `plugin_version` differs in major.minor).
//!
//! No library is linked: `spank_*` and `slurm_*` are resolved from the host
//! process (srun, sbatch, slurmstepd, slurmd) when it dlopens the plugin.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-env-changed=SLURM_INCLUDE_DIR");
    let mut builder = bindgen::Builder::default()
        .header("wrapper.h")
        .allowlist_function("spank_.*")
        .allowlist_function("slurm_(info|error|verbose|debug|debug2|debug3|spank_log)")
        .allowlist_type("spank_.*")
        .allowlist_type("slurm_err_t")
        .allowlist_var("SLURM_VERSION_NUMBER")
        .allowlist_var("SPANK_OPTION_MAXLEN")
        .allowlist_var("ESPANK_SUCCESS")
        // C may hand back values a Rust enum does not know (a newer Slurm's
        // context or error code): plain integer constants can hold any of them.
        .default_enum_style(bindgen::EnumVariation::ModuleConsts)
        .layout_tests(false)
        .generate_comments(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
    if let Ok(dir) = env::var("SLURM_INCLUDE_DIR") {
        builder = builder.clang_arg(format!("-I{dir}"));
    }
    let bindings = builder.generate().expect(
        "bindgen over <slurm/spank.h> failed: install libslurm-dev (or set SLURM_INCLUDE_DIR)",
    );
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    bindings
        .write_to_file(out.join("spank_bindings.rs"))
        .expect("cannot write the generated bindings");
}
