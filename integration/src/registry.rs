//! A small, verifying reader of the local registry for tests: fetches manifests
//! with the right `Accept` header and checks every digest.

use sha2::{Digest, Sha256};

/// Every manifest type a registry may answer with; without this header a v2
/// registry down-converts to schema1 or refuses OCI indexes.
pub const MANIFEST_ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";

pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A fetched manifest: its bytes, the media type the registry reported and its digest header.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub body: Vec<u8>,
    pub media_type: String,
    pub digest_header: Option<String>,
}

pub fn get_manifest(registry: &str, repo: &str, reference: &str) -> Result<Fetched, String> {
    let url = format!("http://{registry}/v2/{repo}/manifests/{reference}");
    let resp = ureq::get(&url)
        .set("Accept", MANIFEST_ACCEPT)
        .timeout(std::time::Duration::from_secs(20))
        .call()
        .map_err(|e| format!("GET {url}: {e}"))?;
    let media_type = resp.header("Content-Type").unwrap_or_default().to_owned();
    let digest_header = resp.header("Docker-Content-Digest").map(str::to_owned);
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut resp.into_reader(), &mut body).map_err(|e| e.to_string())?;
    Ok(Fetched {
        body,
        media_type,
        digest_header,
    })
}

pub fn get_blob(registry: &str, repo: &str, digest: &str) -> Result<Vec<u8>, String> {
    let url = format!("http://{registry}/v2/{repo}/blobs/{digest}");
    let resp = ureq::get(&url)
        .timeout(std::time::Duration::from_secs(60))
        .call()
        .map_err(|e| format!("GET {url}: {e}"))?;
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut resp.into_reader(), &mut body).map_err(|e| e.to_string())?;
    Ok(body)
}
