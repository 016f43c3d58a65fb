//! Manifests and indexes come from registries we do not trust. The first byte picks
//! the Content-Type the registry claimed; the rest is the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shifter_api::Platform;
use shifter_pull::registry::manifest::{self, Document};

const TYPES: [&str; 6] = [
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/json",
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let content_type = TYPES[sel as usize % TYPES.len()];
    match manifest::parse(body, content_type, "fuzz/image:latest") {
        Ok(Document::Index(index)) => {
            for want in [
                Platform {
                    os: "linux".into(),
                    architecture: "amd64".into(),
                    variant: None,
                },
                Platform {
                    os: "linux".into(),
                    architecture: "arm".into(),
                    variant: Some("v7".into()),
                },
            ] {
                let _ = manifest::select_platform(&index, &want, "fuzz/image:latest");
            }
        }
        Ok(Document::Manifest(m)) => {
            let _ = manifest::layers(&m, "fuzz/image:latest");
        }
        Err(_) => {}
    }
});
