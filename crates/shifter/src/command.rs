//! What to execute: Docker's entrypoint/cmd rules, and a PATH search inside
//! the container that tells "not found" (127) from "not executable" (126).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::ffi::CString;

use nix::errno::Errno;

/// The argv to run, from the user's CMD, `--entrypoint[=X]` and the image.
pub fn argv(
    command: &[String],
    entrypoint: &Option<Option<String>>,
    image_ep: &[String],
    image_cmd: &[String],
) -> Vec<String> {
    let ep: Option<Vec<String>> = match entrypoint {
        None => None,
        Some(None) => Some(image_ep.to_vec()),
        Some(Some(s)) => Some(s.split_whitespace().map(str::to_owned).collect()),
    };
    let mut out = match (ep, command.is_empty()) {
        (ep, false) => ep
            .unwrap_or_default()
            .into_iter()
            .chain(command.iter().cloned())
            .collect(),
        // Docker drops the image's CMD when the entrypoint is overridden.
        (Some(ep), true) if matches!(entrypoint, Some(Some(_))) => ep,
        (Some(ep), true) => ep.into_iter().chain(image_cmd.iter().cloned()).collect(),
        (None, true) => Vec::new(),
    };
    if out.is_empty() {
        out.push("/bin/sh".into());
    }
    out
}

/// Why an exec failed, mapped to the shell's exit codes.
#[derive(Debug)]
pub struct ExecFailure {
    pub code: i32,
    pub message: String,
}

/// Replaces the process with `argv`, searching `PATH` from `env`. Returns
/// only on failure.
pub fn exec(argv: &[String], env: &BTreeMap<String, String>) -> ExecFailure {
    let fail = |code, message| ExecFailure { code, message };
    let cargs: Result<Vec<CString>, _> = argv.iter().map(|a| CString::new(a.as_bytes())).collect();
    let cenv: Result<Vec<CString>, _> = env
        .iter()
        .map(|(k, v)| CString::new(format!("{k}={v}")))
        .collect();
    let (Ok(cargs), Ok(cenv)) = (cargs, cenv) else {
        return fail(126, "an argument or variable contains a NUL byte".into());
    };
    let prog = &argv[0];
    let candidates: Vec<String> = if prog.contains('/') {
        vec![prog.clone()]
    } else {
        let path = env
            .get("PATH")
            .map(String::as_str)
            .unwrap_or("/usr/local/bin:/usr/bin:/bin");
        path.split(':')
            .map(|d| if d.is_empty() { "." } else { d })
            .map(|d| format!("{}/{prog}", d.trim_end_matches('/')))
            .collect()
    };
    let mut saw_eacces = false;
    for c in candidates {
        let Ok(cpath) = CString::new(c) else { continue };
        let r: Result<Infallible, Errno> = nix::unistd::execve(&cpath, &cargs, &cenv);
        match r {
            Err(Errno::EACCES) => saw_eacces = true,
            Err(Errno::ENOENT | Errno::ENOTDIR) => {}
            Err(e) => return fail(126, format!("{prog}: {e}")),
            Ok(never) => match never {},
        }
    }
    if saw_eacces {
        fail(126, format!("{prog}: permission denied"))
    } else {
        fail(127, format!("{prog}: command not found in the image"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn no_command_and_no_entrypoint_runs_a_shell() {
        assert_eq!(argv(&[], &None, &s(&["/ep"]), &s(&["c"])), s(&["/bin/sh"]));
    }

    #[test]
    fn user_command_runs_as_given() {
        assert_eq!(
            argv(&s(&["ls", "-l"]), &None, &s(&["/ep"]), &s(&["c"])),
            s(&["ls", "-l"])
        );
    }

    #[test]
    fn bare_entrypoint_runs_image_entrypoint_and_cmd() {
        assert_eq!(
            argv(&[], &Some(None), &s(&["/ep", "-x"]), &s(&["c1", "c2"])),
            s(&["/ep", "-x", "c1", "c2"])
        );
        assert_eq!(
            argv(&s(&["arg"]), &Some(None), &s(&["/ep"]), &s(&["c"])),
            s(&["/ep", "arg"])
        );
    }

    #[test]
    fn entrypoint_override_drops_the_image_cmd() {
        assert_eq!(
            argv(
                &[],
                &Some(Some("/bin/echo hi".into())),
                &s(&["/ep"]),
                &s(&["c"])
            ),
            s(&["/bin/echo", "hi"])
        );
    }

    #[test]
    fn image_without_entrypoint_falls_back_to_its_cmd() {
        assert_eq!(
            argv(&[], &Some(None), &[], &s(&["/bin/date"])),
            s(&["/bin/date"])
        );
        assert_eq!(argv(&[], &Some(None), &[], &[]), s(&["/bin/sh"]));
    }

    #[test]
    fn command_missing_from_path_exits_127() {
        let env = BTreeMap::from([(
            "PATH".to_string(),
            "/nonexistent-a:/nonexistent-b".to_string(),
        )]);
        let f = exec(&s(&["no-such-command-xyz"]), &env);
        assert_eq!(f.code, 127);
        assert!(
            f.message.contains("no-such-command-xyz: command not found"),
            "{}",
            f.message
        );
    }

    #[test]
    fn non_executable_file_exits_126() {
        let dir = std::env::temp_dir().join(format!("shifter-cmd-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("not-exec");
        std::fs::write(&f, "#!/bin/sh\n").unwrap();
        let out = exec(&[f.display().to_string()], &BTreeMap::new());
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(out.code, 126, "{}", out.message);
    }
}
