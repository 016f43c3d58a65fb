//! `imagemanager.json` (NERSC Shifter's gateway config) to `imagegw.toml`.
//!
//! Same contract as the udiRoot.conf import: each key is mapped, ignored with
//! a reason, or refused with what to do. JSON has no line numbers in serde, so
//! lines are found by locating the key's text in the file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::report::{header, ImportError, Imported, Notes};

/// Options the admin gives on the command line.
#[derive(Debug, Clone, Default)]
pub struct GatewayOptions {
    /// The store to use instead of Shifter's MongoDB (`sqlite:///…` or
    /// `postgres://…`); with it, `MongoDBURI` is ignored instead of refused.
    pub store: Option<String>,
}

#[derive(Debug, Default, Serialize)]
struct GwOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    default_registry: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    workers: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expire_after_days: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    store: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    work_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_dir: Option<PathBuf>,
    systems: BTreeMap<String, SystemOut>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    registries: BTreeMap<String, RegistryOut>,
}

#[derive(Debug, Default, Serialize)]
struct SystemOut {
    image_dir: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    munge_socket: Option<PathBuf>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    admins: Vec<UserOut>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    import_users: Vec<UserOut>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
enum UserOut {
    Uid(u64),
    Name(String),
}

#[derive(Debug, Default, Serialize)]
struct RegistryOut {
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    plain_http: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    ca_file: Option<PathBuf>,
}

/// Finds the line of a key path in the JSON text, so messages can point at it.
struct Locator<'a> {
    text: &'a str,
}

impl Locator<'_> {
    fn line(&self, path: &[&str]) -> usize {
        let mut from = 0;
        for key in path {
            match self.find_key(from, key) {
                Some(end) => from = end,
                None => return 0,
            }
        }
        if from == 0 {
            return 0;
        }
        self.text[..from].matches('\n').count() + 1
    }

    /// End of the first `"key"` at or after `from` that is an object key
    /// (followed by `:`), not the same word as a string value.
    fn find_key(&self, mut from: usize, key: &str) -> Option<usize> {
        let needle = format!("\"{key}\"");
        loop {
            let end = from + self.text[from..].find(&needle)? + needle.len();
            if self.text[end..].trim_start().starts_with(':') {
                return Some(end);
            }
            from = end;
        }
    }
}

const DOCKER_HUB_ALIASES: [&str; 4] = [
    "index.docker.io",
    "registry-1.docker.io",
    "docker.io",
    "registry.hub.docker.com",
];

