//! Who is asking and what they may override. Installed setuid-root, `shifter`
//! runs with the caller's environment, so anything in it that would choose
//! what root reads (config path, target user) is ignored unless the real user
//! is root.

use std::path::{Path, PathBuf};

use nix::sys::resource::Resource;
use runtime_core::DEFAULT_CONFIG_PATH;

/// How we were started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invocation {
    pub ruid: u32,
    pub euid: u32,
}

impl Invocation {
    pub fn current() -> Self {
        Invocation {
            ruid: nix::unistd::getuid().as_raw(),
            euid: nix::unistd::geteuid().as_raw(),
        }
    }

    /// True when a non-root user runs an installed setuid-root binary.
    pub fn is_setuid(&self) -> bool {
        self.ruid != self.euid
    }

    fn trusts_caller(&self) -> bool {
        self.ruid == 0 && self.euid == 0
    }

    /// The config to load: the override only for a real root caller.
    pub fn config_path(&self, requested: Option<&Path>) -> (PathBuf, bool) {
        match requested {
            Some(p) if self.trusts_caller() => (p.to_owned(), false),
            Some(_) => (PathBuf::from(DEFAULT_CONFIG_PATH), true),
            None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        }
    }

    /// The target uid: `--user` only for a real root caller, else the caller.
    pub fn target_uid(&self, requested: Option<&str>) -> Result<u32, String> {
        match requested {
            None => Ok(self.ruid),
            Some(_) if !self.trusts_caller() => {
                Err("--user is only for root; run shifter as yourself".into())
            }
            Some(u) => match u.parse::<u32>() {
                Ok(n) => Ok(n),
                Err(_) => nix::unistd::User::from_name(u)
                    .ok()
                    .flatten()
                    .map(|x| x.uid.as_raw())
                    .ok_or_else(|| format!("no such user {u:?}")),
            },
        }
    }
}

/// Variables that would steer what the privileged process trusts or prints.
const STEERING_VARS: &[&str] = &["SSL_CERT_FILE", "SSL_CERT_DIR", "SHIFTER_LOG", "RUST_LOG"];

/// The first thing a setuid run does: no core dumps or ptrace of the
/// privileged process, all three uids root so the caller can no longer
/// signal it (stopping it mid-setup would widen every window), the tty's stop
/// signals blocked, and the variables that would steer it dropped. The
/// caller's own uid is kept in [`Invocation`], taken before this.
pub fn harden() {
    let _ = nix::sys::prctl::set_dumpable(false);
    let root = nix::unistd::Uid::from_raw(0);
    if nix::unistd::setresuid(root, root, root).is_err() {
        eprintln!("shifter: cannot take full root identity (setresuid); refusing to continue");
        std::process::exit(1);
    }
    ignore_stop_signals(true);
    lift_limits();
    for var in STEERING_VARS {
        std::env::remove_var(var);
    }
}

/// The search path of the privileged process and its helpers (mkfs.xfs).
const TRUSTED_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// Once the command line is parsed (its `SHIFTER_*` fallbacks read): nothing
/// of the caller's environment stays in the privileged process. With all
/// uids root, libraries no longer see a setuid run (`secure_getenv` gives
/// the value), so `LDAPCONF`, `NSS_*`, `LOCALDOMAIN`, `TZDIR`, `PATH` for our
/// helpers... would all be trusted. The container's environment comes from
/// the copy taken before [`harden`].
pub fn clear_environment() {
    let names: Vec<std::ffi::OsString> = std::env::vars_os().map(|(k, _)| k).collect();
    for name in names {
        std::env::remove_var(name);
    }
    std::env::set_var("PATH", TRUSTED_PATH);
}

/// Blocks (or unblocks) the tty's stop signals: while blocked they stay
/// pending and cannot stop the privileged process.
fn ignore_stop_signals(ignore: bool) {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal};
    let mut set = SigSet::empty();
    for sig in [Signal::SIGTSTP, Signal::SIGTTIN, Signal::SIGTTOU] {
        set.add(sig);
    }
    let how = if ignore {
        SigmaskHow::SIG_BLOCK
    } else {
        SigmaskHow::SIG_UNBLOCK
    };
    let _ = nix::sys::signal::sigprocmask(how, Some(&set), None);
}

/// Limits the caller could set to make root's own work fail half-way (a
/// write cut short by `RLIMIT_FSIZE`, no descriptor left for a mount, a
/// `SIGXCPU` mid-setup), saved for the command.
const LIFTED_LIMITS: [Resource; 5] = [
    Resource::RLIMIT_FSIZE,
    Resource::RLIMIT_NOFILE,
    Resource::RLIMIT_AS,
    Resource::RLIMIT_DATA,
    Resource::RLIMIT_CPU,
];
/// Enough descriptors for setup, below the kernel's `nr_open` default.
const SETUP_NOFILE: u64 = 65536;

