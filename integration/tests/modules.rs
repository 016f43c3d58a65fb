//! End-to-end tests of site modules (issue 8): the example `gpu` module of
//! `integration/cluster/up.d/25-modules.sh` (stand-in NVIDIA device nodes and
//! a stand-in `libnvidia-ml.so.1`, since these machines have no GPU), also
//! through the `shifter` command; conflicting modules refused at submit;
//! `mpich` (a real MPI program of the `mpi` test image over PMI2 with the
//! host's MPICH) and `pmix` (a real PMIx client with `srun --mpi=pmix`), on
//! two nodes. Run as the non-root test user with real srun against the local
//! cluster.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use shifter_integration::slurm::{self, serial};
use shifter_integration::{Run, Testbed};

const T: Duration = Duration::from_secs(90);
const GPU_LIB_IN_CONTAINER: &str = "/opt/shifter/gpu/lib";
const STAND_IN_NODES: &[&str] = &["nvidiactl", "nvidia0", "nvidia1"];
/// What every container's /dev holds without modules (runtime-core's
/// `DEVICES` plus devpts, shm and the standard links).
const PLAIN_DEV: &[&str] = &[
    "fd", "full", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin", "stdout", "tty",
    "urandom", "zero",
];

fn required() -> bool {
    std::env::var("SHIFTER_E2E_REQUIRED").as_deref() == Ok("1")
}

fn config_path(tb: &Testbed) -> PathBuf {
    PathBuf::from(tb.config_path())
}

/// The cluster with the gateway and the example modules, or None after a
/// loud skip notice.
fn ready() -> Option<Testbed> {
    let tb = Testbed::get()?;
    let conf = std::fs::read_to_string(config_path(&tb)).unwrap_or_default();
    let why = if tb.var_opt("SHIFTER_GATEWAY").is_none() {
        Some("no image gateway in this cluster (SHIFTER_GATEWAY unset)")
    } else if !conf.contains("[modules.gpu]") {
        Some("the site config has no [modules.gpu]: the 25-modules.sh hook did not run")
    } else {
        None
    };
    match why {
        Some(why) if required() => panic!("modules e2e: {why}"),
        Some(why) => {
            test_skip::skip("modules e2e test", why);
            None
        }
        None => Some(tb),
    }
}

fn image(tb: &Testbed) -> String {
    tb.pulled("busybox:latest")
}

fn srun(tb: &Testbed, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut all = vec!["srun"];
    all.extend_from_slice(args);
    tb.run_as_with_env(tb.user(), &all, env, T)
}

/// Stand-in GPU device nodes (char 1:3, i.e. /dev/null) in the host's /dev,
/// which the nodes share, and a stand-in driver library; the nodes are
/// removed again on drop. Nodes that already exist are left alone.
struct FakeGpu {
    created: Vec<PathBuf>,
}

impl FakeGpu {
    fn install(tb: &Testbed) -> FakeGpu {
        let mut created = Vec::new();
        for n in STAND_IN_NODES {
            let p = Path::new("/dev").join(n);
            if p.exists() {
                continue;
            }
            let st = Command::new("mknod")
                .args(["-m", "0666", p.to_str().unwrap(), "c", "1", "3"])
                .status()
                .unwrap();
            assert!(st.success(), "mknod {}", p.display());
            created.push(p);
        }
        let guard = FakeGpu { created };
        let lib_dir = tb.dir.join("modules/gpu/lib");
        let src = lib_dir.join("nvml-stand-in.c");
        std::fs::write(&src, "int nvmlInit_v2(void) { return 0; }\n").unwrap();
        let out = Command::new("gcc")
            .args(["-shared", "-fPIC", "-Wl,-soname,libnvidia-ml.so.1", "-o"])
            .arg(lib_dir.join("libnvidia-ml.so.1"))
            .arg(&src)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "gcc: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        guard
    }
}

