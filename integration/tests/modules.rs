//! End-to-end tests of site modules (issue 8): the example `gpu` module of
//! `integration/cluster/up.d/25-modules.sh` (stand-in NVIDIA device nodes and
//! a stand-in `libnvidia-ml.so.1`, since these machines have no GPU) and
//! conflicting modules refused at submit. Run as the non-root test user with
//! real srun against the local cluster.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use shifter_integration::{Run, Testbed};

const T: Duration = Duration::from_secs(90);
const SUBMIT_FAILS_WITHIN: Duration = Duration::from_secs(15);
const GPU_LIB_IN_CONTAINER: &str = "/opt/shifter/gpu/lib";
const STAND_IN_NODES: &[&str] = &["nvidiactl", "nvidia0", "nvidia1"];
/// What every container's /dev holds without modules (runtime-core's
/// `DEVICES` plus devpts, shm and the standard links).
const PLAIN_DEV: &[&str] = &[
    "fd", "full", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin", "stdout", "tty",
    "urandom", "zero",
];

static CLUSTER: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    CLUSTER.lock().unwrap_or_else(|p| p.into_inner())
}

fn required() -> bool {
    std::env::var("SHIFTER_E2E_REQUIRED").as_deref() == Ok("1")
}

fn config_path(tb: &Testbed) -> PathBuf {
    tb.var_opt("SHIFTER_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| tb.dir.join("etc/shifter.toml"))
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
            eprintln!("\n!!!! SKIPPED modules e2e test: {why}\n");
            None
        }
        None => Some(tb),
    }
}

fn image(tb: &Testbed) -> String {
    let image = format!("docker:{}/busybox:latest", tb.registry());
    let bin = tb.bin_dir().join("shifterimg");
    let cfg = config_path(tb);
    tb.run_as(
        tb.user(),
        &[
            bin.to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap(),
            "pull",
            &image,
        ],
        Duration::from_secs(180),
    )
    .assert_ok();
    image
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
    r.assert_failed();
    for n in needles {
        assert!(r.stderr.contains(n), "expected {n:?} in stderr: {r}");
    }
    assert!(
        !r.stderr.contains("slurmstepd"),
        "the request reached a node instead of failing at submit: {r}"
    );
    assert!(
        r.elapsed < SUBMIT_FAILS_WITHIN,
        "refusal took {:?}: {r}",
        r.elapsed
    );
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

/// An MPI program built on the host with Debian's MPICH (`mpicc`), in a
/// directory the test user owns; None after a loud skip notice.
fn mpi_program(tb: &Testbed) -> Option<PathBuf> {
    let dir = tb
        .dir
        .join("out")
        .join(format!("modules-mpi-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ring.c"), MPI_PROGRAM).unwrap();
    let built = Command::new("mpicc")
        .arg("-o")
        .arg(dir.join("ring"))
        .arg(dir.join("ring.c"))
        .output();
    match built {
        Ok(out) if out.status.success() => {}
        other => {
            let why = format!(
                "mpicc (Debian mpich, libmpich-dev) cannot build the MPI test program: {other:?}"
            );
            if required() {
                panic!("{why}");
            }
            eprintln!("\n!!!! SKIPPED mpich module test: {why}\n");
            return None;
        }
    }
    let st = Command::new("chown")
        .args(["-R", tb.user(), dir.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success());
    Some(dir)
}

const MPI_PROGRAM: &str = r#"#include <mpi.h>
#include <stdio.h>
int main(int argc, char **argv) {
    int rank, size, len, sum = 0, one = 1;
    char name[MPI_MAX_PROCESSOR_NAME];
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Get_processor_name(name, &len);
    MPI_Allreduce(&one, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    printf("RANK %d SIZE %d SUM %d HOST %s\n", rank, size, sum, name);
    MPI_Finalize();
    return 0;
}
"#;

#[test]
fn mpich_module_runs_pmi2_ranks_on_two_nodes_that_see_each_other() {
    let Some(tb) = ready() else { return };
    let _serial = serial();
    let conf = std::fs::read_to_string(config_path(&tb)).unwrap_or_default();
    if !conf.contains("[modules.mpich]") {
        assert!(!required(), "the site config has no [modules.mpich]");
        eprintln!("\n!!!! SKIPPED mpich module test: no [modules.mpich] in the site config\n");
        return;
    }
    let Some(dir) = mpi_program(&tb) else { return };
    let image = image(&tb);
    // The busybox image has no C library: start the program through the
    // module's loader; `sh` and /etc/os-release prove it runs in the image.
    let script = "grep '^ID=' /etc/os-release; echo LD=${LD_LIBRARY_PATH%%:*}; \
        exec /opt/shifter/mpich/lib/ld-linux-x86-64.so.2 /mpi/ring";
    let r = srun(
        &tb,
        &[
            "--mpi=pmi2",
            "-N2",
            "-n4",
            &format!("--image={image}"),
            "--module=mpich",
            &format!("--volume={}:/mpi", dir.display()),
            "sh",
            "-c",
            script,
        ],
        &[],
    );
    r.assert_ok();
    assert_eq!(
        r.stdout.matches("ID=shifter-busybox").count(),
        4,
        "every rank runs in the image: {r}"
    );
    for ld in lines_with(&r, "LD=") {
        assert_eq!(ld, "/opt/shifter/mpich/lib", "{r}");
    }
    let mut ranks: Vec<u32> = Vec::new();
    let mut hosts = std::collections::BTreeSet::new();
    for l in lines_with(&r, "RANK ") {
        let f: Vec<&str> = l.split_whitespace().collect();
        // "<rank> SIZE <n> SUM <n> HOST <node>"
        assert_eq!(&f[1..5], ["SIZE", "4", "SUM", "4"], "{r}");
        ranks.push(f[0].parse().unwrap());
        hosts.insert(f[6].to_owned());
    }
    ranks.sort();
    assert_eq!(ranks, [0, 1, 2, 3], "{r}");
    assert_eq!(hosts.len(), 2, "ranks on both nodes: {r}");

    // Without the module the host's MPI is not there.
    let r = srun(
        &tb,
        &[
            &format!("--image={image}"),
            "--module=none",
            "sh",
            "-c",
            "ls /opt/shifter/mpich/lib/libmpich.so.12",
        ],
        &[],
    );
    r.assert_failed();
    let _ = std::fs::remove_dir_all(&dir);
}
