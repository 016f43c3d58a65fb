//! `<id>.json`: the metadata the gateway publishes beside every squashfs, and the
//! only thing the runtime reads about an image besides the image itself.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// os/architecture/variant, as in the OCI image index.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// Who may use an image. Both lists empty means public.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageAcl {
    #[serde(default)]
    pub uids: Vec<u32>,
    #[serde(default)]
    pub gids: Vec<u32>,
}

impl ImageAcl {
    pub fn is_public(&self) -> bool {
        self.uids.is_empty() && self.gids.is_empty()
    }

    /// True when the user (by uid or any of their groups) is admitted.
    pub fn admits(&self, uid: u32, gids: &[u32]) -> bool {
        self.is_public() || self.uids.contains(&uid) || gids.iter().any(|g| self.gids.contains(g))
    }
}

/// The contents of `<id>.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageMeta {
    /// The image id (hex sha256 of the platform manifest, or of the squashfs for imports).
    pub id: String,
    /// Always `squashfs` for now; present so other formats can be refused clearly.
    pub format: String,
    /// `docker` or `custom`.
    pub itype: String,
    /// References that resolved to this id when it was published.
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub cmd: Vec<String>,
    #[serde(default)]
    pub workdir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub platform: Platform,
    /// Layer digests, base layer first.
    #[serde(default)]
    pub layers: Vec<String>,
    /// Size of the squashfs in bytes.
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub converter_version: String,
    #[serde(default)]
    pub acl: ImageAcl,
}

impl ImageMeta {
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    pub fn to_json(&self) -> String {
        // Serialising a struct of strings, numbers and maps cannot fail.
        serde_json::to_string_pretty(self).expect("ImageMeta serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acl_admits_by_uid_or_group() {
        let acl = ImageAcl {
            uids: vec![1001],
            gids: vec![50],
        };
        assert!(acl.admits(1001, &[]));
        assert!(acl.admits(7, &[3, 50]));
        assert!(!acl.admits(1002, &[1002]));
        assert!(ImageAcl::default().admits(1, &[]));
    }

    #[test]
    fn meta_round_trips_and_refuses_unknown_fields() {
        let m = ImageMeta {
            id: "a".repeat(64),
            format: "squashfs".into(),
            itype: "docker".into(),
            env: vec!["PATH=/bin".into()],
            ..Default::default()
        };
        let back = ImageMeta::from_json(m.to_json().as_bytes()).unwrap();
        assert_eq!(back, m);
        let mut v: serde_json::Value = serde_json::from_str(&m.to_json()).unwrap();
        v["surprise"] = 1.into();
        assert!(ImageMeta::from_json(v.to_string().as_bytes()).is_err());
    }
}
