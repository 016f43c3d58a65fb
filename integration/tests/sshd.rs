//! End-to-end tests of the per-job sshd in the container (issue 8,
//! `enable_sshd`): `ssh n2` from a task on n1 lands in the job's container on
//! n2 as the user without privileges; the sshd takes only the job's own key
//! (no passwords, no other job's key); nothing of it remains after the job.
//!
//! The cluster hook `up.d/70-sshd.sh` enables it and gives node nI the address
//! 127.0.1.I; it publishes `SHIFTER_SSHD_PORT` and `SHIFTER_NODE_ADDRS`.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use shifter_integration::slurm::serial;
use shifter_integration::{Run, Testbed};

const T: Duration = Duration::from_secs(90);

/// The port and each node's sshd address, or None after a loud skip notice
/// (a failure when the end-to-end tier is required).
fn sshd_of(tb: &Testbed) -> Option<(u16, Vec<(String, SocketAddr)>)> {
    let (Some(port), Some(addrs)) = (
        tb.var_opt("SHIFTER_SSHD_PORT"),
        tb.var_opt("SHIFTER_NODE_ADDRS"),
    ) else {
        if std::env::var("SHIFTER_E2E_REQUIRED").as_deref() == Ok("1") {
            panic!("SHIFTER_SSHD_PORT missing from the cluster env: up.d/70-sshd.sh did not enable sshd (is openssh-server installed?)");
        }
        test_skip::skip(
            "sshd test",
            "the cluster has no sshd (SHIFTER_SSHD_PORT unset)",
        );
        return None;
    };
    let port: u16 = port.parse().expect("SHIFTER_SSHD_PORT is a port");
    let nodes = addrs
        .split_whitespace()
        .map(|kv| {
            let (n, a) = kv.split_once('=').expect("node=address");
            (n.to_owned(), SocketAddr::new(a.parse().unwrap(), port))
        })
        .collect();
    Some((port, nodes))
}

fn srun(tb: &Testbed, args: &[&str]) -> Run {
    let mut all = vec!["srun"];
    all.extend_from_slice(args);
    tb.run_as(tb.user(), &all, T)
}

/// Task 0 (on n1) runs `script`, retried until it works for a few seconds
/// since n2's sshd may start after n1's task; task 1 (on n2) waits.
fn on_n1_while_n2_runs(script: &str) -> String {
    format!(
        "if [ \"$SLURM_NODEID\" = 0 ]; then i=0; until {script}; do i=$((i+1)); [ $i -ge 20 ] && exit 1; sleep 0.3; done; else sleep 8; fi"
    )
}

