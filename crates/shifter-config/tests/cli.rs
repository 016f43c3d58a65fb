//! The `shifter-config` binary as an admin runs it.

use std::path::Path;
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shifter-config"))
}

fn data(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn import_writes_a_config_the_runtime_loads_and_lists_ignored_keys() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("shifter.toml");
    let run = bin()
        .args(["import", &data("udiRoot.conf"), "-o"])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(
        stderr.contains("note: line 6: `udiRootPath` ignored"),
        "{stderr}"
    );
    let cfg = runtime_core::config::Config::load_untrusted(&out).unwrap();
    assert_eq!(cfg.system, "clusterx");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o644,
        "the runtime refuses a group/world-writable config"
    );

    // an existing file is not overwritten without --force
    let again = bin()
        .args(["import", &data("udiRoot.conf"), "-o"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    let forced = bin()
        .args(["import", &data("udiRoot.conf"), "--force", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(forced.status.success());
}

#[test]
fn gateway_user_becomes_the_trusted_image_owner() {
    let run = bin()
        .args(["import", &data("udiRoot.conf"), "--gateway-user", "root"])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let text = String::from_utf8(run.stdout).unwrap();
    let cfg = runtime_core::config::Config::parse(&text, Path::new("s.toml")).unwrap();
    assert_eq!(cfg.gateway_uid, Some(0));
    let bad = bin()
        .args([
            "import",
            &data("udiRoot.conf"),
            "--gateway-user",
            "no-such-user-xyz",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no-such-user-xyz"));
}

#[test]
fn refused_import_fails_names_the_keys_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("shifter.toml");
    let run = bin()
        .args(["import", &data("udiRoot-unmappable.conf"), "-o"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("line 3: `sitePreMountHook`"), "{stderr}");
    assert!(stderr.contains("line 7: `udiRootBogus`"), "{stderr}");
    assert!(!out.exists());
}

#[test]
fn import_gateway_prints_to_stdout_and_needs_a_store_for_mongodb() {
    let run = bin()
        .args(["import-gateway", &data("imagemanager.json")])
        .output()
        .unwrap();
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("MongoDBURI"));

    let run = bin()
        .args([
            "import-gateway",
            &data("imagemanager.json"),
            "--store",
            "postgres://gw@db/shifter",
        ])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let text = String::from_utf8(run.stdout).unwrap();
    let cfg = shifter_imagegw::config::Config::parse(&text).unwrap();
    assert_eq!(cfg.store, "postgres://gw@db/shifter");
    assert!(cfg.systems.contains_key("clusterx"));
}
