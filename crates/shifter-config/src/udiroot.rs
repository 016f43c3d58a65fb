//! `udiRoot.conf` (NERSC Shifter's runtime config) to `shifter.toml`.
//!
//! Every key Shifter knows is either mapped, ignored with a reason (it only
//! configured Shifter's own machinery), or refused with what to do (it changed
//! what users get and shifter-rs cannot express it). Unknown keys are refused:
//! Shifter itself refuses them too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use runtime_core::config::{Config, Module, PerNodeCacheConfig, SiteMount};

use crate::keyvalue::{self, Entry};
use crate::report::{header, ImportError, Imported, Notes};

/// Where Shifter put `optUdiImage` and module `copyPath` content.
const OPT_UDI_IMAGE: &str = "/opt/udiImage";

const HELPER_BINARY: &str =
    "shifter-rs calls no external helper programs (mounts and copies are done with system calls)";
const KERNEL_MODULES: &str =
    "shifter-rs never loads kernel modules; load loop, squashfs and overlay at boot";
const NO_SCRIPTS: &str =
    "shifter-rs runs no site scripts as root while building a container (a script is code running with full privilege in every job)";

/// Settings shifter.toml needs that udiRoot.conf never had.
#[derive(Debug, Clone, Default)]
pub struct RuntimeOptions {
    /// The gateway's account: Shifter's gateway ran as root, shifter-rs's
    /// does not, and the runtime only trusts image files owned by root or
    /// this uid.
    pub gateway_uid: Option<u32>,
}

/// Converts udiRoot.conf text; `source` only names the file in messages.
pub fn import(text: &str, source: &str) -> Result<Imported, ImportError> {
    import_with(text, source, &RuntimeOptions::default())
}

/// [`import`] with settings given on the command line.
pub fn import_with(
    text: &str,
    source: &str,
    opts: &RuntimeOptions,
) -> Result<Imported, ImportError> {
    let mut draft = Draft::default();
    let mut notes = Notes::default();
    for entry in keyvalue::parse(text) {
        draft.apply(&entry, &mut notes);
    }
    let cfg = draft.finish(&mut notes);
    if !notes.refusals.is_empty() {
        return Err(ImportError::Refused {
            file: source.to_owned(),
            refusals: notes.refusals,
        });
    }
    let Some(mut cfg) = cfg else {
        return Err(ImportError::Generated {
            what: "shifter.toml",
            cause: "the runtime refused the system name or image directory".into(),
        });
    };
    cfg.gateway_uid = opts.gateway_uid;
    let body = toml::to_string(&cfg).map_err(|e| ImportError::Generated {
        what: "shifter.toml",
        cause: e.to_string(),
    })?;
    let toml = format!("{}{body}", header("import", source, &mut notes.ignored));
    // Never hand the admin a file the runtime would refuse.
    Config::parse(&toml, Path::new("shifter.toml")).map_err(|e| ImportError::Generated {
        what: "shifter.toml",
        cause: e.to_string(),
    })?;
    Ok(Imported {
        toml,
        ignored: notes.ignored,
    })
}

#[derive(Debug, Default)]
struct ModuleDraft {
    module: Module,
    enabled: bool,
    line: usize,
}

#[derive(Debug, Default)]
struct Draft {
    system: Option<String>,
    image_dir: Option<PathBuf>,
    mount_root: Option<PathBuf>,
    gateways: Vec<String>,
    default_image_type: Option<String>,
    lookup_timeout_secs: Option<u64>,
    site_fs: Vec<SiteMount>,
    site_env: BTreeMap<String, String>,
    env_append: BTreeMap<String, String>,
    env_prepend: BTreeMap<String, String>,
    env_unset: Vec<String>,
    modules: BTreeMap<String, ModuleDraft>,
    default_modules: Option<(Vec<String>, usize)>,
    /// `perNodeCachePath` and `perNodeCacheSizeLimit`, with their lines.
    cache_dir: Option<(PathBuf, usize)>,
    cache_max: Option<(String, usize)>,
    mkfs_xfs: Option<(PathBuf, usize)>,
}

