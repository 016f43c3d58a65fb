//! Command-line options of `shifter`.

use std::path::PathBuf;

use clap::Parser;

/// Run a command inside a shifter image.
///
/// Without CMD the image's entrypoint and cmd run when --entrypoint is given,
/// else /bin/sh. The exit status is the command's; 127 when it is not found.
#[derive(Debug, Parser)]
#[command(name = "shifter", version, about)]
pub struct Cli {
    /// Image: `id:<hex>`, `docker:repo[:tag]`, `custom:<name>` or `repo[:tag]`.
    #[arg(long, env = "SHIFTER_IMAGE", value_name = "REF")]
    pub image: String,

    /// Bind `/host/path:/container/path[:ro]`; repeat or separate with `;`.
    #[arg(long = "volume", value_name = "SPEC", env = "SHIFTER_VOLUME")]
    pub volumes: Vec<String>,

    /// Comma-separated modules to enable, or `none`.
    #[arg(long, value_name = "LIST", env = "SHIFTER_MODULE")]
    pub module: Option<String>,

    /// Set a variable in the container (after the image's ENV).
    #[arg(long = "env", short = 'e', value_name = "K=V")]
    pub env: Vec<String>,

    /// Read `K=V` lines from a file (blank lines and `#` comments ignored).
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_file: Vec<PathBuf>,

    /// Start from an empty environment instead of the caller's.
    #[arg(long)]
    pub clearenv: bool,

    /// Run the image's entrypoint, or CMD as the entrypoint when given a value.
    #[arg(long, num_args = 0..=1, require_equals = true, value_name = "CMD")]
    pub entrypoint: Option<Option<String>>,

    /// Working directory; without a value, the image's WORKDIR.
    #[arg(long, num_args = 0..=1, require_equals = true, value_name = "DIR")]
    pub workdir: Option<Option<String>>,

    /// Site config (only honoured when the real user is root).
    #[arg(
        long,
        value_name = "FILE",
        env = "SHIFTER_CONFIG",
        hide_env_values = true
    )]
    pub config: Option<PathBuf>,

    /// Target user (only when the real user is root).
    #[arg(long, value_name = "NAME|UID")]
    pub user: Option<String>,

    /// The command and its arguments.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub command: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn option_definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn optional_values_and_trailing_command_parse_like_the_manual_says() {
        let c = Cli::try_parse_from([
            "shifter",
            "--image=id:x",
            "--volume=/a:/b",
            "--volume",
            "/c:/d;/e:/f",
            "--entrypoint",
            "--workdir=/w",
            "--",
            "ls",
            "-l",
        ])
        .unwrap();
        assert_eq!(c.volumes, ["/a:/b", "/c:/d;/e:/f"]);
        assert_eq!(c.entrypoint, Some(None));
        assert_eq!(c.workdir, Some(Some("/w".into())));
        assert_eq!(c.command, ["ls", "-l"]);
        let c = Cli::try_parse_from([
            "shifter",
            "--image=x",
            "--entrypoint=/bin/echo",
            "echo",
            "--not-an-option",
        ])
        .unwrap();
        assert_eq!(c.entrypoint, Some(Some("/bin/echo".into())));
        assert_eq!(c.command, ["echo", "--not-an-option"]);
    }
}
