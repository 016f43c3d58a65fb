//! udiRoot.conf import, checked by parsing the output with the runtime's own
//! config parser and looking at what a site admin would look at.

use std::path::{Path, PathBuf};

use runtime_core::config::Config;
use shifter_config::{udiroot, ImportError};

fn data(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(name),
    )
    .unwrap()
}

fn import_ok(text: &str) -> (Config, shifter_config::Imported) {
    let imported = udiroot::import(text, "udiRoot.conf").unwrap_or_else(|e| panic!("{e}"));
    let cfg = Config::parse(&imported.toml, Path::new("shifter.toml"))
        .unwrap_or_else(|e| panic!("{e}\n{}", imported.toml));
    (cfg, imported)
}

#[test]
fn realistic_site_config_becomes_a_shifter_toml_the_runtime_accepts() {
    let (cfg, _) = import_ok(&data("udiRoot.conf"));
    assert_eq!(cfg.system, "clusterx");
    assert_eq!(cfg.image_dir, Path::new("/global/shifter/images"));
    assert_eq!(cfg.mount_root, Path::new("/var/udiMount"));
    assert_eq!(
        cfg.gateways,
        vec!["http://imagegw1:7777", "https://imagegw2.example.org"]
    );
    assert_eq!(cfg.lookup_timeout_secs, 30);
}

#[test]
fn site_mounts_keep_destinations_and_ro_rec_flags() {
    let (cfg, _) = import_ok(&data("udiRoot.conf"));
    let by_src = |s: &str| {
        cfg.site_fs
            .iter()
            .find(|m| m.source == Path::new(s))
            .unwrap_or_else(|| panic!("no mount of {s}: {:?}", cfg.site_fs))
    };
    assert_eq!(by_src("/home").destination(), Path::new("/home"));
    assert!(!by_src("/home").read_only);
    assert!(by_src("/global/cfs").recursive);
    let sw = by_src("/global/common/software");
    assert_eq!(sw.destination(), Path::new("/software"));
    assert!(sw.read_only && !sw.recursive);
    // the second siteFs line adds to the first, as in Shifter
    by_src("/var/opt/cray/alps");
    // optUdiImage stays where Shifter put it, read-only
    let udi = by_src("/opt/shifter/udiRoot/default/deps/udiImage");
    assert_eq!(udi.destination(), Path::new("/opt/udiImage"));
    assert!(udi.read_only);
}

#[test]
fn site_environment_edits_are_carried_over_including_continued_lines() {
    let (cfg, _) = import_ok(&data("udiRoot.conf"));
    assert_eq!(cfg.site_env["SHIFTER_RUNTIME"], "1");
    assert_eq!(cfg.site_env["SITE"], "clusterx");
    assert_eq!(cfg.env_append["PATH"], "/opt/udiImage/bin");
    assert_eq!(cfg.env_prepend["LD_LIBRARY_PATH"], "/opt/udiImage/lib");
    assert_eq!(cfg.env_prepend["MANPATH"], "/opt/udiImage/man");
    assert_eq!(cfg.env_unset, vec!["LOADEDMODULES", "_LMFILES_"]);
}

#[test]
fn modules_become_module_tables_and_disabled_ones_are_left_out() {
    let (cfg, imported) = import_ok(&data("udiRoot.conf"));
    assert_eq!(cfg.default_modules, vec!["mpich", "cvmfs"]);
    let mpich = &cfg.modules["mpich"];
    assert_eq!(mpich.env["MPICH_GNI_MALLOC_FALLBACK"], "1");
    assert_eq!(
        mpich.env_prepend["LD_LIBRARY_PATH"],
        "/opt/udiImage/modules/mpich/lib64"
    );
    assert!(mpich
        .mounts
        .iter()
        .any(|m| m.source == Path::new("/opt/cray/pe/mpich") && m.read_only));
    // copyPath: bound read-only where Shifter copied it
    let copy = mpich
        .mounts
        .iter()
        .find(|m| m.source == Path::new("/shared/shifter/modules/mpich"))
        .expect("copyPath mount");
    assert_eq!(copy.destination(), Path::new("/opt/udiImage/modules/mpich"));
    assert!(copy.read_only);
    let cvmfs = &cfg.modules["cvmfs"];
    assert_eq!(cvmfs.mounts[0].destination(), Path::new("/cvmfs"));
    assert_eq!(cfg.modules["gpu"].env_unset, vec!["CUDA_CACHE_DISABLE"]);
    assert!(!cfg.modules.contains_key("old"), "disabled module imported");
    assert!(imported.ignored.iter().any(|i| i.key == "module_old_*"));
}

#[test]
fn keys_without_meaning_are_reported_as_ignored_with_line_and_reason() {
    let (_, imported) = import_ok(&data("udiRoot.conf"));
    let find = |k: &str| {
        imported
            .ignored
            .iter()
            .find(|i| i.key == k)
            .unwrap_or_else(|| panic!("{k} not reported: {:?}", imported.ignored))
    };
    for key in [
        "udiRootPath",
        "modprobePath",
        "insmodPath",
        "cpPath",
        "mvPath",
        "chmodPath",
        "ddPath",
        "mkfsXfsPath",
        "etcPath",
        "loopMount",
        "rootfsType",
        "maxGroupCount",
        "mountUdiRootWritable",
        "autoLoadKernelModule",
        "allowLocalChroot",
        "batchType",
        "nodeContextPrefix",
        "mountPropagationStyle",
    ] {
        let i = find(key);
        assert!(i.line > 0 && !i.reason.is_empty(), "{i}");
    }
    assert_eq!(find("udiRootPath").line, 6);
    assert!(find("etcPath")
        .reason
        .contains("/opt/shifter/udiRoot/default/etc_files"));
    // the file says so too, for whoever reads it later
    assert!(imported.toml.contains("# Keys not carried over:"));
    assert!(imported.toml.contains("`cpPath` ignored"));
}

