//! A test that cannot run here (no root, a missing tool or service) calls
//! [`skip`] and returns. The skip is printed (libtest hides it for a passing
//! test) and appended to the file named by `SHIFTER_SKIP_LOG`, which
//! `integration/run-tests.sh` sets, prints at the end and fails on when it
//! is not empty: nothing skips silently in `make test`.

use std::io::Write;

/// The environment variable naming the file skips are appended to.
pub const LOG_VAR: &str = "SHIFTER_SKIP_LOG";

/// Records that `test` did not run because of `why` (say what to install or
/// how to run it, e.g. "needs root", "apt-get install postgresql").
pub fn skip(test: &str, why: &str) {
    eprintln!("\n!!!! SKIPPED {test}: {why}\n");
    let Some(path) = std::env::var_os(LOG_VAR) else {
        return;
    };
    let line = format!("{test}: {}\n", why.replace('\n', " "));
    // One write of one line to an O_APPEND file: lines of tests running in
    // parallel (threads or processes) do not interleave.
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        // The runner would miss this skip: fail the test instead.
        panic!("{test} skipped ({why}) and could not record it in {path:?}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skip_is_appended_to_the_log_named_by_the_environment() {
        let dir = std::env::temp_dir().join(format!("test-skip-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("skips");
        // Only this test in this crate touches the variable.
        std::env::set_var(LOG_VAR, &log);
        skip("first", "needs root");
        skip("second", "no\nnewline");
        std::env::remove_var(LOG_VAR);
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(text, "first: needs root\nsecond: no newline\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
