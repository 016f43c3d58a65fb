//! Image reference syntax, compatible with Shifter:
//! `docker:[registry[:port]/]repo[:tag|@sha256:…]`, `id:<hex>`, `custom:<name>`,
//! and a bare `repo[:tag]` meaning the default type (docker).

use std::fmt;

use thiserror::Error;

/// Docker Hub, as registries name it on the wire.
pub const DOCKER_HUB: &str = "docker.io";
const DEFAULT_TAG: &str = "latest";

/// Longest `registry/repository` Docker accepts (its `NameTotalLengthMax`).
pub const MAX_NAME_LEN: usize = 255;
/// Longest tag of the OCI distribution spec (`[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`).
pub const MAX_TAG_LEN: usize = 128;
/// How much of a refused reference an error repeats: enough to recognise it,
/// never the whole of a hostile 60 KB string (errors reach logs and replies).
const QUOTE_MAX: usize = 80;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum RefError {
    #[error("empty image reference: give one such as docker:ubuntu:24.04")]
    Empty,
    #[error("unknown image type {0:?} in {1:?}: use docker:, custom: or id:")]
    UnknownType(String, String),
    #[error("invalid image id {0:?}: an id is 64 lowercase hex digits (see `shifterimg lookup`)")]
    BadId(String),
    #[error("invalid custom image name {0:?}: use letters, digits, '.', '_' and '-' only")]
    BadCustomName(String),
    #[error("invalid docker reference {reference:?}: {why}")]
    BadDocker {
        /// The reference, cut to its first characters when long.
        reference: String,
        why: &'static str,
    },
}

/// `s`, or its first characters and the length when it is too long to repeat.
fn quote(s: &str) -> String {
    if s.len() <= QUOTE_MAX {
        return s.to_owned();
    }
    let mut end = QUOTE_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}

/// The three kinds of image a user can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ImageType {
    Docker,
    Custom,
    Id,
}

impl ImageType {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageType::Docker => "docker",
            ImageType::Custom => "custom",
            ImageType::Id => "id",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "docker" => Some(ImageType::Docker),
            "custom" => Some(ImageType::Custom),
            "id" => Some(ImageType::Id),
            _ => None,
        }
    }
}

impl fmt::Display for ImageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A content-addressed image id: the sha256 of the chosen platform manifest, in hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageId(String);

