//! Proves the local cluster is real: Slurm runs jobs as the test user on both
//! nodes, the registry serves every test image intact, and Munge works.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use shifter_integration::registry::{get_blob, get_manifest, sha256_digest};
use shifter_integration::Testbed;

const T: Duration = Duration::from_secs(60);

#[test]
fn srun_on_two_nodes_runs_as_the_test_user_on_each_node() {
    let Some(tb) = Testbed::get() else { return };
    let r = tb.run_as(
        tb.user(),
        &[
            "srun",
            "-N2",
            "-l",
            "sh",
            "-c",
            "echo $(hostname) $(id -un)",
        ],
        T,
    );
    r.assert_ok();
    let seen: BTreeSet<String> = r.stdout.lines().map(|l| l.to_owned()).collect();
    let nodes = tb.nodes();
    assert!(
        nodes.len() >= 2,
        "the cluster must have two nodes: {nodes:?}"
    );
    for (i, n) in nodes.iter().take(2).enumerate() {
        let want = format!("{i}: {n} {}", tb.user());
        assert!(seen.contains(&want), "missing {want:?} in {r}");
    }
}

#[test]
fn nodes_have_private_mounts() {
    let Some(tb) = Testbed::get() else { return };
    // Each node mounts a private tmpfs at nodelocal/<node>; the host must not see it.
    let host_mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !host_mounts.contains("nodelocal"),
        "node-private mounts leaked into the host namespace"
    );
    let r = tb.run_as(
        tb.user(),
        &[
            "srun",
            "-N2",
            "-l",
            "sh",
            "-c",
            "grep -c nodelocal /proc/self/mountinfo",
        ],
        T,
    );
    r.assert_ok();
    for line in r.stdout.lines() {
        assert!(
            line.ends_with(" 1"),
            "each node sees exactly its own node-local mount: {r}"
        );
    }
}

#[test]
fn sbatch_job_completes_with_output_owned_by_the_user() {
    let Some(tb) = Testbed::get() else { return };
    let out = tb.dir.join("out").join("harness-sbatch.out");
    let _ = std::fs::remove_file(&out);
    let r = tb.run_as(
        tb.user(),
        &[
            "sbatch",
            "--parsable",
            "-N1",
            "-o",
            out.to_str().unwrap(),
            "--wrap",
            "id -un; echo done",
        ],
        T,
    );
    r.assert_ok();
    let job = r.stdout.trim().to_owned();
    assert!(job.parse::<u64>().is_ok(), "sbatch --parsable printed {r}");
    let finished = Testbed::wait_until(Duration::from_secs(60), || {
        let s = tb.run_root(&["scontrol", "show", "job", &job], Duration::from_secs(10));
        s.stdout.contains("JobState=COMPLETED") || s.stdout.contains("Invalid job id")
    });
    assert!(finished, "job {job} did not complete");
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(text, format!("{}\ndone\n", tb.user()));
    let uid = std::fs::metadata(&out).unwrap().uid();
    let want = tb.run_root(&["id", "-u", tb.user()], T);
    assert_eq!(uid.to_string(), want.stdout.trim(), "output file owner");
}

#[test]
fn munge_credentials_round_trip() {
    let Some(tb) = Testbed::get() else { return };
    let r = tb.run_as(tb.user(), &["sh", "-c", "munge -n | unmunge"], T);
    r.assert_ok();
    assert!(r.stdout.contains("STATUS:          Success (0)"), "{r}");
    let uid = tb
        .run_root(&["id", "-u", tb.user()], T)
        .stdout
        .trim()
        .to_owned();
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with("UID:") && l.contains(&format!("({uid})"))),
        "{r}"
    );
}