impl Drop for FakeGpu {
    fn drop(&mut self) {
        for p in &self.created {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn lines_with<'a>(r: &'a Run, prefix: &str) -> Vec<&'a str> {
    r.stdout
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .collect()
}

const PROBE: &str = "echo DEV=$(ls /dev | tr '\\n' ' '); echo LD=$LD_LIBRARY_PATH; \
    echo ELF=$(head -c 4 /opt/shifter/gpu/lib/libnvidia-ml.so.1 2>&1 | tail -c 3); \
    echo CONF=$(cat /etc/ld.so.conf.d/shifter-gpu.conf 2>&1 | grep -v '^#')";

#[test]
fn gpu_module_binds_device_nodes_and_puts_driver_libraries_first_on_every_node() {
    let Some(tb) = ready() else { return };
    let _serial = serial();
    let image = image(&tb);
    let _gpu = FakeGpu::install(&tb);
    let r = srun(
        &tb,
        &[
            &format!("--image={image}"),
            "--module=gpu",
            "-N2",
            "-n2",
            "sh",
            "-c",
            PROBE,
        ],
        &[("LD_LIBRARY_PATH", "/job/lib")],
    );
    r.assert_ok();
    let devs = lines_with(&r, "DEV=");
    assert_eq!(devs.len(), 2, "one line per node: {r}");
    for d in devs {
        let names: Vec<&str> = d.split_whitespace().collect();
        for n in STAND_IN_NODES {
            assert!(names.contains(n), "/dev/{n} missing: {r}");
        }
    }
    for ld in lines_with(&r, "LD=") {
        assert_eq!(ld, format!("{GPU_LIB_IN_CONTAINER}:/job/lib"), "{r}");
    }
    for elf in lines_with(&r, "ELF=") {
        assert_eq!(elf, "ELF", "the driver library is not readable: {r}");
    }
    for conf in lines_with(&r, "CONF=") {
        assert_eq!(conf, GPU_LIB_IN_CONTAINER, "{r}");
    }
}

#[test]
fn cuda_visible_devices_selects_which_numbered_gpu_nodes_appear() {
    let Some(tb) = ready() else { return };
    let _serial = serial();
    let image = image(&tb);
    let _gpu = FakeGpu::install(&tb);
    let r = srun(
        &tb,
        &[&format!("--image={image}"), "--module=gpu", "ls", "/dev"],
        &[("CUDA_VISIBLE_DEVICES", "1")],
    );
    r.assert_ok();
    let names: Vec<&str> = r.stdout.split_whitespace().collect();
    assert!(names.contains(&"nvidia1"), "{r}");
    assert!(
        names.contains(&"nvidiactl"),
        "control nodes always come: {r}"
    );
    assert!(!names.contains(&"nvidia0"), "GPU 0 was not selected: {r}");
}

#[test]
fn without_the_module_there_are_no_gpu_nodes_libraries_or_host_dev_entries() {
    let Some(tb) = ready() else { return };
    let _serial = serial();
    let image = image(&tb);
    let _gpu = FakeGpu::install(&tb);
    for module in ["--module=none", "--module=testmod"] {
        let r = srun(
            &tb,
            &[&format!("--image={image}"), module, "sh", "-c", PROBE],
            &[],
        );
        r.assert_ok();
        let devs = lines_with(&r, "DEV=");
        let names: Vec<&str> = devs[0].split_whitespace().collect();
        assert_eq!(names, PLAIN_DEV, "{module}: only the minimal /dev: {r}");
        let ld = lines_with(&r, "LD=");
        assert!(!ld[0].contains(GPU_LIB_IN_CONTAINER), "{module}: {r}");
        assert_ne!(lines_with(&r, "ELF=")[0], "ELF", "{module}: {r}");
    }
}

#[track_caller]
fn assert_refused_at_submit(r: &Run, needles: &[&str]) {
    for n in needles {
        slurm::assert_refused_at_submit(r, n);
    }
}

#[test]
fn conflicting_modules_are_refused_at_submit_naming_both() {
    let Some(tb) = ready() else { return };
    let _serial = serial();
    let image = format!("docker:{}/busybox:latest", tb.registry());
    let r = srun(
        &tb,
        &[&format!("--image={image}"), "--module=cpu-only,gpu", "true"],
        &[],
    );
    assert_refused_at_submit(&r, &["\"cpu-only\"", "\"gpu\"", "conflict"]);
    let r = srun(
        &tb,
        &[&format!("--image={image}"), "--module=gpu,gpu-alt", "true"],
        &[],
    );
    assert_refused_at_submit(&r, &["\"gpu\"", "\"gpu-alt\"", GPU_LIB_IN_CONTAINER]);
    // The same through the environment variable srun reads.
    let r = srun(
        &tb,
        &[&format!("--image={image}"), "true"],
        &[("SHIFTER_MODULE", "gpu,cpu-only")],
    );
    assert_refused_at_submit(&r, &["\"cpu-only\"", "\"gpu\""]);
}

/// The `mpi` test image (busybox plus a glibc userland with MPICH, libpmix
/// and the programs `mpi-ring` and `pmix-hello`, see
/// integration/images/mkoci.py), pulled; None after a loud skip notice.
fn mpi_image(tb: &Testbed, module: &str) -> Option<String> {
    let conf = std::fs::read_to_string(config_path(tb)).unwrap_or_default();
    let why = match tb.var_opt("SHIFTER_MPI_IMAGE") {
        _ if !conf.contains(&format!("[modules.{module}]")) => {
            format!("the site config has no [modules.{module}]")
        }
        None => "no mpi test image (build.sh needs mpicc and libpmix-dev)".to_owned(),
        Some(img) => return Some(tb.pulled(img)),
    };
    assert!(!required(), "{module} module test: {why}");
    test_skip::skip(&format!("{module} module test"), &why);
    None
}

const MPICH_LIB: &str = "/opt/shifter/mpich/lib";
/// Where the `mpi` image has its own libraries (Debian's multiarch dir).
const IMAGE_LIB: &str = "/usr/lib/x86_64-linux-gnu";

/// One line of `mpi-ring`: "RANK r SIZE n SUM n HOST node MPI path LIBC path".
struct Rank {
    rank: u32,
    size: u32,
    sum: u32,
    host: String,
    mpi: String,
    libc: String,
}

fn ranks(r: &Run) -> Vec<Rank> {
    let mut out: Vec<Rank> = lines_with(r, "RANK ")
        .into_iter()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(
                (f.len(), f[1], f[3], f[5], f[7], f[9]),
                (11, "SIZE", "SUM", "HOST", "MPI", "LIBC"),
                "{r}"
            );
            Rank {
                rank: f[0].parse().unwrap(),
                size: f[2].parse().unwrap(),
                sum: f[4].parse().unwrap(),
                host: f[6].to_owned(),
                mpi: f[8].to_owned(),
                libc: f[10].to_owned(),
            }
        })
        .collect();
    out.sort_by_key(|k| k.rank);
    out
}

