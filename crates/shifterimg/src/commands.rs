//! One function per subcommand. Each returns an error whose message says what
//! to do; `main` prints it.

use std::io::{self, BufRead, IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use gw_client::{Client, ClientError, MungeAuth, PollOptions};
use shifter_api::{ImageList, ImageRef, ImageStatus, PullRequest};

use crate::acl;
use crate::output::{images_table, Progress};
use crate::settings::Settings;

/// Imports copy a whole image file at the gateway before it answers.
const IMPORT_TIMEOUT: Duration = Duration::from_secs(600);

pub struct LoginArgs<'a> {
    pub registry: Option<&'a str>,
    pub username: Option<&'a str>,
    pub password_stdin: bool,
    pub allow_http: bool,
}

pub struct Ctx {
    pub settings: Settings,
}

impl Ctx {
    fn client(&self, timeout: Duration) -> Result<Client> {
        let auth = MungeAuth {
            socket: Some(self.settings.munge_socket.clone()),
            gateway_uid: self.settings.gateway_uid,
        };
        Client::with_authenticator(
            self.settings.gateways.clone(),
            self.settings.system.clone(),
            timeout,
            Box::new(auth),
        )
        .map_err(Into::into)
    }

    fn parse_ref(&self, s: &str) -> Result<ImageRef> {
        ImageRef::parse_with_default(s, self.settings.default_type).map_err(Into::into)
    }

    pub fn pull(
        &self,
        image: &str,
        user: Option<&str>,
        group: Option<&str>,
        private: bool,
        max_wait: Option<u64>,
    ) -> Result<()> {
        let image = self.parse_ref(image)?;
        if matches!(image, ImageRef::Id(_)) {
            bail!("{image} is already an image id: there is nothing to pull");
        }
        let req = PullRequest {
            allowed_uids: user.map(acl::user_ids).transpose()?,
            allowed_gids: group.map(acl::group_ids).transpose()?,
            private,
        };
        let client = self.client(self.settings.timeout)?;
        let stdout = io::stdout();
        let tty = stdout.is_terminal();
        let width = terminal_size::terminal_size_of(&stdout).map(|(w, _)| usize::from(w.0));
        let mut progress = Progress::new(stdout.lock(), tty, image.to_string()).with_width(width);
        let poll = PollOptions {
            interval: Duration::from_millis(500),
            max_wait: max_wait.map(Duration::from_secs),
        };
        let result = client.pull_and_wait(&image, &req, &poll, |rec| {
            // A closed stdout must not abort the pull.
            let _ = progress.update(rec);
        });
        let _ = progress.finish();
        let rec = result.map_err(|e| with_hint(e, &image))?;
        match rec.status {
            ImageStatus::Ready => Ok(()),
            ImageStatus::Failure => {
                let msg = if rec.status_message.is_empty() {
                    "the gateway gave no reason; see its log".to_owned()
                } else {
                    rec.status_message
                };
                // The gateway's message usually names the image already.
                if msg.contains(&image.tag()) {
                    bail!("{msg}")
                }
                bail!("pull of {image} failed: {msg}")
            }
            other => bail!("pull of {image} ended {other}: pull it again"),
        }
    }

    pub fn images(&self, json: bool) -> Result<()> {
        let list = self
            .client(self.settings.timeout)?
            .list()
            .map_err(|e| anyhow!(e))?;
        let mut out = io::stdout().lock();
        if json {
            serde_json::to_writer_pretty(&mut out, &ImageList { list })?;
            writeln!(out)?;
        } else {
            out.write_all(images_table(&list).as_bytes())?;
        }
        Ok(())
    }

    pub fn lookup(&self, image: &str) -> Result<()> {
        let image = self.parse_ref(image)?;
        if let ImageRef::Id(id) = &image {
            println!("{id}");
            return Ok(());
        }
        let rec = self
            .client(self.settings.timeout)?
            .lookup(&image)
            .map_err(|e| match e {
                ClientError::Forbidden { .. } => anyhow!(
                    "{e}\nhint: the image is private; its owner can add you with `shifterimg pull --user/--group`, or pull a copy of your own with `shifterimg pull --private`"
                ),
                e => with_hint(e, &image),
            })?;
        if rec.id.is_empty() {
            bail!(
                "the gateway knows {image} but has no id for it yet: wait for its pull to finish"
            );
        }
        println!("{}", rec.id);
        Ok(())
    }

