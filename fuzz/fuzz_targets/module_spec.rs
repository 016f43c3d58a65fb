//! `--module` / `SHIFTER_MODULE` text (user input, parsed on the submit host and
//! again as root on every node) against `[modules.*]` in `shifter.toml`. The input
//! is `<modules section>--SPEC--<module list>--SPEC--<job's device variable>`;
//! the section is appended to a minimal valid config so most inputs reach the
//! module code instead of stopping at a missing key.
//! Whatever resolves must name only configured modules, each once, never two
//! that conflict; device selection may only narrow a module's devices; the
//! container environment must honour the site's `env_unset`.
#![no_main]

use std::collections::BTreeMap;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use runtime_core::{config::expand_device_patterns, env::container_env, Config};

const HEADER: &str = "system = \"fuzz\"\nimage_dir = \"/images\"\n";
const SPLIT: &str = "--SPEC--";

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = s.splitn(3, SPLIT);
    let section = parts.next().unwrap_or_default();
    let spec = parts.next().unwrap_or_default();
    let job_devices = parts.next();
    let Ok(cfg) = Config::parse(&format!("{HEADER}{section}"), Path::new("fuzz.toml")) else {
        return;
    };
    // Both front ends (the plugin and `shifter --module`) parse with this.
    let Ok(names) = runtime_core::config::parse_module_list(spec) else {
        return;
    };

    if let Some(known) = names.first().filter(|n| cfg.modules.contains_key(*n)) {
        let once = cfg.resolve_modules(Some(std::slice::from_ref(known)));
        assert!(once.is_ok(), "{known:?} alone did not resolve: {once:?}");
    }
    let Ok(chosen) = cfg.resolve_modules(Some(&names)) else {
        return;
    };
    if spec.trim() == "none" {
        assert!(chosen.is_empty(), "`none` enabled {chosen:?}");
    }
    for (i, (name, m)) in chosen.iter().enumerate() {
        assert!(cfg.modules.get(*name) == Some(*m), "{name:?} is not the configured module");
        for (other, om) in &chosen[i + 1..] {
            assert_ne!(name, other, "{name:?} enabled twice from {spec:?}");
            assert!(
                !m.conflicts.iter().any(|c| c == other) && !om.conflicts.iter().any(|c| c == name),
                "conflicting {name:?} and {other:?} both enabled from {spec:?}"
            );
        }
        let all = expand_device_patterns(&m.devices);
        let picked = m.select_devices(|_| job_devices.map(str::to_owned));
        for d in &picked.devices {
            assert!(all.contains(d), "{name:?}: selection added {} from {job_devices:?}", d.display());
        }
    }

    let env = container_env(&BTreeMap::new(), &[], &chosen, &cfg, "sha256:x", "fuzz:latest");
    for k in &cfg.env_unset {
        if k != "SHIFTER_IMAGE" && k != "SHIFTER_IMAGEREQUEST" {
            assert!(!env.contains_key(k), "site env_unset {k:?} survived the modules");
        }
    }
});
