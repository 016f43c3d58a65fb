//! Figures for `make reliability` (integration/reliability.sh): each hostile,
//! faults and load test ends by stating what it tried, how much of it held (was
//! refused or neutralised, survived, was served) and how much was lost (half
//! published, leaked, failed under load), which must be zero. The lines go to
//! stderr and, when `SHIFTER_RELIABILITY_LOG` names a file, are appended there for
//! the script to gather into a table.

use std::io::Write;

/// States one figure; `check` says in a few words what was done.
pub fn figure(tier: &str, check: &str, tried: u64, held: u64, lost: u64) {
    let line = format!("RELIABILITY\t{tier}\t{check}\t{tried}\t{held}\t{lost}");
    eprintln!("{line}");
    if let Some(path) = std::env::var_os("SHIFTER_RELIABILITY_LOG") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("SHIFTER_RELIABILITY_LOG {path:?}: {e}"));
        writeln!(f, "{line}").unwrap();
    }
}