/// The pids listening on `port` (from `ss`), to check they are gone later.
fn listeners(port: u16) -> Vec<u32> {
    let out = Command::new("ss")
        .args(["-Hltnp", &format!("sport = :{port}")])
        .output()
        .expect("ss (iproute2)");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut pids: Vec<u32> = text
        .split("pid=")
        .skip(1)
        .filter_map(|s| s.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// The host's ssh client as root, with nothing from root's own config, a
/// given key, and no trust decisions (the probes below are about the server).
fn host_ssh(key: Option<&Path>, user: &str, addr: SocketAddr, extra: &[&str], cmd: &str) -> Run {
    let mut c = Command::new("timeout");
    c.args(["-k", "5", "30", "ssh", "-F", "/dev/null"])
        .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=10"])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args(["-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR"])
        .args(["-p", &addr.port().to_string()]);
    if let Some(k) = key {
        c.arg("-i").arg(k);
    }
    c.args(extra)
        .arg(format!("{user}@{}", addr.ip()))
        .arg(cmd)
        .stdin(Stdio::null());
    let started = std::time::Instant::now();
    let out = c.output().expect("ssh (openssh-client)");
    Run {
        status: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: started.elapsed(),
    }
}

/// The private key a job's task found at /opt/udiImage/sshd/id_ed25519,
/// saved where root's ssh accepts it (0600).
fn save_key(text: &str, name: &str) -> PathBuf {
    let begin = text
        .find("-----BEGIN OPENSSH PRIVATE KEY-----")
        .unwrap_or_else(|| panic!("no private key in the job's output:\n{text}"));
    let end_marker = "-----END OPENSSH PRIVATE KEY-----";
    let end = text[begin..].find(end_marker).expect("end of key") + begin + end_marker.len();
    let path =
        std::env::temp_dir().join(format!("shifter-sshd-test-{name}-{}", std::process::id()));
    std::fs::write(&path, format!("{}\n", &text[begin..end])).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn uid_of(user: &str) -> String {
    shifter_integration::uid_of(user).to_string()
}

#[test]
fn ssh_to_another_node_lands_in_the_container_there_as_the_user() {
    let Some(tb) = Testbed::get() else { return };
    let _serial = serial();
    let Some(_) = sshd_of(&tb) else { return };
    if tb.gateway().is_none() {
        return;
    }
    let image = tb.pulled("busybox:latest");
    let remote = "echo from=$(hostname); ssh n2 'echo on=$(hostname) uid=$(id -u); grep -E \"^(CapEff|NoNewPrivs)\" /proc/self/status; grep ^ID= /etc/os-release'";
    let r = srun(
        &tb,
        &[
            "-N2",
            "-n2",
            &format!("--image={image}"),
            "sh",
            "-c",
            &on_n1_while_n2_runs(&format!("( {remote} ) > /tmp/o 2>&1 && cat /tmp/o")),
        ],
    );
    r.assert_ok();
    let uid = uid_of(tb.user());
    for want in [
        "from=n1".to_owned(),
        format!("on=n2 uid={uid}"),
        "CapEff:\t0000000000000000".to_owned(),
        "NoNewPrivs:\t1".to_owned(),
        // Only in the image, not on the host.
        "ID=shifter-busybox".to_owned(),
    ] {
        assert!(r.stdout.contains(&want), "{want:?} missing: {r}");
    }
    tb.assert_nothing_left();
}

#[test]
fn sshd_takes_only_the_jobs_key_and_is_gone_with_the_job() {
    let Some(tb) = Testbed::get() else { return };
    let _serial = serial();
    let Some((port, nodes)) = sshd_of(&tb) else {
        return;
    };
    if tb.gateway().is_none() {
        return;
    }
    let image = tb.pulled("busybox:latest");
    let user = tb.user().to_owned();
    let n2 = nodes.iter().find(|(n, _)| n == "n2").expect("node n2").1;

    // Job A: its key, as the user sees it in the container.
    let a = srun(
        &tb,
        &[
            "-N1",
            "-w",
            "n1",
            &format!("--image={image}"),
            "cat",
            "/opt/udiImage/sshd/id_ed25519",
        ],
    );
    a.assert_ok();
    let key_a = save_key(&a.stdout, "a");

    // Job B runs on both nodes for a while; its task on n2 prints its key.
    let out = std::env::temp_dir().join(format!("shifter-sshd-test-b-{}.out", std::process::id()));
    let out_file = std::fs::File::create(&out).unwrap();
    let mut cmd = Command::new("runuser");
    cmd.args([
        "-u", &user, "--", "timeout", "-k", "5", "90", "srun", "-N2", "-n2",
    ])
    .arg(format!("--image={image}"))
    .args([
        "sh",
        "-c",
        "if [ \"$SLURM_NODEID\" = 1 ]; then cat /opt/udiImage/sshd/id_ed25519; fi; sleep 15",
    ])
    .stdout(out_file.try_clone().unwrap())
    .stderr(out_file)
    .current_dir(tb.workdir());
    for (k, v) in std::fs::read_to_string(tb.dir.join("env"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let kv = l.strip_prefix("export ")?;
            let (k, v) = kv.split_once('=')?;
            Some((k.to_owned(), v.trim_matches('\'').to_owned()))
        })
    {
        cmd.env(k, v);
    }
    let mut job_b: Child = cmd.spawn().expect("srun");
    let got_key = Testbed::wait_until(Duration::from_secs(60), || {
        std::fs::read_to_string(&out)
            .map(|s| s.contains("-----END OPENSSH PRIVATE KEY-----"))
            .unwrap_or(false)
    });
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(got_key, "job B never printed its key:\n{text}");
    let key_b = save_key(&text, "b");
    assert!(
        TcpStream::connect_timeout(&n2, Duration::from_secs(5)).is_ok(),
        "nothing listens on {n2} while job B runs"
    );
    let pids = listeners(port);
    assert!(!pids.is_empty(), "no listener found on port {port}");
    // The daemons themselves run as the user, without privileges.
    let uid = uid_of(&user);
    for pid in &pids {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
                .unwrap_or_default()
        };
        assert_eq!(
            field("Uid:"),
            format!("{uid} {uid} {uid} {uid}"),
            "sshd {pid}:\n{status}"
        );
        assert_eq!(
            field("CapEff:"),
            "0000000000000000",
            "sshd {pid}:\n{status}"
        );
        assert_eq!(
            field("CapPrm:"),
            "0000000000000000",
            "sshd {pid}:\n{status}"
        );
        assert_eq!(field("NoNewPrivs:"), "1", "sshd {pid}:\n{status}");
    }

    // The job's own key works from outside too: the probes below can fail.
    let ok = host_ssh(Some(&key_b), &user, n2, &[], "hostname; id -u");
    ok.assert_ok();
    assert!(
        ok.stdout.contains("n2") && ok.stdout.contains(&uid_of(&user)),
        "{ok}"
    );

    // Passwords are not even offered: the server lists publickey only.
    let pw = host_ssh(
        None,
        &user,
        n2,
        &[
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "PreferredAuthentications=password,keyboard-interactive",
        ],
        "true",
    );
    pw.assert_failed();
    assert!(pw.stderr.contains("Permission denied (publickey)"), "{pw}");

    // Job A's key (another job of the same user) is refused.
    let other = host_ssh(Some(&key_a), &user, n2, &[], "true");
    other.assert_failed();
    assert!(
        other.stderr.contains("Permission denied (publickey)"),
        "{other}"
    );

    // Only the job's user: the same key for another account is refused.
    let as_other = host_ssh(Some(&key_b), tb.user2(), n2, &[], "true");
    as_other.assert_failed();

    let status = job_b.wait().expect("srun of job B");
    assert!(
        status.success(),
        "job B failed: {}",
        std::fs::read_to_string(&out).unwrap_or_default()
    );
    tb.assert_nothing_left();
    for pid in &pids {
        let gone = Testbed::wait_until(Duration::from_secs(10), || {
            !Path::new(&format!("/proc/{pid}")).exists()
        });
        assert!(gone, "sshd pid {pid} outlived its job");
    }
    for (node, addr) in &nodes {
        assert!(
            TcpListener::bind(addr).is_ok(),
            "port {port} on node {node} ({addr}) is still taken after the job"
        );
    }
    for p in [key_a, key_b, out] {
        let _ = std::fs::remove_file(p);
    }
}