impl ImageId {
    pub fn parse(s: &str) -> Result<Self, RefError> {
        let hex = s.strip_prefix("sha256:").unwrap_or(s);
        if hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(ImageId(hex.to_owned()))
        } else {
            Err(RefError::BadId(s.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// File name of the squashfs in an image directory.
    pub fn squashfs_name(&self) -> String {
        format!("{}.squashfs", self.0)
    }

    /// File name of the metadata beside the squashfs.
    pub fn meta_name(&self) -> String {
        format!("{}.json", self.0)
    }
}

impl fmt::Display for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A parsed Docker/OCI reference, normalised the way registries do.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DockerRef {
    /// `docker.io` for Docker Hub, else `host[:port]`.
    pub registry: String,
    /// Repository path, with `library/` for bare Docker Hub names.
    pub repository: String,
    /// Tag; `latest` when neither tag nor digest was given.
    pub tag: Option<String>,
    /// `sha256:<hex>` when pinned by digest.
    pub digest: Option<String>,
}

impl DockerRef {
    pub fn parse(s: &str) -> Result<Self, RefError> {
        let bad = |why| RefError::BadDocker {
            reference: quote(s),
            why,
        };
        if s.is_empty() {
            return Err(RefError::Empty);
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("whitespace and control characters are not allowed"));
        }
        let (name_tag, digest) = match s.split_once('@') {
            Some((n, d)) => {
                let hex = d
                    .strip_prefix("sha256:")
                    .ok_or_else(|| bad("a digest must look like @sha256:<64 hex digits>"))?;
                ImageId::parse(hex)
                    .map_err(|_| bad("a digest must look like @sha256:<64 hex digits>"))?;
                (n, Some(d.to_owned()))
            }
            None => (s, None),
        };
        // A ':' after the last '/' separates the tag; one before it is a registry port.
        let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_tag[last_slash..].rfind(':') {
            Some(i) => {
                let (n, t) = name_tag.split_at(last_slash + i);
                (n, Some(t[1..].to_owned()))
            }
            None => (name_tag, None),
        };
        if let Some(t) = &tag {
            if !tag_ok(t) {
                return Err(bad(
                    "a tag is up to 128 of [A-Za-z0-9_.-], not starting with '.' or '-'",
                ));
            }
        }
        // Checked before anything else of the name, so a huge name costs no
        // more than its length.
        if name.len() > MAX_NAME_LEN {
            return Err(bad(
                "the name (registry and repository) is longer than 255 characters",
            ));
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
                (first.to_owned(), rest.to_owned())
            }
            _ => (DOCKER_HUB.to_owned(), name.to_owned()),
        };
        if !registry_ok(&registry) {
            return Err(bad(
                "a registry is a host name or IP address with an optional :port",
            ));
        }
        if repository.is_empty() {
            return Err(bad("the repository name is missing"));
        }
        if !repository.split('/').all(component_ok) {
            return Err(bad(
                "repository path components are lowercase letters and digits, joined by '.', '_', '__' or dashes",
            ));
        }
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        let tag = match (&tag, &digest) {
            (None, None) => Some(DEFAULT_TAG.to_owned()),
            _ => tag,
        };
        Ok(DockerRef {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The form used as a key by the gateway: `registry/repo:tag` or `registry/repo@digest`.
    pub fn canonical(&self) -> String {
        let mut s = format!("{}/{}", self.registry, self.repository);
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }

    /// What a registry's manifest endpoint takes: the digest if pinned, else the tag.
    pub fn manifest_reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or(DEFAULT_TAG)
    }
}

/// The OCI distribution spec's tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
fn tag_ok(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_TAG_LEN
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c))
}

/// One repository path component of the OCI distribution spec:
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn component_ok(c: &str) -> bool {
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let b = c.as_bytes();
    if b.is_empty() || !alnum(&b[0]) || !alnum(&b[b.len() - 1]) {
        return false;
    }
    // Runs of separators between alphanumerics: ".", "_", "__" or any dashes.
    let mut i = 0;
    while i < b.len() {
        if alnum(&b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(&b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let dashes = sep.bytes().all(|x| x == b'-');
        if !(sep == "." || sep == "_" || sep == "__" || dashes) {
            return false;
        }
    }
    true
}

/// `host[:port]` as references name registries: DNS labels of letters, digits
/// and inner dashes, or a bracketed IPv6 address, and a port of 1 to 65535.
/// Nothing else may reach the URL the registry client builds from it.
fn registry_ok(r: &str) -> bool {
    let (host, port) = if let Some(rest) = r.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            p => match p.strip_prefix(':') {
                Some(p) => ("", Some(p)),
                None => return false,
            },
        }
    } else {
        match r.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (r, None),
        }
    };
    if let Some(p) = port {
        let ok = !p.is_empty()
            && p.len() <= 5
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u32>().is_ok_and(|n| (1..=65535).contains(&n));
        if !ok {
            return false;
        }
    }
    if r.starts_with('[') {
        return true;
    }
    let label_ok = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b.len() <= 63
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
    };
    !host.is_empty() && host.split('.').all(label_ok)
}

