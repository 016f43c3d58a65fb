//! Man pages and shell completions of the shifter-rs commands, generated from
//! the same clap definitions the binaries parse with, plus the hand-written
//! `shifter.toml(5)`. `make install` and the Debian package run the
//! `shifter-docs` binary into a staging directory.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use clap::{Command, CommandFactory};
use clap_complete::Shell;

/// `shifter.toml(5)`: the site config has no clap definition to generate from;
/// a test checks that it names every key `runtime-core` accepts.
pub const SHIFTER_TOML_5: &str = include_str!("../man/shifter.toml.5");

/// A command and the manual section its page goes to.
#[derive(Debug)]
pub struct Page {
    pub command: Command,
    pub section: &'static str,
}

/// Every installed command: user commands in section 1, the daemon in 8.
pub fn pages() -> Vec<Page> {
    vec![
        Page {
            command: shifter::cli::Cli::command(),
            section: "1",
        },
        Page {
            command: shifterimg::cli::Cli::command(),
            section: "1",
        },
        Page {
            command: shifter_config::cli::Cli::command(),
            section: "1",
        },
        Page {
            command: shifter_imagegw::cli::Cli::command(),
            section: "8",
        },
    ]
}

/// Writes `man/manN/*.N` (one page per command and per subcommand, as
/// `shifterimg-pull.1`), `completions/bash/NAME` and `completions/zsh/_NAME`
/// under `out`, and returns the files written.
pub fn generate(out: &Path) -> io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for page in pages() {
        let dir = out.join("man").join(format!("man{}", page.section));
        fs::create_dir_all(&dir)?;
        let mut cmd = page.command.clone().disable_help_subcommand(true);
        cmd.build();
        write_pages(&cmd, page.section, &dir, &mut written)?;
        completions(page.command, out, &mut written)?;
    }
    let man5 = out.join("man").join("man5");
    fs::create_dir_all(&man5)?;
    let path = man5.join("shifter.toml.5");
    fs::write(&path, SHIFTER_TOML_5)?;
    written.push(path);
    Ok(written)
}

fn write_pages(
    cmd: &Command,
    section: &str,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, section, dir, written)?;
    }
    let man = clap_mangen::Man::new(cmd.clone())
        .section(section)
        .manual("shifter-rs")
        .source(format!("shifter-rs {}", env!("CARGO_PKG_VERSION")));
    written.push(man.generate_to(dir)?);
    Ok(())
}

fn completions(mut cmd: Command, out: &Path, written: &mut Vec<PathBuf>) -> io::Result<()> {
    let name = cmd.get_name().to_owned();
    for (shell, file) in [
        (Shell::Bash, name.clone()),
        (Shell::Zsh, format!("_{name}")),
    ] {
        let dir = out.join("completions").join(shell.to_string());
        fs::create_dir_all(&dir)?;
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cmd, &name, &mut buf);
        let path = dir.join(file);
        fs::write(&path, buf)?;
        written.push(path);
    }
    Ok(())
}