/// Fetches a manifest or index and checks every digest reachable from it.
fn verify_tree(registry: &str, repo: &str, reference: &str, expect_digest: Option<&str>) -> usize {
    let m = get_manifest(registry, repo, reference).unwrap();
    let actual = sha256_digest(&m.body);
    assert_eq!(
        m.digest_header.as_deref(),
        Some(actual.as_str()),
        "{repo}:{reference} digest header"
    );
    if let Some(want) = expect_digest {
        assert_eq!(
            actual, want,
            "{repo}@{reference}: manifest bytes do not match the descriptor"
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&m.body).unwrap();
    let mut blobs = 0;
    if let Some(children) = v["manifests"].as_array() {
        assert!(
            m.media_type.contains("index") || m.media_type.contains("list"),
            "{}",
            m.media_type
        );
        assert!(
            children.len() >= 2,
            "{repo}:{reference} should list two platforms"
        );
        for c in children {
            let d = c["digest"].as_str().unwrap();
            blobs += verify_tree(registry, repo, d, Some(d));
        }
        return blobs;
    }
    assert_eq!(
        v["schemaVersion"], 2,
        "{repo}:{reference} is not schema2/OCI"
    );
    let mut descs = vec![v["config"].clone()];
    descs.extend(v["layers"].as_array().unwrap().iter().cloned());
    for d in descs {
        let digest = d["digest"].as_str().unwrap();
        let body = get_blob(registry, repo, digest).unwrap();
        assert_eq!(
            sha256_digest(&body),
            digest,
            "{repo}: blob does not match its digest"
        );
        assert_eq!(
            body.len() as u64,
            d["size"].as_u64().unwrap(),
            "{repo}: blob size"
        );
        blobs += 1;
    }
    blobs
}

#[test]
fn registry_serves_every_test_image_and_every_blob_matches_its_digest() {
    let Some(tb) = Testbed::get() else { return };
    let images: Vec<String> = tb
        .var("SHIFTER_IMAGES")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert!(images.len() >= 6, "{images:?}");
    for img in &images {
        let (repo, tag) = img.split_once(':').unwrap();
        let n = verify_tree(tb.registry(), repo, tag, None);
        assert!(n >= 2, "{img}: expected a config and at least one layer");
    }
    // The same image content as Docker schema2 and as OCI.
    let docker = get_manifest(tb.registry(), "busybox", "latest").unwrap();
    let oci = get_manifest(tb.registry(), "busybox", "oci").unwrap();
    assert_eq!(
        docker.media_type,
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(oci.media_type, "application/vnd.oci.image.manifest.v1+json");
    let list = get_manifest(tb.registry(), "multi", "dockerlist").unwrap();
    assert_eq!(
        list.media_type,
        "application/vnd.docker.distribution.manifest.list.v2+json"
    );
}

#[test]
fn test_images_are_reproducible() {
    let Some(tb) = Testbed::get() else { return };
    let again = tb.dir.join("build").join("oci-again");
    let capcheck = tb.dir.join("build/capcheck");
    let mut args = vec![
        "python3".to_owned(),
        concat!(env!("CARGO_MANIFEST_DIR"), "/images/mkoci.py").to_owned(),
        "--out".to_owned(),
        again.display().to_string(),
        "--capcheck".to_owned(),
        capcheck.display().to_string(),
    ];
    // build.sh adds the mpi image when it could compile its programs; so does this.
    let mpi = ["mpi-ring", "pmix-hello"].map(|p| tb.dir.join("build").join(p));
    if mpi.iter().all(|p| p.exists()) {
        args.push("--mpi-programs".to_owned());
        args.extend(mpi.iter().map(|p| p.display().to_string()));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    tb.run_root(&args, T).assert_ok();
    // build.sh adds the attack images (integration/tests/attacks.rs) the same way.
    let spool = tb.dir.join("spool/n1");
    tb.run_root(
        &[
            "python3",
            concat!(env!("CARGO_MANIFEST_DIR"), "/images/attacks.py"),
            "--out",
            again.to_str().unwrap(),
            "--capcheck",
            capcheck.to_str().unwrap(),
            "--busybox",
            "/bin/busybox",
            "--node-spool",
            spool.to_str().unwrap(),
        ],
        T,
    )
    .assert_ok();
    let diff = tb.run_root(
        &[
            "diff",
            "-r",
            tb.dir.join("oci").to_str().unwrap(),
            again.to_str().unwrap(),
        ],
        T,
    );
    assert!(
        diff.success(),
        "two builds of the test images differ: {diff}"
    );
}