/// Converts imagemanager.json text; `source` only names the file in messages.
pub fn import(text: &str, source: &str, opts: &GatewayOptions) -> Result<Imported, ImportError> {
    let root: Value = serde_json::from_str(text).map_err(|cause| ImportError::Json {
        file: source.to_owned(),
        cause,
    })?;
    let loc = Locator { text };
    let mut notes = Notes::default();
    let mut out = GwOut {
        store: opts.store.clone(),
        ..GwOut::default()
    };
    let Some(top) = root.as_object() else {
        notes.refuse(
            "(top level)",
            1,
            "not a JSON object",
            "give Shifter's imagemanager.json",
        );
        return refused(source, notes);
    };
    let mut import_users = Vec::new();
    for (key, value) in top {
        let line = loc.line(&[key]);
        match key.as_str() {
            "DefaultImageLocation" => match value.as_str() {
                Some(r) if DOCKER_HUB_ALIASES.contains(&r) => {
                    out.default_registry = Some(shifter_api::reference::DOCKER_HUB.into())
                }
                Some(r) if !r.is_empty() => out.default_registry = Some(r.to_owned()),
                _ => notes.refuse(key, line, "not a registry host name", "give host[:port]"),
            },
            "WorkerThreads" => match number(value) {
                Some(n) if n > 0 => out.workers = Some(n as usize),
                _ => notes.refuse(key, line, "not a positive number", "give the number of concurrent pulls"),
            },
            "ImageExpirationTimeout" => match value.as_str().and_then(expiry_days) {
                Some((days, exact)) => {
                    out.expire_after_days = Some(days);
                    if !exact {
                        notes.ignore(
                            key,
                            line,
                            format!("expire_after_days counts whole days: rounded up to {days}"),
                        );
                    }
                }
                None => notes.refuse(
                    key,
                    line,
                    format!("{value} is not days:hours:minutes:seconds"),
                    "write it as \"90:00:00:00\"",
                ),
            },
            "MongoDBURI" => {
                if opts.store.is_some() {
                    notes.ignore(
                        key,
                        line,
                        "the gateway keeps its records in the store given with --store; MongoDB records are not migrated",
                    );
                } else {
                    notes.refuse(
                        key,
                        line,
                        "shifter-rs keeps image records in SQLite (default) or PostgreSQL, not MongoDB",
                        "rerun with --store sqlite:///var/lib/shifter/imagegw.sqlite (or --store postgres://user@host/db for several gateway replicas); images are re-pulled or re-imported, MongoDB records are not migrated",
                    );
                }
            }
            "MongoDB" => notes.ignore(key, line, "MongoDB database name; there is no MongoDB store"),
            "CacheDirectory" => out.cache_dir = absolute(key, line, value, &mut notes),
            "ExpandDirectory" => out.work_dir = absolute(key, line, value, &mut notes),
            "DefaultImageFormat" => {
                if value.as_str() == Some("squashfs") {
                    notes.ignore(key, line, "images are always squashfs");
                } else {
                    notes.refuse(
                        key,
                        line,
                        format!("image format {value} is not supported"),
                        "shifter-rs only produces squashfs: set it to squashfs or remove the line",
                    );
                }
            }
            "Authentication" => {
                if value.as_str() == Some("munge") {
                    notes.ignore(key, line, "authentication is always Munge");
                } else {
                    notes.refuse(
                        key,
                        line,
                        format!("authentication {value} is not supported"),
                        "shifter-rs authenticates every request with Munge: remove the line",
                    );
                }
            }
            "PullUpdateTimeout" => notes.ignore(
                key,
                line,
                "clients wait on the pull status; registry requests have their own timeouts and retries",
            ),
            "LogLevel" => notes.ignore(
                key,
                line,
                "set RUST_LOG (e.g. RUST_LOG=info) in the gateway's environment",
            ),
            "DefaultLustreReplication" | "DefaultOstCount" => notes.ignore(
                key,
                line,
                "set Lustre striping on the image directory itself (lfs setstripe); new images inherit it",
            ),
            "Broker" => notes.ignore(
                key,
                line,
                "pulls run inside the gateway process (workers); there is no Celery/Redis broker",
            ),
            "Metrics" => notes.ignore(key, line, "metrics are always served at /metrics and /api/metrics"),
            "ConverterOptions" => notes.ignore(
                key,
                line,
                "mksquashfs options do not apply to the built-in converter; choose the compressor per system with `compression`",
            ),
            "ImportUsers" => match value {
                Value::Null => {}
                Value::String(s) if s == "none" => {}
                Value::String(s) if s == "all" => notes.refuse(
                    key,
                    line,
                    "shifter-rs does not let every user import squashfs files",
                    "list the users (names or uids) allowed to import",
                ),
                other => match users(other) {
                    Some(list) => import_users = list,
                    None => notes.refuse(key, line, "not a list of users", "give [\"name\", 1234, …]"),
                },
            },
            "examiner" => notes.refuse(
                key,
                line,
                "shifter-rs has no image examiner hook",
                "remove the line; images are checked by the converter's built-in rules",
            ),
            "Locations" => locations(value, &loc, &mut out, &mut notes),
            "Platforms" => platforms(value, &loc, &mut out, &mut notes),
            _ => notes.refuse(
                key,
                line,
                "not an imagemanager.json key shifter-config knows",
                "check the spelling, or set the equivalent in imagegw.toml by hand and remove it",
            ),
        }
    }
    if out.systems.is_empty() && !top.contains_key("Platforms") {
        notes.refuse(
            "Platforms",
            0,
            "missing; the gateway needs at least one system",
            "add a Platforms entry with accesstype local and local.imageDir",
        );
    }
    for sys in out.systems.values_mut() {
        sys.import_users = import_users.clone();
    }
    if !notes.refusals.is_empty() {
        return refused(source, notes);
    }
    let body = toml::to_string(&out).map_err(|e| ImportError::Generated {
        what: "imagegw.toml",
        cause: e.to_string(),
    })?;
    let toml = format!(
        "{}{body}",
        header("import-gateway", source, &mut notes.ignored)
    );
    shifter_imagegw::config::Config::parse(&toml).map_err(|e| ImportError::Generated {
        what: "imagegw.toml",
        cause: e.to_string(),
    })?;
    Ok(Imported {
        toml,
        ignored: notes.ignored,
    })
}

