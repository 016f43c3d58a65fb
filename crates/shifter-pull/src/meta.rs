//! The image config (Env, Entrypoint, Cmd, …) as `<id>.json` metadata.

use oci_spec::image::ImageConfiguration;
use shifter_api::{DockerRef, ImageMeta, Platform};

/// Recorded in every `<id>.json`, so images made by a buggy converter can be found.
pub const CONVERTER_VERSION: &str = concat!("shifter-pull ", env!("CARGO_PKG_VERSION"));

pub fn image_meta(
    id: &str,
    reference: &DockerRef,
    config: &ImageConfiguration,
    layer_digests: Vec<String>,
) -> ImageMeta {
    let c = config.config().clone().unwrap_or_default();
    ImageMeta {
        id: id.to_owned(),
        format: "squashfs".into(),
        itype: "docker".into(),
        tags: vec![reference.canonical()],
        env: c.env().clone().unwrap_or_default(),
        entrypoint: c.entrypoint().clone().unwrap_or_default(),
        cmd: c.cmd().clone().unwrap_or_default(),
        workdir: c.working_dir().clone().filter(|w| !w.is_empty()),
        user: c.user().clone().filter(|u| !u.is_empty()),
        labels: c.labels().clone().unwrap_or_default().into_iter().collect(),
        platform: Platform {
            os: config.os().to_string(),
            architecture: config.architecture().to_string(),
            variant: config.variant().clone(),
        },
        layers: layer_digests,
        size: 0,
        created: config.created().clone(),
        converter_version: CONVERTER_VERSION.into(),
        acl: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_fields_become_image_meta() {
        let cfg: ImageConfiguration = serde_json::from_value(serde_json::json!({
            "architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
            "config": {"Env": ["PATH=/bin", "A=1"], "Entrypoint": ["/bin/echo"], "Cmd": ["hi"],
                       "WorkingDir": "/data", "User": "1000:1000", "Labels": {"k": "v"}},
            "rootfs": {"type": "layers", "diff_ids": []}, "history": []
        }))
        .unwrap();
        let r = DockerRef::parse("127.0.0.1:5000/layered:latest").unwrap();
        let m = image_meta(&"a".repeat(64), &r, &cfg, vec!["sha256:x".into()]);
        assert_eq!(m.env, vec!["PATH=/bin", "A=1"]);
        assert_eq!(
            (m.entrypoint.as_slice(), m.cmd.as_slice()),
            (&["/bin/echo".to_owned()][..], &["hi".to_owned()][..])
        );
        assert_eq!(m.workdir.as_deref(), Some("/data"));
        assert_eq!(m.user.as_deref(), Some("1000:1000"));
        assert_eq!(m.labels["k"], "v");
        assert_eq!(m.platform.architecture, "amd64");
        assert_eq!(m.tags, vec!["127.0.0.1:5000/layered:latest"]);
        assert_eq!(m.layers, vec!["sha256:x"]);
    }

    #[test]
    fn a_config_with_only_the_required_fields_is_accepted() {
        // The OCI image spec makes `history` and `config` optional; some builders
        // (buildah --omit-history, hand-made images) leave them out.
        let cfg: ImageConfiguration = serde_json::from_value(serde_json::json!({
            "architecture": "arm64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []}
        }))
        .unwrap();
        let r = DockerRef::parse("127.0.0.1:5000/bare:latest").unwrap();
        let m = image_meta(&"b".repeat(64), &r, &cfg, vec![]);
        assert!(m.env.is_empty() && m.entrypoint.is_empty() && m.cmd.is_empty());
        assert_eq!(m.platform.architecture, "arm64");
    }
}