impl Draft {
    fn apply(&mut self, e: &Entry, notes: &mut Notes) {
        let (key, value, line) = (e.key.as_str(), e.value.as_str(), e.line);
        match key {
            "system" => {
                let ok = !value.is_empty()
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
                if ok {
                    self.system = Some(value.to_owned());
                } else {
                    notes.refuse(
                        key,
                        line,
                        format!("{value:?} is not a platform name"),
                        "use letters, digits, '.', '_' and '-' (the same name as the gateway's system)",
                    );
                }
            }
            "imagePath" => self.image_dir = absolute(key, line, value, notes),
            "udiMount" => self.mount_root = absolute(key, line, value, notes),
            "imageGateway" => {
                for url in value.split_whitespace() {
                    if url.starts_with("http://") || url.starts_with("https://") {
                        self.gateways.push(url.trim_end_matches('/').to_owned());
                    } else {
                        notes.refuse(
                            key,
                            line,
                            format!("{url:?} is not an http(s) URL"),
                            "write each gateway as http://host:port",
                        );
                    }
                }
            }
            "defaultImageType" => match value {
                "docker" | "custom" => self.default_image_type = Some(value.to_owned()),
                _ => notes.refuse(
                    key,
                    line,
                    format!("image type {value:?} does not exist in shifter-rs"),
                    "use docker or custom, or remove the line (docker is the default)",
                ),
            },
            "gatewayTimeout" => match value.parse::<u64>() {
                Ok(n) if n > 0 => self.lookup_timeout_secs = Some(n),
                _ => notes.refuse(
                    key,
                    line,
                    format!("{value:?} is not a positive number of seconds"),
                    "give a whole number of seconds such as 10",
                ),
            },
            "siteFs" => {
                if let Some(m) = mounts(key, line, value, notes) {
                    self.site_fs.extend(m);
                }
            }
            "siteEnv" => env_set(key, line, value, &mut self.site_env, notes),
            "siteEnvAppend" => env_set(key, line, value, &mut self.env_append, notes),
            "siteEnvPrepend" => env_set(key, line, value, &mut self.env_prepend, notes),
            "siteEnvUnset" => env_unset(key, line, value, &mut self.env_unset, notes),
            "defaultModules" => {
                let names = value
                    .split([',', ' ', '\t'])
                    .filter(|n| !n.is_empty())
                    .map(str::to_owned)
                    .collect();
                self.default_modules = Some((names, line));
            }
            "optUdiImage" => {
                // Shifter bound this tree at /opt/udiImage; site env often
                // points into it, so keep it where users expect it.
                if let Some(src) = absolute(key, line, value, notes) {
                    self.site_fs.push(SiteMount {
                        source: src,
                        destination: Some(OPT_UDI_IMAGE.into()),
                        read_only: true,
                        recursive: false,
                    });
                }
            }
            "etcPath" => notes.ignore(
                key,
                line,
                format!(
                    "shifter-rs generates /etc/passwd and /etc/group for the user and takes hosts, resolv.conf and nsswitch.conf from the host; other files in {value} are not copied into containers"
                ),
            ),
            "allowLocalChroot" => {
                if value.trim() == "0" {
                    notes.ignore(key, line, "shifter-rs has no local:/ images; 0 keeps that");
                } else {
                    notes.refuse(
                        key,
                        line,
                        "shifter-rs cannot run a host directory as an image (local:/ and ccm emulation)",
                        "set it to 0 or remove the line; import the tree as a custom squashfs image instead",
                    );
                }
            }
            "mountUdiRootWritable" => notes.ignore(
                key,
                line,
                "the container root is an overlay whose image layer is always read-only",
            ),
            "maxGroupCount" => notes.ignore(
                key,
                line,
                "the generated /etc/group lists exactly the user's groups, without a cap",
            ),
            "rootfsType" => notes.ignore(
                key,
                line,
                "shifter-rs always assembles the root as overlayfs over a size-capped tmpfs (upper_size)",
            ),
            "loopMount" => notes.ignore(
                key,
                line,
                "the image is mounted inside the job's private mount namespace under mount_root",
            ),
            "mountPropagationStyle" => notes.ignore(
                key,
                line,
                "shifter-rs makes the container's mounts slaves of the host (host unmounts propagate in, nothing propagates out)",
            ),
            "udiRootPath" | "modprobePath" | "insmodPath" | "cpPath" | "mvPath" | "chmodPath"
            | "ddPath" => notes.ignore(key, line, HELPER_BINARY),
            "mkfsXfsPath" => self.mkfs_xfs = absolute(key, line, value, notes).map(|p| (p, line)),
            "autoLoadKernelModule" | "kmodBasePath" | "kmodCacheFile" => {
                notes.ignore(key, line, KERNEL_MODULES)
            }
            "batchType" => notes.ignore(key, line, "the Slurm plugin is the only batch integration"),
            "nodeContextPrefix" | "optionalSshdAsRoot" => {
                notes.ignore(key, line, "defunct in Shifter itself")
            }
            "allowLibcPwdCalls" | "populateEtcDynamically" => notes.ignore(
                key,
                line,
                "shifter-rs always resolves the user on the host and writes the container's passwd/group itself",
            ),
            "sitePreMountHook" | "sitePostMountHook" => notes.refuse(
                key,
                line,
                NO_SCRIPTS,
                "express what the script did as site_fs mounts or env settings in shifter.toml, then remove the line",
            ),
            "perNodeCachePath" => self.cache_path(key, value, line, notes),
            "perNodeCacheSizeLimit" => {
                match runtime_core::per_node_cache::parse_size(value) {
                    Ok(n) if n >= runtime_core::per_node_cache::MIN_SIZE => {
                        self.cache_max = Some((value.to_owned(), line))
                    }
                    Ok(_) => notes.refuse(
                        key,
                        line,
                        format!("{value:?} is below the xfs minimum of 300M"),
                        "allow at least 300M",
                    ),
                    Err(why) => notes.refuse(key, line, why, "write e.g. perNodeCacheSizeLimit=50G"),
                }
            }
            "perNodeCacheAllowedFsType" => {
                let types: Vec<&str> = value
                    .split([',', ' ', '\t'])
                    .filter(|t| !t.is_empty())
                    .collect();
                if !types.contains(&"xfs") {
                    notes.refuse(
                        key,
                        line,
                        format!("{value:?} does not allow xfs, the only per-node cache filesystem of shifter-rs"),
                        "allow xfs or remove the line",
                    );
                } else if types.len() > 1 {
                    notes.ignore(key, line, "only xfs is offered; the other types are left out");
                }
            }
            _ => {
                if let Some(rest) = key.strip_prefix("module_") {
                    self.module_key(key, rest, value, line, notes);
                } else {
                    notes.refuse(
                        key,
                        line,
                        "not a udiRoot.conf key shifter-config knows",
                        "check the spelling; if it is a site patch, express it in shifter.toml by hand and remove the line",
                    );
                }
            }
        }
    }

