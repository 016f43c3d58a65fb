//! `shifter-docs OUT_DIR`: writes the man pages and bash/zsh completions of
//! the shifter-rs commands under OUT_DIR (see the library for the layout).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;

/// Generate man pages and shell completions for the shifter-rs commands.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Directory to write `man/` and `completions/` into (created if missing).
    out_dir: PathBuf,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let written = shifter_docs::generate(&cli.out_dir)
        .with_context(|| format!("writing into {}", cli.out_dir.display()))?;
    for path in written {
        println!("{}", path.display());
    }
    Ok(())
}