fn refused(source: &str, notes: Notes) -> Result<Imported, ImportError> {
    Err(ImportError::Refused {
        file: source.to_owned(),
        refusals: notes.refusals,
    })
}

fn locations(value: &Value, loc: &Locator<'_>, out: &mut GwOut, notes: &mut Notes) {
    let Some(map) = value.as_object() else {
        notes.refuse(
            "Locations",
            loc.line(&["Locations"]),
            "not an object",
            "map registry host to its settings",
        );
        return;
    };
    for (host, settings) in map {
        let mut reg = RegistryOut::default();
        let obj = settings.as_object().cloned().unwrap_or_default();
        for (k, v) in &obj {
            let key = format!("Locations.{host}.{k}");
            let line = loc.line(&["Locations", host, k]);
            match k.as_str() {
                "remotetype" => {
                    if v.as_str() != Some("dockerv2") {
                        notes.refuse(
                            &key,
                            line,
                            format!("remote type {v} is not supported"),
                            "only Docker Registry v2 / OCI registries (dockerv2) can be pulled from; remove this location",
                        );
                    }
                }
                "authentication" => notes.ignore(
                    &key,
                    line,
                    "registry authentication follows the registry's challenge (bearer token or basic)",
                ),
                "sslcacert" => reg.ca_file = absolute(&key, line, v, notes),
                "url" => match v.as_str() {
                    Some(u) if u.starts_with("http://") => reg.plain_http = true,
                    Some(u) if u.starts_with("https://") => {}
                    _ => notes.refuse(&key, line, format!("{v} is not an http(s) URL"), "give https://host[:port]"),
                },
                "policy_file" => notes.refuse(
                    &key,
                    line,
                    "shifter-rs has no per-registry image policy file",
                    "remove the line; restrict registries at the network level or with registry credentials",
                ),
                _ => notes.refuse(&key, line, "unknown location setting", "use remotetype, authentication, sslcacert or url"),
            }
        }
        if reg.plain_http || reg.ca_file.is_some() {
            out.registries.insert(registry_key(host), reg);
        }
    }
}

fn registry_key(host: &str) -> String {
    if DOCKER_HUB_ALIASES.contains(&host) {
        shifter_api::reference::DOCKER_HUB.into()
    } else {
        host.to_owned()
    }
}