/// `5000/app:1` after `localhost:`: the colon was a registry port, not a type.
fn is_port_then_path(rest: &str) -> bool {
    matches!(rest.split_once('/'), Some((port, _)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
}

/// Any image a user can name on the command line.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ImageRef {
    Docker(DockerRef),
    Custom(String),
    Id(ImageId),
}

impl ImageRef {
    /// Parses `type:value`, treating a reference without a known type prefix as `default_type`.
    pub fn parse_with_default(s: &str, default_type: ImageType) -> Result<Self, RefError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(RefError::Empty);
        }
        let (ty, rest) = match s.split_once(':') {
            Some((t, rest)) => match ImageType::parse(t) {
                Some(ty) => (ty, rest),
                None if t.contains(['/', '.'])
                    || !rest.contains(':')
                    || is_port_then_path(rest) =>
                {
                    (default_type, s)
                }
                // `foo:bar:baz` where foo is not a type: refuse rather than guess.
                None => return Err(RefError::UnknownType(t.to_owned(), s.to_owned())),
            },
            None => (default_type, s),
        };
        Self::from_parts(ty, rest)
    }

    pub fn parse(s: &str) -> Result<Self, RefError> {
        Self::parse_with_default(s, ImageType::Docker)
    }

    /// Builds a reference from the gateway's `{type}` and `{tag}` path segments.
    pub fn from_parts(ty: ImageType, value: &str) -> Result<Self, RefError> {
        match ty {
            ImageType::Docker => DockerRef::parse(value).map(ImageRef::Docker),
            ImageType::Id => ImageId::parse(value).map(ImageRef::Id),
            ImageType::Custom => {
                let ok = !value.is_empty()
                    && value.len() <= 200
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                    && !value.starts_with('.');
                if ok {
                    Ok(ImageRef::Custom(value.to_owned()))
                } else {
                    Err(RefError::BadCustomName(value.to_owned()))
                }
            }
        }
    }

    pub fn image_type(&self) -> ImageType {
        match self {
            ImageRef::Docker(_) => ImageType::Docker,
            ImageRef::Custom(_) => ImageType::Custom,
            ImageRef::Id(_) => ImageType::Id,
        }
    }

    /// The tag part as the gateway stores it (canonical for docker).
    pub fn tag(&self) -> String {
        match self {
            ImageRef::Docker(d) => d.canonical(),
            ImageRef::Custom(n) => n.clone(),
            ImageRef::Id(id) => id.to_string(),
        }
    }

    /// The `{type}/{tag}` part of a gateway URL, with the tag percent-encoded.
    pub fn url_path(&self) -> String {
        let tag = self.tag();
        let enc = percent_encoding::utf8_percent_encode(&tag, percent_encoding::NON_ALPHANUMERIC);
        format!("{}/{}", self.image_type(), enc)
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.image_type(), self.tag())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docker(s: &str) -> DockerRef {
        match ImageRef::parse(s).unwrap() {
            ImageRef::Docker(d) => d,
            other => panic!("expected docker ref, got {other:?}"),
        }
    }

    #[test]
    fn bare_name_is_docker_hub_library_latest() {
        let d = docker("ubuntu");
        assert_eq!(d.canonical(), "docker.io/library/ubuntu:latest");
    }

    #[test]
    fn typed_and_untyped_forms_agree() {
        assert_eq!(docker("docker:ubuntu:24.04"), docker("ubuntu:24.04"));
        assert_eq!(
            docker("ubuntu:24.04").canonical(),
            "docker.io/library/ubuntu:24.04"
        );
    }

    #[test]
    fn registry_with_port_is_not_a_tag() {
        let d = docker("docker:127.0.0.1:5000/busybox");
        assert_eq!(d.registry, "127.0.0.1:5000");
        assert_eq!(d.repository, "busybox");
        assert_eq!(d.tag.as_deref(), Some("latest"));
        let d = docker("127.0.0.1:5000/team/app:v1");
        assert_eq!(d.canonical(), "127.0.0.1:5000/team/app:v1");
        let d = docker("localhost/app:1");
        assert_eq!(d.registry, "localhost");
        let d = docker("localhost:5000/app:1");
        assert_eq!(d.canonical(), "localhost:5000/app:1");
    }

    #[test]
    fn digest_pins_without_default_tag() {
        let dg = format!("sha256:{}", "a".repeat(64));
        let d = docker(&format!("busybox@{dg}"));
        assert_eq!(d.tag, None);
        assert_eq!(d.manifest_reference(), dg);
        assert!(ImageRef::parse("busybox@sha256:abc").is_err());
    }

    #[test]
    fn ids_and_custom_names_are_validated() {
        let id = "0123456789abcdef".repeat(4);
        assert!(matches!(
            ImageRef::parse(&format!("id:{id}")),
            Ok(ImageRef::Id(_))
        ));
        assert!(matches!(ImageRef::parse("id:xyz"), Err(RefError::BadId(_))));
        assert!(matches!(
            ImageRef::parse("custom:my-site_img.1"),
            Ok(ImageRef::Custom(_))
        ));
        assert!(matches!(
            ImageRef::parse("custom:../etc"),
            Err(RefError::BadCustomName(_))
        ));
    }

    #[test]
    fn hostile_and_malformed_references_are_refused() {
        for bad in [
            "",
            "  ",
            "Ubuntu",
            "ubuntu:",
            "ubuntu: x",
            "a/../b",
            "ubuntu:-x",
            "foo:bar:baz",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn references_past_the_oci_limits_are_refused_at_parse_with_the_limit_named() {
        let long_tag = format!("busybox:{}", "a".repeat(129));
        let e = ImageRef::parse(&long_tag).unwrap_err().to_string();
        assert!(e.contains("up to 128"), "{e}");
        assert!(ImageRef::parse(&format!("busybox:{}", "a".repeat(128))).is_ok());
        assert!(
            ImageRef::parse("busybox:_under").is_ok(),
            "a tag may start with '_'"
        );

        // 255 characters of registry and repository are fine, 256 are not.
        let name = |n: usize| format!("reg.example/{}", "a".repeat(n - "reg.example/".len()));
        assert!(ImageRef::parse(&format!("{}:1", name(255))).is_ok());
        let e = ImageRef::parse(&format!("{}:1", name(256)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("longer than 255"), "{e}");

        // A hostile 60 KB name is refused, and the error does not repeat it.
        let huge = format!("{}:latest", "a".repeat(60 << 10));
        let e = ImageRef::parse(&huge).unwrap_err().to_string();
        assert!(e.len() < 400, "the error quotes only the start: {e}");
        assert!(e.contains("61447 bytes"), "{e}");
    }

    #[test]
    fn repository_components_follow_the_oci_grammar() {
        for ok in ["a", "a.b", "a_b", "a__b", "a---b", "team/app-1", "x9/y.z_w"] {
            assert!(DockerRef::parse(ok).is_ok(), "{ok:?} is a valid repository");
        }
        for bad in ["a.", "a..b", "a___b", "_a", "a/-b", "a/b_", "a._b", "a//b"] {
            assert!(DockerRef::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn registries_are_host_and_port_and_nothing_that_could_bend_a_url() {
        for ok in [
            "reg.example:5000/a",
            "127.0.0.1:5000/a",
            "[::1]:5000/a",
            "[fe80::1]/a",
            "localhost/a",
            "my-reg.example.org/a/b",
        ] {
            assert!(DockerRef::parse(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "reg.example:0/a",
            "reg.example:65536/a",
            "reg.example:/a",
            "reg.example:http/a",
            "-reg.example/a",
            "reg..example/a",
            "reg.example?x=/a",
            "reg.example#/a",
            "[::1/a",
            "[nothex]:5000/a",
            "[::1]x/a",
        ] {
            assert!(DockerRef::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn url_path_percent_encodes_the_tag() {
        let r = ImageRef::parse("127.0.0.1:5000/busybox:latest").unwrap();
        assert_eq!(
            r.url_path(),
            "docker/127%2E0%2E0%2E1%3A5000%2Fbusybox%3Alatest"
        );
    }

    #[test]
    fn display_round_trips() {
        for s in ["docker:ubuntu:24.04", "custom:site", "127.0.0.1:5000/x/y:z"] {
            let r = ImageRef::parse(s).unwrap();
            assert_eq!(ImageRef::parse(&r.to_string()).unwrap(), r);
        }
    }
}
