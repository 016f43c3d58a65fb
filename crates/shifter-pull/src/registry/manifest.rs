//! Manifest documents: telling indexes from image manifests, refusing schema1,
//! picking the platform, and checking that layers are ones we can convert.

use oci_spec::image::{ImageIndex, ImageManifest};

use super::error::RegistryError;
use crate::config::Platform;
use crate::digest::Sha256Digest;

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

#[derive(Debug)]
pub enum Document {
    Index(Box<ImageIndex>),
    Manifest(Box<ImageManifest>),
}

pub fn parse(bytes: &[u8], content_type: &str, reference: &str) -> Result<Document, RegistryError> {
    let malformed = |why: String| RegistryError::Malformed {
        what: format!("manifest of {reference}"),
        why,
    };
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string()))?;
    if v.get("schemaVersion").and_then(|s| s.as_u64()) == Some(1)
        || content_type.starts_with("application/vnd.docker.distribution.manifest.v1")
    {
        return Err(RegistryError::Schema1 {
            reference: reference.to_owned(),
        });
    }
    let media_type = v
        .get("mediaType")
        .and_then(|m| m.as_str())
        .filter(|m| !m.is_empty())
        .unwrap_or(content_type)
        .to_owned();
    let is_index = match media_type.as_str() {
        DOCKER_LIST | OCI_INDEX => true,
        DOCKER_MANIFEST | OCI_MANIFEST => false,
        // OCI allows omitting mediaType; decide by shape.
        _ if v.get("manifests").is_some() => true,
        _ if v.get("layers").is_some() => false,
        other => {
            return Err(RegistryError::UnsupportedMediaType {
                what: reference.to_owned(),
                media_type: other.to_owned(),
            })
        }
    };
    if is_index {
        serde_json::from_value(v)
            .map(|i| Document::Index(Box::new(i)))
            .map_err(|e| malformed(e.to_string()))
    } else {
        serde_json::from_value(v)
            .map(|m| Document::Manifest(Box::new(m)))
            .map_err(|e| malformed(e.to_string()))
    }
}

pub fn platform_string(p: &Platform) -> String {
    match &p.variant {
        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
        None => format!("{}/{}", p.os, p.architecture),
    }
}

/// The digest of the manifest for `want` in an index. An exact variant match wins;
/// an entry without variant is accepted when nothing matches exactly.
pub fn select_platform(
    index: &ImageIndex,
    want: &Platform,
    reference: &str,
) -> Result<(Sha256Digest, u64), RegistryError> {
    let mut exact = None;
    let mut loose = None;
    let mut available = Vec::new();
    for m in index.manifests() {
        let Some(p) = m.platform() else { continue };
        let os = p.os().to_string();
        let arch = p.architecture().to_string();
        let variant = p.variant().clone();
        if os == "unknown" {
            continue; // attestations and signatures, not images
        }
        available.push(platform_string(&Platform {
            os: os.clone(),
            architecture: arch.clone(),
            variant: variant.clone(),
        }));
        if os != want.os || arch != want.architecture {
            continue;
        }
        if variant == want.variant {
            exact.get_or_insert(m);
        } else if variant.is_none() || want.variant.is_none() {
            loose.get_or_insert(m);
        }
    }
    let chosen = exact.or(loose).ok_or_else(|| RegistryError::NoPlatform {
        reference: reference.to_owned(),
        wanted: platform_string(want),
        available: if available.is_empty() {
            "nothing".into()
        } else {
            available.join(", ")
        },
    })?;
    let digest =
        Sha256Digest::parse(chosen.digest().as_ref()).map_err(|e| RegistryError::Malformed {
            what: format!("index of {reference}"),
            why: e.to_string(),
        })?;
    Ok((digest, chosen.size()))
}

/// A layer of the chosen manifest, checked to be a tar we can read.
#[derive(Debug, Clone)]
pub struct LayerRef {
    pub digest: Sha256Digest,
    pub size: u64,
    pub media_type: String,
}

