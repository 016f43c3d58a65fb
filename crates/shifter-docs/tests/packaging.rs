//! The example configs the package installs under /etc/shifter are accepted
//! by the parsers that read them, agree with each other, and the gateway's
//! systemd unit lets it write exactly where that config tells it to.

use std::path::{Path, PathBuf};

use shifter_imagegw::config::{Config as GatewayConfig, StoreUrl};

fn packaging(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../packaging")
        .join(file)
}

fn read(file: &str) -> String {
    std::fs::read_to_string(packaging(file)).unwrap()
}

#[test]
fn the_example_configs_parse_and_name_the_same_system_and_image_dir() {
    let runtime = runtime_core::Config::parse(&read("etc/shifter.toml"), Path::new("shifter.toml"))
        .expect("packaging/etc/shifter.toml is valid");
    let gateway = GatewayConfig::parse(&read("etc/imagegw.toml"))
        .expect("packaging/etc/imagegw.toml is valid");
    let system = gateway
        .systems
        .get(&runtime.system)
        .expect("imagegw.toml serves the system shifter.toml names");
    assert_eq!(system.image_dir, runtime.image_dir);
    assert_eq!(
        runtime.gateways,
        [format!("http://localhost:{}", gateway.listen.port())]
    );
}

#[test]
fn the_unit_lets_the_gateway_write_where_its_config_says_and_nowhere_else() {
    let gateway = GatewayConfig::parse(&read("etc/imagegw.toml")).unwrap();
    let unit = read("shifter-imagegw.service.in")
        .replace("@STATEDIR@", "/var/lib/shifter")
        .replace("@CACHEDIR@", "/var/cache/shifter")
        .replace("@SBINDIR@", "/usr/sbin")
        .replace("@SYSCONFDIR@", "/etc");
    let value = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("the unit sets no {key}="))
            .to_owned()
    };
    let writable: Vec<PathBuf> = value("ReadWritePaths")
        .split_whitespace()
        .map(PathBuf::from)
        .collect();
    let StoreUrl::Sqlite(db) = StoreUrl::parse(&gateway.store).unwrap() else {
        panic!("the example store is sqlite");
    };
    let mut needed = vec![
        db.parent().unwrap().to_owned(),
        gateway.work_dir.clone(),
        gateway.cache_dir.clone(),
    ];
    needed.extend(gateway.systems.values().map(|s| s.image_dir.clone()));
    for dir in &needed {
        assert!(
            writable.iter().any(|w| dir.starts_with(w)),
            "{} is not in ReadWritePaths {writable:?}",
            dir.display()
        );
    }
    for w in &writable {
        assert!(
            needed.iter().any(|d| d.starts_with(w)),
            "ReadWritePaths has {} which the gateway does not need",
            w.display()
        );
    }
    assert_eq!(value("User"), "shifter");
    assert_eq!(value("NoNewPrivileges"), "yes");
    assert_eq!(value("ProtectSystem"), "strict");
    assert_eq!(
        value("ExecStart"),
        format!(
            "/usr/sbin/shifter-imagegw --config {}",
            "/etc/shifter/imagegw.toml"
        )
    );
}