fn platforms(value: &Value, loc: &Locator<'_>, out: &mut GwOut, notes: &mut Notes) {
    let empty = Map::new();
    let map = value.as_object().unwrap_or(&empty);
    if map.is_empty() {
        notes.refuse(
            "Platforms",
            loc.line(&["Platforms"]),
            "no platform defined",
            "add one with accesstype local and local.imageDir",
        );
        return;
    }
    for (name, settings) in map {
        let obj = settings.as_object().cloned().unwrap_or_default();
        let pline = loc.line(&["Platforms", name]);
        let mut sys = SystemOut::default();
        let mut image_dir = None;
        let remote = obj.get("accesstype").and_then(Value::as_str) != Some("local");
        if remote {
            notes.refuse(
                &format!("Platforms.{name}.accesstype"),
                loc.line(&["Platforms", name, "accesstype"]).max(pline),
                format!(
                    "accesstype {} is not supported: the gateway publishes into an image directory it can write, it does not copy images over ssh",
                    obj.get("accesstype").unwrap_or(&Value::Null)
                ),
                "mount the system's image directory on the gateway host and use accesstype local with local.imageDir",
            );
            continue;
        }
        for (k, v) in &obj {
            let key = format!("Platforms.{name}.{k}");
            let line = loc.line(&["Platforms", name, k]);
            match k.as_str() {
                "accesstype" => {}
                "local" => match v.get("imageDir") {
                    Some(dir) => image_dir = absolute(&key, line, dir, notes),
                    None => notes.refuse(&key, line, "no imageDir", "add \"imageDir\": \"/path/to/images\""),
                },
                "mungeSocketPath" => sys.munge_socket = absolute(&key, line, v, notes),
                "admins" => match users(v) {
                    Some(list) => sys.admins = list,
                    None => notes.refuse(&key, line, "not a user or list of users", "give [\"root\", …]"),
                },
                "usergroupService" | "ldap" => notes.ignore(
                    &key,
                    line,
                    "users and groups are resolved through the gateway host's NSS (configure LDAP in sssd/nslcd there)",
                ),
                "host" | "ssh" | "mountCommand" => notes.ignore(
                    &key,
                    line,
                    "only used by Shifter's remote (ssh) transfer",
                ),
                "policy_file" => notes.refuse(
                    &key,
                    line,
                    "shifter-rs has no per-system image policy file",
                    "remove the line",
                ),
                _ => notes.refuse(
                    &key,
                    line,
                    "unknown platform setting",
                    "use accesstype, local.imageDir, mungeSocketPath or admins",
                ),
            }
        }
        match image_dir {
            Some(dir) => {
                sys.image_dir = dir;
                out.systems.insert(name.clone(), sys);
            }
            None if !obj.contains_key("local") => notes.refuse(
                &format!("Platforms.{name}.local.imageDir"),
                pline,
                "missing",
                "add \"local\": {\"imageDir\": \"/path/to/images\"}",
            ),
            None => {}
        }
    }
}

fn absolute(key: &str, line: usize, value: &Value, notes: &mut Notes) -> Option<PathBuf> {
    match value.as_str() {
        Some(p) if p.starts_with('/') => Some(PathBuf::from(p)),
        _ => {
            notes.refuse(
                key,
                line,
                format!("{value} is not an absolute path"),
                "give an absolute path",
            );
            None
        }
    }
}

fn number(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn users(v: &Value) -> Option<Vec<UserOut>> {
    let one = |v: &Value| match v {
        Value::String(s) if !s.is_empty() => Some(UserOut::Name(s.clone())),
        Value::Number(n) => n.as_u64().map(UserOut::Uid),
        _ => None,
    };
    match v {
        Value::Array(items) => items.iter().map(one).collect(),
        other => one(other).map(|u| vec![u]),
    }
}

/// `D:HH:MM:SS` (Shifter also accepts fewer fields, counted from days) to whole
/// days, rounded up; the flag says whether no rounding happened.
fn expiry_days(s: &str) -> Option<(u64, bool)> {
    let parts: Vec<u64> = s
        .split(':')
        .map(|p| p.trim().parse().ok())
        .collect::<Option<_>>()?;
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let scale = [86_400u64, 3_600, 60, 1];
    let secs: u64 = parts.iter().zip(scale).map(|(v, m)| v * m).sum();
    if secs == 0 {
        return None;
    }
    let days = secs.div_ceil(86_400);
    Some((days, secs % 86_400 == 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_rounds_up_to_whole_days() {
        assert_eq!(expiry_days("90:00:00:00"), Some((90, true)));
        assert_eq!(expiry_days("1:12:00:00"), Some((2, false)));
        assert_eq!(expiry_days("0:00:00:00"), None);
        assert_eq!(expiry_days("ninety"), None);
    }

    #[test]
    fn locator_finds_nested_keys_after_their_parents() {
        let text = "{\n \"a\": 1,\n \"P\": {\n  \"x\": {\n   \"a\": 2\n  }\n }\n}\n";
        let loc = Locator { text };
        assert_eq!(loc.line(&["a"]), 2);
        assert_eq!(loc.line(&["P", "x", "a"]), 5);
        assert_eq!(loc.line(&["nope"]), 0);
    }

    #[test]
    fn locator_skips_values_that_spell_the_key() {
        let text = "{\n \"accesstype\": \"local\",\n \"local\": {}\n}\n";
        assert_eq!(Locator { text }.line(&["local"]), 3);
    }
}