pub fn layers(manifest: &ImageManifest, reference: &str) -> Result<Vec<LayerRef>, RegistryError> {
    manifest
        .layers()
        .iter()
        .map(|l| {
            let media_type = l.media_type().to_string();
            let ok = media_type.starts_with("application/vnd.oci.image.layer.")
                || media_type.starts_with("application/vnd.docker.image.rootfs.");
            if !ok || media_type.contains("encrypted") {
                return Err(RegistryError::UnsupportedMediaType {
                    what: format!("a layer of {reference}"),
                    media_type,
                });
            }
            let digest =
                Sha256Digest::parse(l.digest().as_ref()).map_err(|e| RegistryError::Malformed {
                    what: format!("manifest of {reference}"),
                    why: e.to_string(),
                })?;
            Ok(LayerRef {
                digest,
                size: l.size(),
                media_type,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index_json(entries: &[(&str, &str, Option<&str>, char)]) -> Vec<u8> {
        let ms: Vec<serde_json::Value> = entries
            .iter()
            .map(|(os, arch, variant, fill)| {
                let mut p = serde_json::json!({"os": os, "architecture": arch});
                if let Some(v) = variant {
                    p["variant"] = (*v).into();
                }
                serde_json::json!({"mediaType": OCI_MANIFEST, "size": 7, "digest": format!("sha256:{}", fill.to_string().repeat(64)), "platform": p})
            })
            .collect();
        serde_json::to_vec(
            &serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": ms}),
        )
        .unwrap()
    }

    fn want(arch: &str, variant: Option<&str>) -> Platform {
        Platform {
            os: "linux".into(),
            architecture: arch.into(),
            variant: variant.map(str::to_owned),
        }
    }

    fn pick(doc: &[u8], w: &Platform) -> Result<String, RegistryError> {
        let Document::Index(i) = parse(doc, "", "x").unwrap() else {
            panic!("index expected")
        };
        select_platform(&i, w, "x").map(|(d, _)| d.hex()[..1].to_owned())
    }

    #[test]
    fn platform_is_chosen_by_os_arch_and_variant() {
        let doc = index_json(&[
            ("linux", "arm", Some("v6"), 'a'),
            ("linux", "arm", Some("v7"), 'b'),
            ("linux", "amd64", None, 'c'),
            ("unknown", "unknown", None, 'd'),
        ]);
        assert_eq!(pick(&doc, &want("amd64", None)).unwrap(), "c");
        assert_eq!(pick(&doc, &want("arm", Some("v7"))).unwrap(), "b");
        let e = pick(&doc, &want("arm64", None)).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, RegistryError::NoPlatform { .. }));
        assert!(
            msg.contains("linux/arm/v7") && !msg.contains("unknown"),
            "{msg}"
        );
    }

    #[test]
    fn entry_without_variant_matches_a_variant_request() {
        let doc = index_json(&[("linux", "arm64", None, 'e')]);
        assert_eq!(pick(&doc, &want("arm64", Some("v8"))).unwrap(), "e");
    }

    #[test]
    fn schema1_is_refused_clearly() {
        let doc = br#"{"schemaVersion": 1, "name": "x", "tag": "latest", "fsLayers": []}"#;
        let e = parse(
            doc,
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
            "busybox:old",
        )
        .unwrap_err();
        assert!(matches!(e, RegistryError::Schema1 { .. }));
        assert!(e.to_string().contains("schema 1"));
    }

    #[test]
    fn docker_and_oci_manifests_parse_and_foreign_artifacts_are_refused() {
        let m = serde_json::json!({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 2, "digest": format!("sha256:{}", "1".repeat(64))},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 3, "digest": format!("sha256:{}", "2".repeat(64))}]});
        let Document::Manifest(doc) = parse(&serde_json::to_vec(&m).unwrap(), "", "x").unwrap()
        else {
            panic!()
        };
        let ls = layers(&doc, "x").unwrap();
        assert_eq!((ls.len(), ls[0].size), (1, 3));
        let mut helm = m.clone();
        helm["layers"][0]["mediaType"] =
            "application/vnd.cncf.helm.chart.content.v1.tar+gzip".into();
        let Document::Manifest(doc) = parse(&serde_json::to_vec(&helm).unwrap(), "", "x").unwrap()
        else {
            panic!()
        };
        assert!(matches!(
            layers(&doc, "x"),
            Err(RegistryError::UnsupportedMediaType { .. })
        ));
    }
}
