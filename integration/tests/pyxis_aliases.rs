//! End-to-end tests of the pyxis-style option aliases (issue 8):
//! `--container-image`, `--container-mounts`, `--container-workdir`, run as
//! the non-root test user with real srun against the local cluster.

use std::process::Command;
use std::time::Duration;

use shifter_integration::slurm::{assert_refused_at_submit, serial};
use shifter_integration::{Run, Testbed};

const T: Duration = Duration::from_secs(60);

fn srun(tb: &Testbed, args: &[&str]) -> Run {
    let mut all = vec!["srun"];
    all.extend_from_slice(args);
    tb.run_as(tb.user(), &all, T)
}

/// A fresh directory owned by the test user (so only they could bind it).
fn user_dir(tb: &Testbed, name: &str) -> std::path::PathBuf {
    let dir = tb
        .dir
        .join("out")
        .join(format!("pyxis-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let st = Command::new("chown")
        .args([tb.user(), dir.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success(), "chown {}", dir.display());
    dir
}

#[test]
fn srun_help_lists_the_pyxis_aliases() {
    let Some(tb) = Testbed::get() else { return };
    let _serial = serial();
    let r = srun(&tb, &["--help"]);
    r.assert_ok();
    for opt in [
        "--container-image=REF",
        "--container-mounts=SRC:DST[:ro],...",
        "--container-workdir=DIR",
    ] {
        assert!(r.stdout.contains(opt), "srun --help lacks {opt}: {r}");
    }
    assert!(r.stdout.contains("Alias of --image"), "{r}");
}

#[test]
fn container_image_runs_the_task_in_the_image() {
    let Some(tb) = Testbed::get() else { return };
    let _serial = serial();
    if tb.gateway().is_none() {
        return;
    }
    let image = tb.pulled("busybox:latest");
    let r = srun(
        &tb,
        &[
            &format!("--container-image={image}"),
            "cat",
            "/etc/os-release",
        ],
    );
    r.assert_ok();
    assert!(
        r.stdout.contains("ID=shifter-busybox"),
        "not in the image: {r}"
    );
}

#[test]
fn container_mounts_bind_user_dirs_with_ro_honoured() {
    let Some(tb) = Testbed::get() else { return };
    let _serial = serial();
    if tb.gateway().is_none() {
        return;
    }
    let image = tb.pulled("busybox:latest");
    let ro = user_dir(&tb, "ro");
    std::fs::write(ro.join("marker"), "from-the-host\n").unwrap();
    let rw = user_dir(&tb, "rw");
    let mounts = format!("{}:/data:ro,{}:/out", ro.display(), rw.display());
    let r = srun(
        &tb,
        &[
            &format!("--container-image={image}"),
            &format!("--container-mounts={mounts}"),
            "sh",
            "-c",
            "grep ^ID= /etc/os-release; cat /data/marker; touch /data/x 2>/dev/null || echo data-read-only; echo written > /out/result",
        ],
    );
    r.assert_ok();
    assert!(r.stdout.contains("ID=shifter-busybox"), "{r}");
    assert!(r.stdout.contains("from-the-host"), "mount missing: {r}");
    assert!(
        r.stdout.contains("data-read-only"),
        ":ro mount was writable: {r}"
    );
    assert!(!ro.join("x").exists(), "write went through a :ro mount");
    let written = std::fs::read_to_string(rw.join("result")).unwrap_or_default();
    assert_eq!(
        written, "written\n",
        "the writable mount did not reach the host: {r}"
    );
}

#[test]
fn bad_container_mounts_fail_at_submit_naming_the_option() {
    let Some(tb) = Testbed::get() else { return };
    let _serial = serial();
    let image = format!("--container-image=id:{}", "c".repeat(64));
    let r = srun(&tb, &[&image, "--container-mounts=/tmp:/data:exec", "true"]);
    assert_refused_at_submit(&r, "--container-mounts=\"/tmp:/data:exec\"");
    let r = srun(&tb, &[&image, "--container-mounts=data:/data", "true"]);
    assert_refused_at_submit(&r, "--container-mounts=");
    let r = srun(&tb, &[&image, "--container-mounts=/tmp:/etc", "true"]);
    assert_refused_at_submit(&r, "volume destination /etc is forbidden");
    let other = format!("--image=id:{}", "d".repeat(64));
    let r = srun(&tb, &[&image, &other, "true"]);
    assert_refused_at_submit(
        &r,
        &format!(
            "--container-image=\"id:{}\" and --image=\"id:{}\" disagree: give one of them",
            "c".repeat(64),
            "d".repeat(64)
        ),
    );
    let r = srun(&tb, &[&image, "--container-workdir=relative", "true"]);
    assert_refused_at_submit(&r, "--container-workdir=\"relative\"");
}

#[test]
fn container_workdir_is_where_the_task_starts() {
    let Some(tb) = Testbed::get() else { return };
    let _serial = serial();
    if tb.gateway().is_none() {
        return;
    }
    let image = tb.pulled("busybox:latest");
    let img = format!("--container-image={image}");
    let r = srun(
        &tb,
        &[
            &img,
            "--container-workdir=/usr/local/bin",
            "sh",
            "-c",
            "pwd; ls",
        ],
    );
    r.assert_ok();
    let mut lines = r.stdout.lines();
    assert_eq!(lines.next(), Some("/usr/local/bin"), "{r}");
    assert!(
        r.stdout.contains("capcheck"),
        "not the image's /usr/local/bin: {r}"
    );
    // without it, the task starts elsewhere (the submit dir is not in the image)
    let r = srun(&tb, &[&img, "pwd"]);
    r.assert_ok();
    assert_ne!(r.stdout.trim(), "/usr/local/bin", "{r}");
}

#[test]
fn container_workdir_missing_in_the_image_fails_the_step_with_its_name() {
    let Some(tb) = Testbed::get() else { return };
    let _serial = serial();
    if tb.gateway().is_none() {
        return;
    }
    let image = tb.pulled("busybox:latest");
    let r = srun(
        &tb,
        &[
            &format!("--container-image={image}"),
            "--container-workdir=/no/such/dir",
            "pwd",
        ],
    );
    r.assert_failed();
    assert!(
        r.stderr
            .contains("--container-workdir=/no/such/dir: no such directory in the container"),
        "{r}"
    );
}

#[test]
fn sbatch_directives_with_the_aliases_apply_to_the_jobs_steps() {
    let Some(tb) = Testbed::get() else { return };
    let _serial = serial();
    if tb.gateway().is_none() {
        return;
    }
    let image = tb.pulled("busybox:latest");
    let data = user_dir(&tb, "batch");
    std::fs::write(data.join("marker"), "batch-marker\n").unwrap();
    let pid = std::process::id();
    let script = tb.workdir().join(format!("pyxis-directives-{pid}.sh"));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n#SBATCH --container-image={image}\n#SBATCH --container-mounts={}:/data:ro\n#SBATCH --container-workdir=/data\nsrun sh -c 'grep ^ID= /etc/os-release; pwd; cat marker'\n",
            data.display()
        ),
    )
    .unwrap();
    let out = tb
        .dir
        .join("out")
        .join(format!("pyxis-directives-{pid}.out"));
    let r = tb.run_as(
        tb.user(),
        &[
            "sbatch",
            "--wait",
            "-o",
            out.to_str().unwrap(),
            script.to_str().unwrap(),
        ],
        Duration::from_secs(120),
    );
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_file(&script);
    r.assert_ok();
    assert!(
        text.contains("ID=shifter-busybox"),
        "not in the image: {text}"
    );
    assert!(text.contains("/data\n"), "workdir not honoured: {text}");
    assert!(text.contains("batch-marker"), "mount missing: {text}");
}