    fn module_key(&mut self, key: &str, rest: &str, value: &str, line: usize, notes: &mut Notes) {
        let Some((name, sub)) = rest
            .split_once('_')
            .filter(|(n, s)| !n.is_empty() && !s.is_empty())
        else {
            notes.refuse(
                key,
                line,
                "a module key must look like module_<name>_<setting>",
                "fix the key name",
            );
            return;
        };
        let draft = self
            .modules
            .entry(name.to_owned())
            .or_insert_with(|| ModuleDraft {
                enabled: true,
                line,
                ..ModuleDraft::default()
            });
        let m = &mut draft.module;
        match sub {
            "siteFs" => {
                if let Some(list) = mounts(key, line, value, notes) {
                    m.mounts.extend(list);
                }
            }
            "siteEnv" => env_set(key, line, value, &mut m.env, notes),
            "siteEnvAppend" => env_set(key, line, value, &mut m.env_append, notes),
            "siteEnvPrepend" => env_set(key, line, value, &mut m.env_prepend, notes),
            "siteEnvUnset" => env_unset(key, line, value, &mut m.env_unset, notes),
            "copyPath" => {
                // Shifter copied the tree into the container; a read-only bind
                // at the same place gives the same view without the copy.
                if let Some(src) = absolute(key, line, value, notes) {
                    m.mounts.push(SiteMount {
                        source: src,
                        destination: Some(format!("{OPT_UDI_IMAGE}/modules/{name}").into()),
                        read_only: true,
                        recursive: false,
                    });
                }
            }
            "enabled" => draft.enabled = value.trim() != "0",
            "conflict" => notes.refuse(
                key,
                line,
                "shifter.toml has no per-module conflict list",
                "remove the line and describe the conflict in the module's description, or keep the modules out of default_modules together",
            ),
            "userhook" | "roothook" => notes.refuse(
                key,
                line,
                NO_SCRIPTS,
                "express what the hook did as the module's mounts or env settings, then remove the line",
            ),
            _ => notes.refuse(
                key,
                line,
                format!("module setting {sub:?} does not exist"),
                "use siteFs, siteEnv, siteEnvAppend, siteEnvPrepend, siteEnvUnset, copyPath or enabled",
            ),
        }
    }

