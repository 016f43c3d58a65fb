//! The container's environment and working directory.
//!
//! Order (design §4.6): the job's environment, then the image's `ENV`
//! (replacing), then each module's edits, then the site's edits, then
//! `SHIFTER_IMAGE` and `SHIFTER_IMAGEREQUEST`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::{Config, Module};

pub type Env = BTreeMap<String, String>;

/// One layer of edits, as found in the site config and in modules.
struct Edits<'a> {
    set: &'a BTreeMap<String, String>,
    append: &'a BTreeMap<String, String>,
    prepend: &'a BTreeMap<String, String>,
    unset: &'a [String],
}

impl Edits<'_> {
    fn apply(&self, env: &mut Env) {
        for (k, v) in self.set {
            env.insert(k.clone(), v.clone());
        }
        for (k, v) in self.append {
            let new = match env.get(k) {
                Some(old) if !old.is_empty() => format!("{old}:{v}"),
                _ => v.clone(),
            };
            env.insert(k.clone(), new);
        }
        for (k, v) in self.prepend {
            let new = match env.get(k) {
                Some(old) if !old.is_empty() => format!("{v}:{old}"),
                _ => v.clone(),
            };
            env.insert(k.clone(), new);
        }
        for k in self.unset {
            env.remove(k);
        }
    }
}

/// Builds the container environment.
pub fn container_env(
    job_env: &Env,
    image_env: &[String],
    modules: &[(&str, &Module)],
    cfg: &Config,
    image_id: &str,
    image_request: &str,
) -> Env {
    let mut env = job_env.clone();
    for kv in image_env {
        // Docker ENV entries are always KEY=VALUE; anything else is ignored.
        if let Some((k, v)) = kv.split_once('=') {
            if !k.is_empty() {
                env.insert(k.to_owned(), v.to_owned());
            }
        }
    }
    for (_, m) in modules {
        Edits {
            set: &m.env,
            append: &m.env_append,
            prepend: &m.env_prepend,
            unset: &m.env_unset,
        }
        .apply(&mut env);
    }
    prepend_library_dirs(&mut env, modules);
    Edits {
        set: &cfg.site_env,
        append: &cfg.env_append,
        prepend: &cfg.env_prepend,
        unset: &cfg.env_unset,
    }
    .apply(&mut env);
    env.insert("SHIFTER_IMAGE".into(), image_id.to_owned());
    env.insert("SHIFTER_IMAGEREQUEST".into(), image_request.to_owned());
    env
}

/// Puts every module's `ldconfig_dirs` first in `LD_LIBRARY_PATH`, in module
/// order: the host libraries a module binds must win over the image's own
/// copies, and no `ldconfig` can run inside the container to say so.
fn prepend_library_dirs(env: &mut Env, modules: &[(&str, &Module)]) {
    let dirs: Vec<String> = modules
        .iter()
        .flat_map(|(_, m)| m.ldconfig_dirs.iter())
        .map(|d| d.display().to_string())
        .collect();
    if dirs.is_empty() {
        return;
    }
    let mut value = dirs.join(":");
    if let Some(old) = env.get("LD_LIBRARY_PATH").filter(|o| !o.is_empty()) {
        value = format!("{value}:{old}");
    }
    env.insert("LD_LIBRARY_PATH".into(), value);
}