#[track_caller]
fn assert_four_ranks_on_two_nodes(r: &Run, ranks: &[Rank]) {
    let ids: Vec<u32> = ranks.iter().map(|k| k.rank).collect();
    assert_eq!(ids, [0, 1, 2, 3], "{r}");
    for k in ranks {
        assert_eq!((k.size, k.sum), (4, 4), "size and MPI_Allreduce: {r}");
    }
    let hosts: std::collections::BTreeSet<&str> = ranks.iter().map(|k| k.host.as_str()).collect();
    assert_eq!(hosts.len(), 2, "ranks on both nodes: {r}");
}

#[test]
fn mpich_module_runs_pmi2_ranks_with_the_hosts_mpi_and_the_images_glibc() {
    let Some(tb) = ready() else { return };
    let _serial = serial();
    let Some(image) = mpi_image(&tb, "mpich") else {
        return;
    };
    let run = |module: &str| {
        srun(
            &tb,
            &[
                "--mpi=pmi2",
                "-N2",
                "-n4",
                &format!("--image={image}"),
                module,
                "sh",
                "-c",
                "echo LD=${LD_LIBRARY_PATH%%:*}; exec mpi-ring",
            ],
            &[],
        )
    };
    let r = run("--module=mpich");
    r.assert_ok();
    let with = ranks(&r);
    assert_four_ranks_on_two_nodes(&r, &with);
    for k in &with {
        // /proc/self/maps of each rank: MPICH from the host's directory the
        // module binds, the C library still the image's own.
        assert_eq!(k.mpi, format!("{MPICH_LIB}/libmpich.so.12"), "{r}");
        assert_eq!(k.libc, format!("{IMAGE_LIB}/libc.so.6"), "{r}");
    }
    for ld in lines_with(&r, "LD=") {
        assert_eq!(ld, MPICH_LIB, "the module's directory comes first: {r}");
    }

    // Without the module the same program runs with the image's own MPICH.
    let r = run("--module=none");
    r.assert_ok();
    let without = ranks(&r);
    assert_four_ranks_on_two_nodes(&r, &without);
    for k in &without {
        assert_eq!(k.mpi, format!("{IMAGE_LIB}/libmpich.so.12"), "{r}");
        assert_eq!(k.libc, format!("{IMAGE_LIB}/libc.so.6"), "{r}");
    }
}

