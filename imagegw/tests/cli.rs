//! The `shifter-imagegw` binary's own behaviour: refusing root, checking its
//! config, explaining itself.

use std::process::Command;

fn gw() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shifter-imagegw"))
}

#[test]
fn refuses_to_run_as_root_without_allow_root() {
    if !nix::unistd::geteuid().is_root() {
        test_skip::skip(
            "refuses_to_run_as_root_without_allow_root",
            "not running as root",
        );
        return;
    }
    let out = gw()
        .args(["--config", "/nonexistent.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to run as root") && err.contains("--allow-root"),
        "{err}"
    );
}

#[test]
fn check_reports_config_errors_by_key_and_accepts_a_good_config() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[systems.a]\nimage_dir = \"/tmp\"\nworkerz = 1\n").unwrap();
    let out = gw()
        .args(["--allow-root", "--check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("workerz") && err.contains("bad.toml"), "{err}");

    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        format!(
            "[systems.a]\nimage_dir = {:?}\ncompression = \"zstd:3\"\n",
            dir.path()
        ),
    )
    .unwrap();
    let out = gw()
        .args(["--allow-root", "--check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    std::fs::write(
        &good,
        format!(
            "[systems.a]\nimage_dir = {:?}\ncompression = \"brotli\"\n",
            dir.path()
        ),
    )
    .unwrap();
    let out = gw()
        .args(["--allow-root", "--check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("brotli"), "{err}");
}

#[test]
fn help_explains_what_the_gateway_does() {
    let out = gw().arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in ["--config", "--allow-root", "squashfs", "Munge", "SIGTERM"] {
        assert!(text.contains(needle), "--help lacks {needle}:\n{text}");
    }
}