    /// `perNodeCachePath`: shifter-rs needs a directory only root can write,
    /// so the shared scratch directories Shifter allowed are refused.
    fn cache_path(&mut self, key: &str, value: &str, line: usize, notes: &mut Notes) {
        let Some(p) = absolute(key, line, value, notes) else {
            return;
        };
        let clean = runtime_core::volume::clean_absolute(value);
        let shared = ["/", "/tmp", "/var/tmp", "/dev/shm"]
            .iter()
            .any(|s| clean.as_deref() == Some(Path::new(s)));
        if shared {
            notes.refuse(
                key,
                line,
                format!("{value} is writable by every user, and backing files must be in a directory only root can write"),
                format!("use a directory of its own, e.g. perNodeCachePath={}/shifter-cache (created 0700 on first use)", value.trim_end_matches('/')),
            );
        } else if clean.as_deref() != Some(p.as_path()) {
            notes.refuse(
                key,
                line,
                format!("{value:?} is not a clean path"),
                "write it without '..', '.' or a trailing '/'",
            );
        } else {
            self.cache_dir = Some((p, line));
        }
    }

    /// Builds the config; `None` only when a refusal was recorded.
    fn finish(self, notes: &mut Notes) -> Option<Config> {
        if self.system.is_none() {
            notes.refuse(
                "system",
                0,
                "missing; shifter.toml needs the platform name",
                "add system=<name>, the name the gateway serves",
            );
        }
        if self.image_dir.is_none() {
            notes.refuse(
                "imagePath",
                0,
                "missing; shifter.toml needs the image directory",
                "add imagePath=/path/to/images",
            );
        }
        let mut modules = BTreeMap::new();
        for (name, d) in self.modules {
            if name == "none" || name.contains(',') {
                notes.refuse(
                    &format!("module_{name}_*"),
                    d.line,
                    "reserved or invalid module name",
                    "rename the module",
                );
            } else if d.enabled {
                modules.insert(name, d.module);
            } else {
                notes.ignore(
                    &format!("module_{name}_*"),
                    d.line,
                    format!("module_{name}_enabled=0: the module is left out"),
                );
            }
        }
        let mut default_modules = Vec::new();
        if let Some((names, line)) = self.default_modules {
            for n in names {
                if modules.contains_key(&n) {
                    default_modules.push(n);
                } else {
                    notes.refuse(
                        "defaultModules",
                        line,
                        format!("module {n:?} is not defined (or is disabled)"),
                        "define it with module_<name>_* keys or remove it from the list",
                    );
                }
            }
        }
        let per_node_cache = match (self.cache_dir, self.cache_max) {
            (Some((dir, _)), Some((max, _))) => Some(PerNodeCacheConfig::new(dir, max)),
            (Some((_, line)), None) => {
                notes.refuse(
                    "perNodeCachePath",
                    line,
                    "per-node caches need a size limit",
                    "add perNodeCacheSizeLimit=<size>, e.g. 50G",
                );
                None
            }
            (None, Some((_, line))) => {
                notes.refuse(
                    "perNodeCacheSizeLimit",
                    line,
                    "per-node caches need a backing directory",
                    "add perNodeCachePath=<root-only directory on local disk>",
                );
                None
            }
            (None, None) => None,
        };
        let per_node_cache = match (per_node_cache, self.mkfs_xfs) {
            (Some(mut c), Some((mkfs, _))) => {
                c.mkfs_xfs = mkfs;
                Some(c)
            }
            (None, Some((_, line))) => {
                notes.ignore(
                    "mkfsXfsPath",
                    line,
                    "only per-node caches run mkfs.xfs, and none are configured",
                );
                None
            }
            (c, None) => c,
        };
        if !notes.refusals.is_empty() {
            return None;
        }
        let (system, image_dir) = (self.system?, self.image_dir?);
        // Start from the runtime's own defaults so the output spells them out.
        let stub = format!(
            "system = {}\nimage_dir = {}\n",
            toml::Value::String(system),
            toml::Value::String(image_dir.to_string_lossy().into_owned())
        );
        let mut cfg = Config::parse(&stub, Path::new("shifter.toml")).ok()?;
        cfg.gateways = self.gateways;
        if let Some(t) = self.default_image_type {
            cfg.default_image_type = t;
        }
        if let Some(m) = self.mount_root {
            cfg.mount_root = m;
        }
        if let Some(t) = self.lookup_timeout_secs {
            cfg.lookup_timeout_secs = t;
        }
        cfg.site_fs = self.site_fs;
        cfg.site_env = self.site_env;
        cfg.env_append = self.env_append;
        cfg.env_prepend = self.env_prepend;
        cfg.env_unset = self.env_unset;
        cfg.modules = modules;
        cfg.default_modules = default_modules;
        cfg.per_node_cache = per_node_cache;
        Some(cfg)
    }
}