#[test]
fn unmappable_keys_are_refused_each_with_key_line_and_fix() {
    let err = udiroot::import(&data("udiRoot-unmappable.conf"), "udiRoot.conf").unwrap_err();
    let ImportError::Refused { refusals, .. } = &err else {
        panic!("expected refusal, got {err}");
    };
    let line_of = |k: &str| {
        refusals
            .iter()
            .find(|r| r.key == k)
            .unwrap_or_else(|| panic!("{k} not refused: {err}"))
            .line
    };
    assert_eq!(line_of("sitePreMountHook"), 3);
    assert_eq!(line_of("siteFs"), 4);
    assert_eq!(line_of("module_mpich_userhook"), 5);
    assert_eq!(line_of("module_mpich_conflict"), 6);
    assert_eq!(line_of("udiRootBogus"), 7);
    let msg = err.to_string();
    assert!(msg.contains("line 3: `sitePreMountHook`"), "{msg}");
    assert!(msg.contains("perNodeCache"), "{msg}");
    assert!(msg.contains("remove the line"), "{msg}");
}

#[test]
fn missing_system_and_image_path_are_refused_by_name() {
    let err = udiroot::import("siteEnv=A=1\n", "u.conf")
        .unwrap_err()
        .to_string();
    assert!(err.contains("`system`: missing"), "{err}");
    assert!(err.contains("`imagePath`: missing"), "{err}");
}

#[test]
fn bad_values_are_refused_naming_the_key() {
    let base = "system=c1\nimagePath=/i\n";
    for (line, key) in [
        ("imageGateway=imagegw:7777", "imageGateway"),
        ("siteFs=home:/home", "siteFs"),
        ("siteFs=/home:/home:bogus", "siteFs"),
        ("siteEnv=NOVALUE", "siteEnv"),
        ("defaultModules=nosuch", "defaultModules"),
        ("defaultImageType=local", "defaultImageType"),
        ("allowLocalChroot=1", "allowLocalChroot"),
        ("gatewayTimeout=soon", "gatewayTimeout"),
        ("imagePath=images", "imagePath"),
        ("module_x_bogus=1", "module_x_bogus"),
    ] {
        let err = udiroot::import(&format!("{base}{line}\n"), "u.conf").unwrap_err();
        match &err {
            ImportError::Refused { refusals, .. } => {
                assert!(
                    refusals.iter().any(|r| r.key == key && r.line == 3),
                    "{line}: {err}"
                )
            }
            other => panic!("{line}: {other}"),
        }
    }
}

#[test]
fn minimal_config_imports_with_runtime_defaults() {
    let (cfg, _) = import_ok("system=c1\nimagePath=/images\n");
    assert_eq!(cfg.mount_root, PathBuf::from("/var/lib/shifter/mnt"));
    assert!(cfg.site_fs.is_empty() && cfg.modules.is_empty());
}

#[test]
fn per_node_cache_keys_become_the_per_node_cache_table() {
    let base = "system=c\nimagePath=/images\n";
    let (cfg, imported) = import_ok(&format!(
        "{base}perNodeCachePath=/var/lib/shifter/cache\nperNodeCacheSizeLimit=200G\nperNodeCacheAllowedFsType=xfs ext4\nmkfsXfsPath=/sbin/mkfs.xfs\n"
    ));
    let c = cfg.per_node_cache.expect("[per_node_cache] written");
    assert_eq!(c.dir.as_deref(), Some(Path::new("/var/lib/shifter/cache")));
    assert_eq!(c.max_size, "200G");
    assert_eq!(c.mkfs_xfs, Path::new("/sbin/mkfs.xfs"));
    assert!(
        imported.toml.contains("[per_node_cache]"),
        "{}",
        imported.toml
    );
    assert!(
        imported
            .ignored
            .iter()
            .any(|i| i.key == "perNodeCacheAllowedFsType"),
        "ext4 dropped without a note"
    );
    for (conf, key, says) in [
        (
            "perNodeCachePath=/tmp\nperNodeCacheSizeLimit=1G\n",
            "perNodeCachePath",
            "perNodeCachePath=/tmp/shifter-cache",
        ),
        (
            "perNodeCachePath=/var/cache/s\n",
            "perNodeCachePath",
            "add perNodeCacheSizeLimit",
        ),
        (
            "perNodeCacheSizeLimit=lots\n",
            "perNodeCacheSizeLimit",
            "not a size",
        ),
        (
            "perNodeCacheAllowedFsType=ext4\n",
            "perNodeCacheAllowedFsType",
            "allow xfs",
        ),
    ] {
        let err = udiroot::import(&format!("{base}{conf}"), "udiRoot.conf").unwrap_err();
        let ImportError::Refused { refusals, .. } = &err else {
            panic!("{err}")
        };
        assert!(
            refusals.iter().any(|r| r.key == key),
            "{key} not refused: {err}"
        );
        assert!(err.to_string().contains(says), "{err}");
    }
}