    pub fn login(&self, args: &LoginArgs<'_>) -> Result<()> {
        let registry = args.registry.unwrap_or(shifter_api::reference::DOCKER_HUB);
        if !args.allow_http {
            if let Some(gw) = self
                .settings
                .gateways
                .iter()
                .find(|g| !is_private_transport(g))
            {
                bail!(
                    "gateway {gw} is plain http on another host: your registry password would cross \
                     the network unencrypted; use an https:// gateway, or pass --allow-http if the network is trusted"
                );
            }
        }
        let username = match args.username {
            Some(u) => u.to_owned(),
            None if args.password_stdin => {
                bail!("--password-stdin needs --username: standard input carries the password")
            }
            None => prompt(&format!("Username for {registry}: "))?,
        };
        if username.is_empty() {
            bail!("no username given");
        }
        let password = if args.password_stdin {
            let mut line = String::new();
            io::stdin().lock().read_line(&mut line)?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        } else {
            rpassword::prompt_password("Password: ")
                .context("cannot read the password (no terminal? use --password-stdin)")?
        };
        if password.is_empty() {
            bail!("no password given");
        }
        let client = self.client(self.settings.timeout)?;
        match client.login(registry, &username, &password) {
            Ok(_) => {
                eprintln!("credentials for {registry} stored at the gateway");
                Ok(())
            }
            Err(ClientError::NotFound { gateway, .. }) => bail!(
                "gateway {gateway} does not support storing registry credentials (it has no /api/login endpoint); \
                 ask your site to configure the registry's credentials in imagegw.toml"
            ),
            Err(e) => Err(e.into()),
        }
    }

    pub fn import(&self, path: &Path, name: &str) -> Result<()> {
        // The gateway opens the file itself (as the caller), so it needs a path
        // that means the same thing from its working directory.
        let abs = std::fs::canonicalize(path).with_context(|| {
            format!(
                "cannot import {}: the file must exist and be readable",
                path.display()
            )
        })?;
        let rec = self
            .client(self.settings.timeout.max(IMPORT_TIMEOUT))?
            .import(&abs, name)?;
        println!("{}", rec.id);
        eprintln!("imported {} as custom:{name}", abs.display());
        Ok(())
    }

    pub fn expire(&self, image: &str) -> Result<()> {
        let image = self.parse_ref(image)?;
        self.client(self.settings.timeout)?
            .expire(&image)
            .map_err(|e| with_hint(e, &image))?;
        eprintln!("expired {image}");
        Ok(())
    }

    pub fn autoexpire(&self) -> Result<()> {
        let reply = self.client(self.settings.timeout)?.autoexpire()?;
        println!("{}", serde_json::to_string_pretty(&reply)?);
        Ok(())
    }
}

/// Adds what to do next to the errors users hit most, unless the gateway's
/// message already says it.
fn with_hint(e: ClientError, image: &ImageRef) -> anyhow::Error {
    let said = e.body().map(|b| b.message.clone()).unwrap_or_default();
    match &e {
        ClientError::NotFound { .. } if !said.contains("shifterimg pull") => anyhow!(
            "{e}\nhint: pull it first with `shifterimg pull {image}`, or check the spelling"
        ),
        _ => anyhow!(e),
    }
}

/// True for https, and for http to this host (the password never leaves it).
fn is_private_transport(url: &str) -> bool {
    if url.starts_with("https://") {
        return true;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        authority.split(':').next().unwrap_or_default()
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn prompt(text: &str) -> Result<String> {
    let mut err = io::stderr();
    write!(err, "{text}")?;
    err.flush()?;
    let mut line = String::new();
    io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_go_only_over_https_or_to_this_host() {
        for ok in [
            "https://gw.example.org",
            "http://127.0.0.1:7777",
            "http://127.1.2.3",
            "http://localhost:7777/x",
            "http://[::1]:7777",
        ] {
            assert!(is_private_transport(ok), "{ok}");
        }
        for bad in [
            "http://gw.example.org:7777",
            "http://10.0.0.5",
            "http://[fe80::1]:1",
            "ftp://x",
        ] {
            assert!(!is_private_transport(bad), "{bad}");
        }
    }
}
