//! End-to-end: the built `shifter` binary against real loop devices and
//! mounts, run for the cluster's non-root test user, with an image the test
//! builds with mksquashfs into its own root-owned image directory; and, when
//! the cluster has a gateway, with a tag pulled through it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use shifter_integration::{Run, Testbed};

const TIMEOUT: Duration = Duration::from_secs(120);

/// A root-owned image store with one busybox + capcheck image, and a config.
struct Local {
    tb: Testbed,
    dir: PathBuf,
    config: PathBuf,
    id: String,
}

impl Drop for Local {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn sh(cmd: &str) {
    let out = Command::new("sh").args(["-ec", cmd]).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn local() -> Option<Local> {
    let tb = Testbed::get()?;
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = tb.dir.join(format!(
        "rt-e2e-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let images = dir.join("images");
    let tree = dir.join("tree");
    for d in ["bin", "usr/local/bin", "etc", "app", "scratch"] {
        std::fs::create_dir_all(tree.join(d)).unwrap();
    }
    std::fs::create_dir_all(&images).unwrap();
    let helper = Path::new(env!("CARGO_MANIFEST_DIR")).join("images/helpers/capcheck.c");
    sh(&format!(
        "chmod 0755 {dir} {images}; cp \"$(command -v busybox)\" {tree}/bin/busybox; \
         for a in sh cat ls echo true pwd touch id env; do ln -s busybox {tree}/bin/$a; done; \
         gcc -static -O1 -o {tree}/usr/local/bin/capcheck {helper}; \
         cp {tree}/usr/local/bin/capcheck {tree}/usr/local/bin/capcheck-suid; chmod 4755 {tree}/usr/local/bin/capcheck-suid; \
         chmod 1777 {tree}/scratch; echo ID=rt-e2e > {tree}/etc/os-release; \
         mksquashfs {tree} {dir}/img.sqfs -noappend -all-root -quiet >/dev/null",
        dir = dir.display(),
        images = images.display(),
        tree = tree.display(),
        helper = helper.display(),
    ));
    let out = Command::new("sha256sum")
        .arg(dir.join("img.sqfs"))
        .output()
        .unwrap();
    let id = String::from_utf8_lossy(&out.stdout)[..64].to_owned();
    std::fs::rename(dir.join("img.sqfs"), images.join(format!("{id}.squashfs"))).unwrap();
    let meta = format!(
        r#"{{"id":"{id}","format":"squashfs","itype":"custom","env":["PATH=/usr/local/bin:/bin","FROM_IMAGE=yes"],"workdir":"/app","entrypoint":["/bin/echo","entry"],"cmd":["point"]}}"#
    );
    std::fs::write(images.join(format!("{id}.json")), meta).unwrap();
    for f in [format!("{id}.squashfs"), format!("{id}.json")] {
        std::fs::set_permissions(images.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let config = dir.join("shifter.toml");
    std::fs::write(
        &config,
        format!(
            "system = \"e2e\"\nimage_dir = \"{}\"\nmount_root = \"{}\"\nupper_size = \"32m\"\n\
             [site_env]\nSITE_VAR = \"site\"\n[modules.m1]\nenv = {{ MOD_VAR = \"m1\" }}\n",
            images.display(),
            dir.join("mnt").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    Some(Local {
        tb,
        dir,
        config,
        id,
    })
}

impl Local {
    fn bin(&self) -> String {
        self.tb.bin_dir().join("shifter").display().to_string()
    }

    /// Runs shifter as root on behalf of the test user (`--user`).
    fn shifter(&self, args: &[&str]) -> Run {
        let bin = self.bin();
        let config = self.config.display().to_string();
        let image = format!("--image=id:{}", self.id);
        let user = format!("--user={}", self.tb.user());
        let mut all: Vec<&str> = vec![&bin, "--config", &config, &user, &image];
        all.extend_from_slice(args);
        self.tb.run_root(&all, TIMEOUT)
    }

    fn uid(&self) -> u32 {
        let out = Command::new("id")
            .args(["-u", self.tb.user()])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    }
}

fn assert_unprivileged(r: &Run, uid: u32) {
    r.assert_ok();
    assert!(
        r.stdout
            .contains(&format!("uid={uid} euid={uid} suid={uid}")),
        "{r}"
    );
    for k in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert!(
            r.stdout.contains(&format!("{k}:\t0000000000000000")),
            "{k} not zero: {r}"
        );
    }
    assert!(r.stdout.contains("NoNewPrivs:\t1"), "{r}");
    assert!(!r.stdout.contains("setuid0=ok"), "{r}");
}

#[test]
fn shifter_runs_the_users_command_without_any_privilege() {
    let Some(l) = local() else { return };
    assert_unprivileged(&l.shifter(&["capcheck"]), l.uid());
    assert_unprivileged(&l.shifter(&["capcheck-suid"]), l.uid());
    let r = l.shifter(&["cat", "/etc/os-release"]);
    r.assert_ok();
    assert_eq!(r.stdout, "ID=rt-e2e\n");
}

#[test]
fn shifter_exit_status_is_the_commands_and_127_when_not_found() {
    let Some(l) = local() else { return };
    assert_eq!(l.shifter(&["sh", "-c", "exit 7"]).status, Some(7));
    let r = l.shifter(&["no-such-command"]);
    assert_eq!(r.status, Some(127), "{r}");
    assert!(
        r.stderr.contains("no-such-command: command not found"),
        "{r}"
    );
}

#[test]
fn shifter_environment_follows_image_then_module_then_site_then_user() {
    let Some(l) = local() else { return };
    let r = l.shifter(&[
        "--env=USER_VAR=u",
        "--module=m1",
        "--",
        "sh",
        "-c",
        "echo $FROM_IMAGE $MOD_VAR $SITE_VAR $USER_VAR $SHIFTER_IMAGEREQUEST; id -un",
    ]);
    r.assert_ok();
    let mut lines = r.stdout.lines();
    assert_eq!(
        lines.next(),
        Some(format!("yes m1 site u id:{}", l.id).as_str()),
        "{r}"
    );
    assert_eq!(
        lines.next(),
        Some(l.tb.user()),
        "passwd names the user: {r}"
    );
}

#[test]
fn shifter_workdir_and_entrypoint_follow_docker_rules() {
    let Some(l) = local() else { return };
    // The caller's cwd (the cluster work dir) does not exist in the image: WORKDIR wins.
    let r = l.shifter(&["pwd"]);
    r.assert_ok();
    assert_eq!(r.stdout.trim(), "/app", "{r}");
    let r = l.shifter(&["--workdir=/scratch", "pwd"]);
    assert_eq!(r.stdout.trim(), "/scratch", "{r}");
    let r = l.shifter(&["--entrypoint"]);
    r.assert_ok();
    assert_eq!(r.stdout, "entry point\n", "{r}");
}

#[test]
fn shifter_volume_is_readable_and_read_only_when_asked() {
    let Some(l) = local() else { return };
    let vol = l.dir.join("vol");
    std::fs::create_dir_all(&vol).unwrap();
    std::fs::write(vol.join("hello"), "from host\n").unwrap();
    sh(&format!(
        "chmod 0755 {0}; chmod 0644 {0}/hello",
        vol.display()
    ));
    let spec = format!("--volume={}:/data:ro", vol.display());
    let r = l.shifter(&[
        &spec,
        "sh",
        "-c",
        "cat /data/hello; touch /data/x 2>&1; true",
    ]);
    r.assert_ok();
    assert!(r.stdout.starts_with("from host\n"), "{r}");
    assert!(r.stdout.contains("Read-only file system"), "{r}");
    let r = l.shifter(&["--volume=/root:/data", "true"]);
    r.assert_failed();
    assert!(
        r.stderr.contains("cannot read your volume source /root"),
        "{r}"
    );
    let r = l.shifter(&["--volume=/tmp:/etc", "true"]);
    r.assert_failed();
    assert!(r.stderr.contains("/etc is generated by the runtime"), "{r}");
}

#[test]
fn shifter_refuses_root_as_the_target_user() {
    let Some(l) = local() else { return };
    let bin = l.bin();
    let config = l.config.display().to_string();
    let image = format!("--image=id:{}", l.id);
    let r =
        l.tb.run_root(&[&bin, "--config", &config, &image, "true"], TIMEOUT);
    assert_eq!(r.status, Some(1), "{r}");
    assert!(
        r.stderr.contains("refusing to run a container as root"),
        "{r}"
    );
}

#[test]
fn setuid_shifter_distrusts_the_callers_config_path_and_user() {
    let Some(l) = local() else { return };
    // A fresh setuid-root copy of the binary under test, as an admin installs it.
    let bin = l.dir.join("sbin/shifter").display().to_string();
    sh(&format!(
        "install -d -o root -g root -m 0755 {0}/sbin && install -o root -g root -m 4755 {1} {2}",
        l.dir.display(),
        l.bin(),
        bin
    ));
    let config = l.config.display().to_string();
    let image = format!("--image=id:{}", l.id);
    let r = l.tb.run_as_with_env(
        l.tb.user(),
        &[&bin, &image, "true"],
        &[("SHIFTER_CONFIG", &config)],
        TIMEOUT,
    );
    r.assert_failed();
    if !Path::new("/etc/shifter/shifter.toml").exists() {
        assert!(
            r.stderr.contains("/etc/shifter/shifter.toml"),
            "the system config was used: {r}"
        );
    }
    let r =
        l.tb.run_as(l.tb.user(), &[&bin, "--user=root", &image, "true"], TIMEOUT);
    r.assert_failed();
    assert!(r.stderr.contains("--user is only for root"), "{r}");
}

#[test]
fn shifter_leaves_no_loop_device_or_mount_behind() {
    let Some(l) = local() else { return };
    for _ in 0..3 {
        l.shifter(&["true"]).assert_ok();
    }
    l.shifter(&["sh", "-c", "kill -9 $$"]);
    assert!(
        Testbed::wait_until(Duration::from_secs(5), || Testbed::loop_devices_backed_by(
            &l.dir
        )
        .is_empty()),
        "loop devices left: {:?}",
        Testbed::loop_devices_backed_by(&l.dir)
    );
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mi.contains(l.dir.to_str().unwrap()),
        "mount left on the host: {mi}"
    );
}

#[test]
fn shifter_runs_a_tag_pulled_through_the_gateway() {
    let Some(tb) = Testbed::get() else { return };
    let (Some(gw), Some(images)) = (
        tb.var_opt("SHIFTER_GATEWAY"),
        tb.var_opt("SHIFTER_IMAGE_DIR"),
    ) else {
        if std::env::var("SHIFTER_E2E_REQUIRED").as_deref() == Ok("1") {
            panic!("SHIFTER_GATEWAY/SHIFTER_IMAGE_DIR missing: the gateway hook did not run");
        }
        test_skip::skip(
            "shifter_runs_a_tag_pulled_through_the_gateway",
            "no gateway in this cluster",
        );
        return;
    };
    let system = tb
        .var_opt("SHIFTER_GW_SYSTEM")
        .unwrap_or("testbed")
        .to_owned();
    let gw_user = tb.var("SHIFTER_GW_USER").to_owned();
    let gw_uid = String::from_utf8(
        Command::new("id")
            .args(["-u", &gw_user])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let dir = tb.dir.join(format!("rt-e2e-gw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    sh(&format!("chmod 0755 {}", dir.display()));
    let config = dir.join("shifter.toml");
    std::fs::write(
        &config,
        format!(
            "system = \"{system}\"\nimage_dir = \"{images}\"\ngateways = [\"{gw}\"]\ngateway_uid = {}\nmount_root = \"{}\"\n",
            gw_uid.trim(),
            dir.join("mnt").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let image = format!("docker:{}/busybox:latest", tb.registry());
    let shifterimg = tb.bin_dir().join("shifterimg").display().to_string();
    let cfg = config.display().to_string();
    tb.run_as(
        tb.user(),
        &[
            &shifterimg,
            "--config",
            &cfg,
            "--gateway",
            gw,
            "--system",
            &system,
            "pull",
            &image,
        ],
        Duration::from_secs(300),
    )
    .assert_ok();
    let bin = tb.bin_dir().join("shifter").display().to_string();
    let user = format!("--user={}", tb.user());
    let img = format!("--image={image}");
    let r = tb.run_root(
        &[
            &bin,
            "--config",
            &cfg,
            &user,
            &img,
            "cat",
            "/etc/os-release",
        ],
        TIMEOUT,
    );
    let _ = std::fs::remove_dir_all(&dir);
    r.assert_ok();
    assert!(r.stdout.contains("ID=shifter-busybox"), "{r}");
}
