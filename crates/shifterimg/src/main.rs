//! `shifterimg`: the user's command line for the image gateway (Shifter-compatible).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

mod acl;
mod commands;
mod output;
mod settings;

use shifterimg::cli::{self, Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.global.verbose);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shifterimg: error: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let ctx = commands::Ctx {
        settings: settings::Settings::resolve(&cli.global)?,
    };
    tracing::debug!(settings = ?ctx.settings, "resolved settings");
    match &cli.command {
        Command::Pull {
            image,
            user,
            group,
            private,
            max_wait,
        } => ctx.pull(
            image,
            user.as_deref(),
            group.as_deref(),
            *private,
            *max_wait,
        ),
        Command::Images { json } => ctx.images(*json),
        Command::Lookup { image } => ctx.lookup(image),
        Command::Login {
            registry,
            username,
            password_stdin,
            allow_http,
        } => ctx.login(&commands::LoginArgs {
            registry: registry.as_deref(),
            username: username.as_deref(),
            password_stdin: *password_stdin,
            allow_http: *allow_http,
        }),
        Command::Import { path, name } => ctx.import(path, name),
        Command::Expire { image } => ctx.expire(image),
        Command::Autoexpire => ctx.autoexpire(),
    }
}

/// The error and its causes, skipping a cause whose text the message already
/// includes (library errors often embed their source).
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "debug",
        _ => "trace",
    };
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = EnvFilter::try_from_env("SHIFTER_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    // ureq logs request headers (our Munge credential among them) at debug;
    // this filter sits beside the user's, so no directive of theirs
    // (`ureq::unit=trace`) can turn that back on.
    tracing_subscriber::registry()
        .with(tracing_subscriber::filter::filter_fn(|m| {
            gw_client::http_log_allowed(m.target(), m.level())
        }))
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(std::io::stderr().is_terminal())
                .with_writer(std::io::stderr)
                .with_target(false),
        )
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chain_does_not_repeat_embedded_causes() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = anyhow::Error::new(io)
            .context("cannot read /x: no such file")
            .context("cannot use the config");
        assert_eq!(
            error_chain(&e),
            "cannot use the config: cannot read /x: no such file"
        );
    }
}
