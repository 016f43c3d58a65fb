//! Generates the raw libmunge bindings from the system header and links libmunge.

use std::env;
use std::path::PathBuf;

fn main() {
    let header = env::var("MUNGE_HEADER").unwrap_or_else(|_| "/usr/include/munge.h".to_owned());
    println!("cargo:rerun-if-changed={header}");
    println!("cargo:rerun-if-env-changed=MUNGE_HEADER");
    println!("cargo:rerun-if-env-changed=MUNGE_LIB_DIR");
    if let Ok(dir) = env::var("MUNGE_LIB_DIR") {
        println!("cargo:rustc-link-search=native={dir}");
    }
    println!("cargo:rustc-link-lib=munge");

    let bindings = bindgen::Builder::default()
        .header(&header)
        .allowlist_function("munge_.*")
        .allowlist_type("munge_.*")
        .allowlist_var("MUNGE_.*|EMUNGE_.*")
        // Plain integer constants: libmunge hands back values outside the
        // declared enumerators (e.g. from a newer daemon), which would be UB
        // in a Rust enum.
        .default_enum_style(bindgen::EnumVariation::Consts)
        .prepend_enum_name(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .unwrap_or_else(|e| {
            panic!("bindgen failed on {header}: {e} (install libmunge-dev and libclang-dev)")
        });
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    bindings
        .write_to_file(out.join("munge_bindings.rs"))
        .expect("write munge bindings");
}
