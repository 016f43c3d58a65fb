//! The gateway's JSON: image records (Shifter-compatible field names), the pull
//! request body and the error body.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Pull status machine: `PENDING → PULLING → CONVERSION → TRANSFER → READY | FAILURE`,
/// and `EXPIRED` once removed. Names are Shifter's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ImageStatus {
    Pending,
    Pulling,
    Conversion,
    Transfer,
    Ready,
    Failure,
    Expired,
}

impl ImageStatus {
    pub const ALL: [ImageStatus; 7] = [
        ImageStatus::Pending,
        ImageStatus::Pulling,
        ImageStatus::Conversion,
        ImageStatus::Transfer,
        ImageStatus::Ready,
        ImageStatus::Failure,
        ImageStatus::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ImageStatus::Pending => "PENDING",
            ImageStatus::Pulling => "PULLING",
            ImageStatus::Conversion => "CONVERSION",
            ImageStatus::Transfer => "TRANSFER",
            ImageStatus::Ready => "READY",
            ImageStatus::Failure => "FAILURE",
            ImageStatus::Expired => "EXPIRED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// True once the job will not change state by itself.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            ImageStatus::Ready | ImageStatus::Failure | ImageStatus::Expired
        )
    }
}

impl fmt::Display for ImageStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One image as the gateway reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// Image id; empty until the manifest is known.
    pub id: String,
    pub system: String,
    pub itype: String,
    pub tag: Vec<String>,
    pub status: ImageStatus,
    #[serde(default)]
    pub status_message: String,
    #[serde(rename = "userACL", default)]
    pub user_acl: Vec<u32>,
    #[serde(rename = "groupACL", default)]
    pub group_acl: Vec<u32>,
    #[serde(rename = "ENV", default)]
    pub env: Vec<String>,
    #[serde(rename = "ENTRY", default)]
    pub entry: Vec<String>,
    #[serde(rename = "CMD", default)]
    pub cmd: Vec<String>,
    #[serde(rename = "WORKDIR", default)]
    pub workdir: String,
    #[serde(rename = "LABELS", default)]
    pub labels: BTreeMap<String, String>,
    /// Seconds since the epoch of the last successful pull.
    #[serde(default)]
    pub last_pull: i64,
    /// Squashfs size in bytes.
    #[serde(default)]
    pub size: u64,
    /// Pull progress in bytes (downloaded, converted); informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<PullProgress>,
    /// Uid of the tag's owner (its first puller or importer), who alone with
    /// the admins may change its ACL; none for tags from before owners were
    /// recorded, which the admins own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<u32>,
    /// True for a user's private copy (`shifterimg pull --private`): it shadows
    /// the shared tag for its owner only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub private_copy: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullProgress {
    pub bytes_downloaded: u64,
    /// Compressed bytes of every layer (known from the manifest).
    pub bytes_total: u64,
    pub bytes_converted: u64,
    /// Layer bytes (as stored, compressed) the conversion will read, known when it
    /// starts; `bytes_converted` counts them. It grows once if the image needs the
    /// two-pass fallback (0 before conversion; older gateways never send it).
    #[serde(default)]
    pub bytes_to_convert: u64,
}

/// `GET /api/list/{system}/`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageList {
    pub list: Vec<ImageRecord>,
}

/// Optional body of `POST /api/pull/...`: comma-separated uid and gid lists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_uids: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_gids: Option<String>,
    /// Pull into the caller's own namespace (a private copy) instead of the
    /// shared tag; older gateways refuse the field rather than ignore it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub private: bool,
}

/// Every gateway error: `{"error": "<kind>", "message": "<what to do>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiErrorBody {
    pub error: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_uses_shifter_field_names() {
        let r = ImageRecord {
            id: "x".into(),
            system: "testbed".into(),
            itype: "docker".into(),
            tag: vec!["docker.io/library/ubuntu:24.04".into()],
            status: ImageStatus::Ready,
            status_message: String::new(),
            user_acl: vec![1],
            group_acl: vec![],
            env: vec!["A=1".into()],
            entry: vec![],
            cmd: vec!["/bin/sh".into()],
            workdir: "/".into(),
            labels: BTreeMap::new(),
            last_pull: 0,
            size: 5,
            progress: None,
            owner: Some(1),
            private_copy: false,
        };
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        for k in [
            "userACL",
            "groupACL",
            "ENV",
            "ENTRY",
            "CMD",
            "WORKDIR",
            "LABELS",
            "last_pull",
        ] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
        assert_eq!(v["status"], "READY");
        let back: ImageRecord = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn status_names_parse_back() {
        for s in ImageStatus::ALL {
            assert_eq!(ImageStatus::parse(s.as_str()), Some(s));
        }
        assert!(ImageStatus::Failure.is_final() && !ImageStatus::Pulling.is_final());
    }
}