/// The caller's cwd if it exists in the container, else the image's
/// `WORKDIR`, else `/`.
pub fn choose_workdir(
    cwd: Option<&Path>,
    image_workdir: Option<&str>,
    exists: impl Fn(&Path) -> bool,
) -> PathBuf {
    if let Some(c) = cwd.filter(|c| c.is_absolute() && exists(c)) {
        return c.to_owned();
    }
    match image_workdir {
        Some(w) if w.starts_with('/') => PathBuf::from(w),
        _ => PathBuf::from("/"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> Config {
        Config::parse(
            &format!("system = \"c\"\nimage_dir = \"/i\"\n{extra}"),
            Path::new("t.toml"),
        )
        .unwrap()
    }

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn image_env_replaces_job_env_and_shifter_vars_are_set() {
        let job = env(&[("PATH", "/host/bin"), ("HOME", "/home/me")]);
        let out = container_env(
            &job,
            &["PATH=/usr/bin:/bin".into(), "LANG=C.UTF-8".into()],
            &[],
            &cfg(""),
            "abc",
            "docker:busybox:latest",
        );
        assert_eq!(out["PATH"], "/usr/bin:/bin");
        assert_eq!(out["HOME"], "/home/me");
        assert_eq!(out["LANG"], "C.UTF-8");
        assert_eq!(out["SHIFTER_IMAGE"], "abc");
        assert_eq!(out["SHIFTER_IMAGEREQUEST"], "docker:busybox:latest");
    }

    #[test]
    fn module_edits_come_before_site_edits() {
        let c = cfg(
            "site_env = { A = \"site\" }\nenv_prepend = { PATH = \"/site/bin\" }\nenv_unset = [\"SECRET\"]\n\
             [modules.m]\nenv = { A = \"module\", B = \"module\" }\nenv_append = { PATH = \"/mod/bin\" }\n",
        );
        let mods = c.resolve_modules(Some(&["m".into()])).unwrap();
        let job = env(&[("SECRET", "x")]);
        let out = container_env(&job, &["PATH=/bin".into()], &mods, &c, "id", "req");
        assert_eq!(out["A"], "site");
        assert_eq!(out["B"], "module");
        assert_eq!(out["PATH"], "/site/bin:/bin:/mod/bin");
        assert!(!out.contains_key("SECRET"));
    }

    #[test]
    fn module_library_dirs_come_first_in_ld_library_path_in_module_order() {
        let c = cfg(
            "[modules.gpu]\nldconfig_dirs = [\"/opt/nv/lib\", \"/opt/nv/lib64\"]\n\
             [modules.mpich]\nldconfig_dirs = [\"/opt/mpich/lib\"]\n[modules.plain]\n",
        );
        let mods = c
            .resolve_modules(Some(&["gpu".into(), "mpich".into()]))
            .unwrap();
        let job = env(&[("LD_LIBRARY_PATH", "/job/lib")]);
        let out = container_env(
            &job,
            &["LD_LIBRARY_PATH=/img/lib".into()],
            &mods,
            &c,
            "i",
            "r",
        );
        assert_eq!(
            out["LD_LIBRARY_PATH"],
            "/opt/nv/lib:/opt/nv/lib64:/opt/mpich/lib:/img/lib"
        );
        let plain = c.resolve_modules(Some(&["plain".into()])).unwrap();
        let out = container_env(&Env::new(), &[], &plain, &c, "i", "r");
        assert!(!out.contains_key("LD_LIBRARY_PATH"), "{out:?}");
    }

    #[test]
    fn append_to_an_unset_variable_gives_just_the_value() {
        let c = cfg("env_append = { LD_LIBRARY_PATH = \"/opt/lib\" }\n");
        let out = container_env(&Env::new(), &[], &[], &c, "i", "r");
        assert_eq!(out["LD_LIBRARY_PATH"], "/opt/lib");
    }

    #[test]
    fn workdir_prefers_cwd_then_image_workdir_then_root() {
        let yes = |_: &Path| true;
        let no = |_: &Path| false;
        assert_eq!(
            choose_workdir(Some(Path::new("/home/me")), Some("/app"), yes),
            Path::new("/home/me")
        );
        assert_eq!(
            choose_workdir(Some(Path::new("/home/me")), Some("/app"), no),
            Path::new("/app")
        );
        assert_eq!(choose_workdir(None, None, yes), Path::new("/"));
        assert_eq!(
            choose_workdir(Some(Path::new("/x")), Some("relative"), no),
            Path::new("/")
        );
    }
}