#[test]
fn pmix_module_lets_srun_mpi_pmix_ranks_reach_slurms_pmix_server_on_two_nodes() {
    let Some(tb) = ready() else { return };
    let _serial = serial();
    let Some(image) = mpi_image(&tb, "pmix") else {
        return;
    };
    // PMIX_SERVER_TMPDIR holds the server's rendezvous and shared-memory
    // store (PMIX_GDS_MODULE=ds21,...); without it clients fall back to
    // asking the server and log "PMIX ERROR". PMIX_NSDIR is the job's
    // session directory that MPI libraries write to.
    let r = srun(
        &tb,
        &[
            "--mpi=pmix",
            "-N2",
            "-n4",
            &format!("--image={image}"),
            "--module=pmix",
            "sh",
            "-c",
            "grep '^ID=' /etc/os-release; test -d \"$PMIX_SERVER_TMPDIR\" && echo TMPDIR=ok; \
             exec pmix-hello",
        ],
        &[],
    );
    r.assert_ok();
    assert_eq!(r.stdout.matches("ID=shifter-mpi").count(), 4, "{r}");
    assert_eq!(r.stdout.matches("TMPDIR=ok").count(), 4, "{r}");
    assert!(!r.stderr.contains("PMIX ERROR"), "{r}");
    let mut ids = Vec::new();
    let mut nspaces = std::collections::BTreeSet::new();
    let mut hosts = std::collections::BTreeSet::new();
    for l in lines_with(&r, "PMIX RANK ") {
        // "<rank> SIZE <n> NSPACE <ns> HOST <node> NSDIR dir|missing|unset"
        let f: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(
            (f[1], f[2], f[3], f[5], f[7], f[8]),
            ("SIZE", "4", "NSPACE", "HOST", "NSDIR", "dir"),
            "{r}"
        );
        ids.push(f[0].parse::<u32>().unwrap());
        nspaces.insert(f[4].to_owned());
        hosts.insert(f[6].to_owned());
    }
    ids.sort();
    assert_eq!(ids, [0, 1, 2, 3], "{r}");
    assert_eq!(nspaces.len(), 1, "one PMIx namespace for the step: {r}");
    assert_eq!(hosts.len(), 2, "ranks on both nodes: {r}");
}

/// `shifter` run by root for the test user on this host, with the cluster's
/// config, `--module=gpu` and the given device variables.
fn shifter_gpu(tb: &Testbed, image: &str, vars: &[&str]) -> Run {
    let bin = tb.bin_dir().join("shifter");
    let cfg = config_path(tb);
    let user = format!("--user={}", tb.user());
    let image = format!("--image={image}");
    let mut all = vec!["env", "-u", "SLURM_STEP_GPUS", "-u", "CUDA_VISIBLE_DEVICES"];
    all.extend_from_slice(vars);
    all.extend_from_slice(&[
        bin.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
        &user,
        &image,
        "--module=gpu",
        "ls",
        "/dev",
    ]);
    tb.run_root(&all, T)
}

#[test]
fn shifter_command_selects_gpu_nodes_like_the_plugin() {
    let Some(tb) = ready() else { return };
    let _serial = serial();
    let image = image(&tb);
    let _gpu = FakeGpu::install(&tb);
    let dev = |vars: &[&str]| {
        let r = shifter_gpu(&tb, &image, vars);
        r.assert_ok();
        let mut gpus: Vec<String> = r
            .stdout
            .split_whitespace()
            .filter(|n| n.starts_with("nvidia"))
            .map(str::to_owned)
            .collect();
        gpus.sort();
        gpus
    };
    assert_eq!(
        dev(&["CUDA_VISIBLE_DEVICES=1"]),
        ["nvidia1", "nvidiactl"],
        "GPU 1 and the control node only"
    );
    assert_eq!(
        dev(&["SLURM_STEP_GPUS=0", "CUDA_VISIBLE_DEVICES=1"]),
        ["nvidia0", "nvidiactl"],
        "Slurm's binding comes first, as in the module's select_devices_by"
    );
    assert_eq!(
        dev(&[]),
        ["nvidia0", "nvidia1", "nvidiactl"],
        "no selection: every node"
    );
}
