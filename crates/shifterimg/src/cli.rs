//! Command-line syntax, kept compatible with Shifter's `shifterimg`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "shifterimg",
    version,
    about = "Pull, list and manage container images on the shifter image gateway",
    after_help = "References: docker:[registry[:port]/]repo[:tag|@sha256:...], custom:NAME, id:HEX; \
                  a reference without a type is a docker image (or the site's default type)."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// More output (-v: debug, -vv: trace) on stderr.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Platform name on the gateway; defaults to `system` in the config.
    #[arg(short, long, global = true, value_name = "SYSTEM")]
    pub system: Option<String>,
    /// Site config to read gateways, system and munge socket from.
    #[arg(
        long,
        global = true,
        env = "SHIFTER_CONFIG",
        value_name = "PATH",
        default_value = "/etc/shifter/shifter.toml"
    )]
    pub config: PathBuf,
    /// Gateway URL (repeatable, tried in order); replaces the config's `gateways`.
    #[arg(long = "gateway", global = true, value_name = "URL")]
    pub gateways: Vec<String>,
    /// Seconds to wait for each gateway before trying the next.
    #[arg(long, global = true, value_name = "SECS")]
    pub timeout: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Pull an image (or refresh it) and wait until it is READY.
    #[command(
        after_help = "Owners: the first user to pull a tag owns it; only the owner or an admin \
                      may set or change its ACL (--user/--group). Anyone else's pull refreshes \
                      the image and keeps its ACL; asking for another ACL is refused. \
                      With --private you get a copy of your own instead: your lookups and jobs \
                      (srun --image=REF) use it, everyone else keeps the shared tag; others in \
                      its ACL use it by id (shifterimg lookup REF prints it)."
    )]
    Pull {
        /// The image, e.g. docker:ubuntu:24.04.
        image: String,
        /// Make the image private to these users (names or uids, comma-separated).
        #[arg(short, long, value_name = "LIST")]
        user: Option<String>,
        /// Make the image private to these groups (names or gids, comma-separated).
        #[arg(short, long, value_name = "LIST")]
        group: Option<String>,
        /// Pull a private copy of your own (only you, plus --user/--group), leaving the shared tag as it is.
        #[arg(long)]
        private: bool,
        /// Give up waiting after this many seconds (the pull goes on at the gateway).
        #[arg(long, value_name = "SECS")]
        max_wait: Option<u64>,
    },
    /// List the images you may use on this system.
    Images {
        /// Print the gateway records as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the id a reference resolves to.
    Lookup { image: String },
    /// Store your credentials for a private registry at the gateway.
    Login {
        /// Registry host[:port]; Docker Hub when omitted.
        registry: Option<String>,
        /// Registry user name (prompted for when omitted).
        #[arg(short, long, value_name = "USER")]
        username: Option<String>,
        /// Read the password from standard input instead of prompting (for scripts).
        #[arg(long)]
        password_stdin: bool,
        /// Send the password to a plain-http gateway on another host anyway.
        #[arg(long)]
        allow_http: bool,
    },
    /// Publish a site-built squashfs as custom:NAME (import users only).
    Import { path: PathBuf, name: String },
    /// Remove an image from the gateway (admins only).
    Expire { image: String },
    /// Remove every image unused for longer than the gateway's expiry time (admins only).
    Autoexpire,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("shifterimg").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn shifter_style_pull_with_acl_parses() {
        let cli = parse(&[
            "-v",
            "-s",
            "cori",
            "pull",
            "--user",
            "alice,1002",
            "-g",
            "staff",
            "ubuntu:24.04",
        ]);
        assert_eq!(cli.global.verbose, 1);
        assert_eq!(cli.global.system.as_deref(), Some("cori"));
        match cli.command {
            Command::Pull {
                image,
                user,
                group,
                private,
                max_wait,
            } => {
                assert_eq!(image, "ubuntu:24.04");
                assert_eq!(user.as_deref(), Some("alice,1002"));
                assert_eq!(group.as_deref(), Some("staff"));
                assert!(!private);
                assert_eq!(max_wait, None);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&["pull", "--private", "ubuntu:24.04"]).command,
            Command::Pull { private: true, .. }
        ));
    }

    #[test]
    fn global_options_work_after_the_subcommand() {
        let cli = parse(&[
            "images",
            "--json",
            "--gateway",
            "http://a:1",
            "--gateway",
            "http://b:2",
            "--system",
            "x",
        ]);
        assert_eq!(cli.global.gateways, ["http://a:1", "http://b:2"]);
        assert!(matches!(cli.command, Command::Images { json: true }));
        assert_eq!(cli.global.system.as_deref(), Some("x"));
    }

    #[test]
    fn config_defaults_to_the_site_file() {
        // SHIFTER_CONFIG may be set in a developer's shell; the default only
        // applies without it.
        if std::env::var_os("SHIFTER_CONFIG").is_none() {
            assert_eq!(
                parse(&["autoexpire"]).global.config,
                PathBuf::from("/etc/shifter/shifter.toml")
            );
        }
        assert_eq!(
            parse(&["--config", "/tmp/s.toml", "autoexpire"])
                .global
                .config,
            PathBuf::from("/tmp/s.toml")
        );
    }

    #[test]
    fn missing_arguments_are_usage_errors() {
        for args in [&["pull"][..], &["import", "/x.sqfs"], &["frobnicate"], &[]] {
            let r = Cli::try_parse_from(std::iter::once("shifterimg").chain(args.iter().copied()));
            assert!(r.is_err(), "{args:?} parsed");
        }
        let login = parse(&["login"]);
        assert!(matches!(
            login.command,
            Command::Login {
                registry: None,
                username: None,
                password_stdin: false,
                allow_http: false
            }
        ));
    }
}