static CALLER_LIMITS: std::sync::OnceLock<Vec<(Resource, u64, u64)>> = std::sync::OnceLock::new();

/// Soft limits up to what setup needs: to infinity (or [`SETUP_NOFILE`]
/// descriptors) where root may raise the hard limit, else to the hard limit
/// (a node whose root lacks `CAP_SYS_RESOURCE`). A hard limit the caller
/// lowered can then still bind setup, but only as a clean error: SIGXFSZ is
/// ignored until exec, so a cut write fails with EFBIG instead of killing us.
fn lift_limits() {
    use nix::sys::resource::{getrlimit, setrlimit, RLIM_INFINITY};
    let mut saved = Vec::new();
    for r in LIFTED_LIMITS {
        let Ok((soft, hard)) = getrlimit(r) else {
            continue;
        };
        let wanted = if r == Resource::RLIMIT_NOFILE {
            if soft >= SETUP_NOFILE {
                continue;
            }
            // An inherited hard limit above the kernel's nr_open cannot be
            // set again (EPERM): then the fixed figure for both.
            setrlimit(r, SETUP_NOFILE, hard.max(SETUP_NOFILE))
                .or_else(|_| setrlimit(r, SETUP_NOFILE, SETUP_NOFILE))
        } else {
            setrlimit(r, RLIM_INFINITY, RLIM_INFINITY)
        };
        if wanted.is_err() && setrlimit(r, hard, hard).is_err() {
            continue;
        }
        saved.push((r, soft, hard));
    }
    let _ = CALLER_LIMITS.set(saved);
    runtime_core::sys::real::set_signal_ignored(nix::sys::signal::Signal::SIGXFSZ, true);
}

/// Before exec: the command gets the stop signals back (a blocked signal
/// would stay blocked across exec) and runs under the caller's own limits.
pub fn restore_caller_state() {
    ignore_stop_signals(false);
    // An ignored signal stays ignored across exec.
    runtime_core::sys::real::set_signal_ignored(nix::sys::signal::Signal::SIGXFSZ, false);
    for (r, soft, hard) in CALLER_LIMITS.get().into_iter().flatten() {
        let _ = nix::sys::resource::setrlimit(*r, *soft, *hard);
    }
}

/// Runs `f` with the effective ids of `user` (real and saved stay root, so
/// the user still cannot signal us), then becomes root again.
pub fn as_user<T>(user: &runtime_core::UserInfo, f: impl FnOnce() -> T) -> anyhow::Result<T> {
    use nix::unistd::{setegid, seteuid, Gid, Uid};
    let me = nix::unistd::geteuid();
    if !me.is_root() {
        return Ok(f());
    }
    let groups: Vec<Gid> = user
        .creds()
        .groups
        .iter()
        .map(|g| Gid::from_raw(*g))
        .collect();
    nix::unistd::setgroups(&groups)?;
    setegid(Gid::from_raw(user.gid))?;
    seteuid(Uid::from_raw(user.uid))?;
    let out = f();
    seteuid(Uid::from_raw(0))?;
    setegid(Gid::from_raw(0))?;
    nix::unistd::setgroups(&[Gid::from_raw(0)])?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setuid_caller_cannot_choose_the_config() {
        let inv = Invocation {
            ruid: 1001,
            euid: 0,
        };
        assert!(inv.is_setuid());
        let (p, ignored) = inv.config_path(Some(Path::new("/tmp/evil.toml")));
        assert_eq!(p, Path::new(DEFAULT_CONFIG_PATH));
        assert!(ignored);
    }

    #[test]
    fn root_caller_may_choose_the_config_and_user() {
        let inv = Invocation { ruid: 0, euid: 0 };
        assert!(!inv.is_setuid());
        assert_eq!(
            inv.config_path(Some(Path::new("/t/s.toml"))).0,
            Path::new("/t/s.toml")
        );
        assert_eq!(inv.target_uid(Some("1234")), Ok(1234));
        assert_eq!(inv.target_uid(Some("root")), Ok(0));
        assert_eq!(inv.target_uid(None), Ok(0));
    }

    #[test]
    fn setuid_caller_cannot_choose_the_user() {
        let inv = Invocation {
            ruid: 1001,
            euid: 0,
        };
        assert!(inv.target_uid(Some("0")).is_err());
        assert_eq!(inv.target_uid(None), Ok(1001));
    }

    /// In a child, so the test process's own environment stays as it was.
    #[test]
    fn nothing_of_the_callers_environment_survives_but_a_fixed_path() {
        let code = runtime_core::sys::real::run_in_child(|| {
            std::env::set_var("LDAPCONF", "/home/u/evil.conf");
            std::env::set_var("PATH", "/home/u/bin");
            clear_environment();
            let left: Vec<(String, String)> = std::env::vars().collect();
            i32::from(left != vec![("PATH".to_owned(), TRUSTED_PATH.to_owned())])
        })
        .unwrap();
        assert_eq!(code, 0, "environment not cleared");
    }
}