fn absolute(key: &str, line: usize, value: &str, notes: &mut Notes) -> Option<PathBuf> {
    let p = Path::new(value);
    if p.is_absolute() {
        Some(p.to_owned())
    } else {
        notes.refuse(
            key,
            line,
            format!("{value:?} is not an absolute path"),
            "give an absolute path",
        );
        None
    }
}

/// Parses a Shifter volume map: entries separated by `;` (or whitespace in old
/// configs), each `from[:to[:flag…]]`.
fn mounts(key: &str, line: usize, value: &str, notes: &mut Notes) -> Option<Vec<SiteMount>> {
    let mut out = Vec::new();
    let mut ok = true;
    for spec in value
        .split([';', ' ', '\t'])
        .map(|s| s.trim_matches('"'))
        .filter(|s| !s.is_empty())
    {
        let mut parts = spec.split(':');
        let from = parts.next().unwrap_or_default();
        let to = parts.next().filter(|t| !t.is_empty()).unwrap_or(from);
        if !from.starts_with('/') || !to.starts_with('/') {
            notes.refuse(
                key,
                line,
                format!("mount {spec:?} does not have absolute paths"),
                "write it as /host/path[:/container/path[:ro|rec]]",
            );
            ok = false;
            continue;
        }
        let mut m = SiteMount {
            source: from.into(),
            destination: (to != from).then(|| to.into()),
            read_only: false,
            recursive: false,
        };
        for flag in parts {
            match flag {
                "ro" => m.read_only = true,
                "rec" => m.recursive = true,
                "slave" | "private" => notes.ignore(
                    key,
                    line,
                    format!(
                        "flag {flag:?} of {from}: every bind is a slave of the host in shifter-rs"
                    ),
                ),
                f if f.starts_with("perNodeCache") => {
                    notes.refuse(
                        key,
                        line,
                        format!("{spec:?}: a per-node cache cannot be a site mount"),
                        "remove it; users request caches with --volume=SRC:DST:perNodeCache=size=N",
                    );
                    ok = false;
                }
                "" => {}
                other => {
                    notes.refuse(
                        key,
                        line,
                        format!("mount flag {other:?} in {spec:?} is unknown"),
                        "use ro and/or rec",
                    );
                    ok = false;
                }
            }
        }
        out.push(m);
    }
    ok.then_some(out)
}

fn env_set(
    key: &str,
    line: usize,
    value: &str,
    into: &mut BTreeMap<String, String>,
    notes: &mut Notes,
) {
    for tok in value.split_whitespace() {
        match tok.split_once('=') {
            Some((name, v)) if valid_name(name) => {
                into.insert(name.to_owned(), v.to_owned());
            }
            _ => notes.refuse(
                key,
                line,
                format!("{tok:?} is not NAME=value"),
                "write each setting as NAME=value, separated by spaces",
            ),
        }
    }
}

fn env_unset(key: &str, line: usize, value: &str, into: &mut Vec<String>, notes: &mut Notes) {
    for name in value.split_whitespace() {
        if valid_name(name) {
            into.push(name.to_owned());
        } else {
            notes.refuse(
                key,
                line,
                format!("{name:?} is not a variable name"),
                "list bare variable names separated by spaces",
            );
        }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(['=', '\0'])
}
