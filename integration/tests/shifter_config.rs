//! End-to-end test of `shifter-config import` (issue 8): a Shifter-style
//! udiRoot.conf describing the local cluster is imported, and the resulting
//! shifter.toml runs a real container with the imported site mount and
//! environment.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use shifter_integration::Testbed;

const T: Duration = Duration::from_secs(120);

#[test]
fn imported_udiroot_conf_runs_a_container_with_the_sites_mounts_and_env() {
    let Some(tb) = Testbed::get() else { return };
    let Some(gateway) = tb.var_opt("SHIFTER_GATEWAY").map(str::to_owned) else {
        if std::env::var("SHIFTER_E2E_REQUIRED").as_deref() == Ok("1") {
            panic!("SHIFTER_GATEWAY missing from the cluster env");
        }
        test_skip::skip("shifter-config e2e", "no image gateway in this cluster");
        return;
    };
    let dir = tb
        .dir
        .join("out")
        .join(format!("shifter-config-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let site = dir.join("site");
    std::fs::create_dir_all(&site).unwrap();
    // The runtime trusts only a root-owned config in a directory nobody else can write.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(site.join("marker"), "site-content\n").unwrap();
    let udiroot = dir.join("udiRoot.conf");
    std::fs::write(
        &udiroot,
        format!(
            "# a Shifter site config pointing at the test cluster\n\
             system={system}\n\
             imagePath={images}\n\
             udiMount={mnt}\n\
             loopMount=/var/udiLoopMount\n\
             udiRootPath=/opt/shifter/udiRoot/default\n\
             etcPath=/opt/shifter/udiRoot/default/etc_files\n\
             cpPath=/bin/cp\n\
             rootfsType=tmpfs\n\
             imageGateway={gateway}\n\
             siteFs={site}:/site:ro\n\
             siteEnv=IMPORTED_FROM_SHIFTER=yes\n\
             siteEnvPrepend=PATH=/site/bin\n",
            system = tb.var("SHIFTER_GW_SYSTEM"),
            images = tb.var("SHIFTER_IMAGE_DIR"),
            mnt = tb.var("SHIFTER_MOUNT_ROOT"),
            site = site.display(),
        ),
    )
    .unwrap();
    let out = dir.join("shifter.toml");
    let bin = |name: &str| tb.bin_dir().join(name).display().to_string();
    let import = tb.run_root(
        &[
            &bin("shifter-config"),
            "import",
            udiroot.to_str().unwrap(),
            "--gateway-user",
            tb.var("SHIFTER_GW_USER"),
            "-o",
            out.to_str().unwrap(),
        ],
        T,
    );
    import.assert_ok();
    assert!(import.stderr.contains("`cpPath` ignored"), "{import}");

    let image = format!("docker:{}/busybox:latest", tb.registry());
    let cfg = out.display().to_string();
    tb.run_as(
        tb.user(),
        &[&bin("shifterimg"), "--config", &cfg, "pull", &image],
        Duration::from_secs(300),
    )
    .assert_ok();
    let user = format!("--user={}", tb.user());
    let img = format!("--image={image}");
    let r = tb.run_root(
        &[
            &bin("shifter"),
            "--config",
            &cfg,
            &user,
            &img,
            "sh",
            "-c",
            "grep ^ID= /etc/os-release; cat /site/marker; echo env=$IMPORTED_FROM_SHIFTER; echo path=$PATH",
        ],
        T,
    );
    let _ = std::fs::remove_dir_all(&dir);
    r.assert_ok();
    assert!(
        r.stdout.contains("ID=shifter-busybox"),
        "not in the image: {r}"
    );
    assert!(r.stdout.contains("site-content"), "siteFs not mounted: {r}");
    assert!(r.stdout.contains("env=yes"), "siteEnv not applied: {r}");
    assert!(
        r.stdout.contains("path=/site/bin:"),
        "siteEnvPrepend not applied: {r}"
    );
}
