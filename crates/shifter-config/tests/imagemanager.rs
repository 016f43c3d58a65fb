//! imagemanager.json import, checked with the gateway's own config parser.

use std::path::Path;

use shifter_config::imagemanager::{self, GatewayOptions};
use shifter_config::ImportError;
use shifter_imagegw::config::{Config, StoreUrl, UserSpec};

fn data(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(name),
    )
    .unwrap()
}

fn sqlite() -> GatewayOptions {
    GatewayOptions {
        store: Some("sqlite:///var/lib/shifter/imagegw.sqlite".into()),
    }
}

#[test]
fn realistic_gateway_config_becomes_an_imagegw_toml_the_gateway_accepts() {
    let imported = imagemanager::import(&data("imagemanager.json"), "imagemanager.json", &sqlite())
        .unwrap_or_else(|e| panic!("{e}"));
    let cfg = Config::parse(&imported.toml).unwrap_or_else(|e| panic!("{e}\n{}", imported.toml));
    assert_eq!(cfg.workers, 6);
    assert_eq!(cfg.expire_after_days, 30);
    assert_eq!(cfg.default_registry, "docker.io");
    assert_eq!(
        StoreUrl::parse(&cfg.store).unwrap(),
        StoreUrl::Sqlite("/var/lib/shifter/imagegw.sqlite".into())
    );
    assert_eq!(cfg.cache_dir, Path::new("/global/shifter/cache/"));
    assert_eq!(cfg.work_dir, Path::new("/global/shifter/expand/"));
    let x = &cfg.systems["clusterx"];
    assert_eq!(x.image_dir, Path::new("/global/shifter/images"));
    assert_eq!(x.munge_socket, Path::new("/var/run/munge/munge.socket.2"));
    assert_eq!(
        x.admins,
        vec![
            UserSpec::Name("root".into()),
            UserSpec::Name("shifteradm".into())
        ]
    );
    assert_eq!(
        x.import_users,
        vec![UserSpec::Name("alice".into()), UserSpec::Uid(4242)]
    );
    // a single admin given as a string, as Shifter allows
    assert_eq!(
        cfg.systems["testbed"].admins,
        vec![UserSpec::Name("root".into())]
    );
    let site = &cfg.registries["registry.example.org:5000"];
    assert_eq!(
        site.ca_file.as_deref(),
        Some(Path::new("/etc/shifter/site-ca.pem"))
    );
    assert!(cfg.registries["127.0.0.1:5000"].plain_http);
    // nothing to say about Docker Hub: defaults apply
    assert!(!cfg.registries.contains_key("docker.io"));
}

#[test]
fn gateway_keys_without_meaning_are_reported_with_reasons() {
    let imported =
        imagemanager::import(&data("imagemanager.json"), "imagemanager.json", &sqlite()).unwrap();
    for key in [
        "LogLevel",
        "DefaultOstCount",
        "PullUpdateTimeout",
        "MongoDBURI",
        "MongoDB",
        "Platforms.clusterx.usergroupService",
    ] {
        let i = imported
            .ignored
            .iter()
            .find(|i| i.key == key)
            .unwrap_or_else(|| panic!("{key} not reported: {:?}", imported.ignored));
        assert!(i.line > 0, "{i}");
    }
    let log = imported
        .ignored
        .iter()
        .find(|i| i.key == "LogLevel")
        .unwrap();
    assert_eq!(log.line, 3);
    assert!(log.reason.contains("RUST_LOG"));
}

#[test]
fn mongodb_is_refused_without_a_store_and_the_message_says_what_to_use() {
    let err = imagemanager::import(
        &data("imagemanager.json"),
        "imagemanager.json",
        &GatewayOptions::default(),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("line 10: `MongoDBURI`"), "{msg}");
    assert!(
        msg.contains("SQLite") && msg.contains("PostgreSQL"),
        "{msg}"
    );
    assert!(msg.contains("--store"), "{msg}");
}

#[test]
fn remote_platforms_and_other_formats_are_refused() {
    let err =
        imagemanager::import(&data("imagemanager-remote.json"), "im.json", &sqlite()).unwrap_err();
    let ImportError::Refused { refusals, .. } = &err else {
        panic!("{err}")
    };
    let keys: Vec<&str> = refusals.iter().map(|r| r.key.as_str()).collect();
    assert!(keys.contains(&"Platforms.systema.accesstype"), "{err}");
    assert!(keys.contains(&"DefaultImageFormat"), "{err}");
    assert!(err.to_string().contains("ssh"), "{err}");
}

#[test]
fn unknown_keys_and_missing_platforms_are_refused() {
    let err = imagemanager::import("{\"WorkerThreadz\": 3}", "im.json", &sqlite())
        .unwrap_err()
        .to_string();
    assert!(err.contains("`WorkerThreadz`"), "{err}");
    assert!(err.contains("`Platforms`: missing"), "{err}");
    let err = imagemanager::import("{not json", "im.json", &sqlite()).unwrap_err();
    assert!(matches!(err, ImportError::Json { .. }), "{err}");
}
