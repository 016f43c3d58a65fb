//! The HTTP API driven with `oneshot`, Munge and the pull engine replaced by
//! fakes, the store a real (in-memory) SQLite.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::Value;
use shifter_api::record::PullProgress;
use shifter_api::{ImageMeta, ImageRecord, ImageStatus};
use shifter_imagegw::auth::{AuthError, Credential, CredentialDecoder};
use shifter_imagegw::config::SystemConfig;
use shifter_imagegw::engine::{EngineError, ProgressSink, PullEngine, PullSpec, Pulled, Stage};
use shifter_imagegw::state::{AppState, SystemState};
use shifter_imagegw::store::{
    ImageKey, RegistryLogin, SqliteStore, Store, StoreError, StoredImage,
};
use tower::ServiceExt;

const ADMIN: u32 = 500;
const USER1: u32 = 1001;
const USER2: u32 = 1002;
const IMPORTER: u32 = 1003;
const IMPORTER2: u32 = 1004;

/// Credentials are `uid:gid|payload` (`Gw::call` adds the payload of the
/// request to a bare `uid:gid`); `expired`, `replayed` and anything else
/// mimic munged.
struct FakeMunge;

impl CredentialDecoder for FakeMunge {
    fn decode(&self, cred: &str) -> Result<Credential, AuthError> {
        match cred {
            "expired" => Err(AuthError::Expired),
            "replayed" => Err(AuthError::Replayed),
            "down" => Err(AuthError::Unavailable(
                "socket /run/munge/x: refused".into(),
            )),
            c => {
                let (ids, payload) = c.split_once('|').unwrap_or((c, ""));
                let (u, g) = ids
                    .split_once(':')
                    .ok_or_else(|| AuthError::Invalid("unreadable".into()))?;
                Ok(Credential {
                    uid: u.parse().map_err(|_| AuthError::Invalid("uid".into()))?,
                    gid: g.parse().map_err(|_| AuthError::Invalid("gid".into()))?,
                    payload: payload.as_bytes().to_vec(),
                })
            }
        }
    }
}

/// A credential of `uid` bound to one request, as gw-client makes them.
fn bound(uid: u32, method: &str, uri: &str, body: &str) -> String {
    let payload = shifter_api::credential::request_payload(method, uri, body.as_bytes());
    format!("{uid}:{uid}|{payload}")
}

/// Writes a small file as the squashfs; the id is derived from the reference.
#[derive(Default)]
struct FakeEngine {
    calls: AtomicUsize,
    delay: Duration,
    fail: Mutex<Option<EngineError>>,
    seen: Mutex<Vec<PullSpec>>,
    resolves: AtomicUsize,
}

fn id_for(reference: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(reference.as_bytes()))
}

impl PullEngine for FakeEngine {
    fn resolve(&self, spec: &PullSpec) -> Result<Option<String>, EngineError> {
        self.resolves.fetch_add(1, Ordering::SeqCst);
        Ok(Some(id_for(&spec.reference.canonical())))
    }

    fn pull(
        &self,
        spec: &PullSpec,
        staging: &Path,
        progress: &dyn ProgressSink,
    ) -> Result<Pulled, EngineError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.seen.lock().unwrap().push(spec.clone());
        progress.stage(Stage::Pulling);
        progress.bytes(PullProgress {
            bytes_downloaded: 100,
            bytes_total: 200,
            ..PullProgress::default()
        });
        std::thread::sleep(self.delay);
        if let Some(e) = self.fail.lock().unwrap().clone() {
            return Err(e);
        }
        progress.stage(Stage::Conversion);
        let path = staging.join("out.squashfs");
        std::fs::write(&path, b"hsqs-fake-image").unwrap();
        Ok(Pulled {
            meta: ImageMeta {
                id: id_for(&spec.reference.canonical()),
                format: "squashfs".into(),
                itype: "docker".into(),
                env: vec!["PATH=/bin".into()],
                cmd: vec!["/bin/sh".into()],
                workdir: Some("/".into()),
                size: 15,
                ..Default::default()
            },
            squashfs: path,
        })
    }
}

struct Gw {
    state: Arc<AppState>,
    engine: Arc<FakeEngine>,
    images: tempfile::TempDir,
}

fn gateway_with(engine: FakeEngine) -> Gw {
    let images = tempfile::tempdir().unwrap();
    std::fs::set_permissions(images.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg: SystemConfig = toml::from_str(&format!("image_dir = {:?}", images.path())).unwrap();
    let sys = SystemState {
        name: "testbed".into(),
        cfg,
        admins: vec![ADMIN],
        import_users: vec![IMPORTER, IMPORTER2],
        decoder: Arc::new(FakeMunge),
    };
    let engine = Arc::new(engine);
    let store = Arc::new(SqliteStore::in_memory().unwrap());
    let state = Arc::new(AppState::new(vec![sys], store, engine.clone(), 2));
    Gw {
        state,
        engine,
        images,
    }
}

fn gateway() -> Gw {
    gateway_with(FakeEngine::default())
}

const BUSYBOX: &str = "docker/127.0.0.1%3A5000%2Fbusybox%3Alatest";

impl Gw {
    async fn call(
        &self,
        method: &str,
        uri: &str,
        cred: Option<&str>,
        body: &str,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(c) = cred {
            // A bare `uid:gid` is bound to this request; anything else is
            // sent as given (refusal tests).
            let is_ids = c.split_once(':').is_some_and(|(u, g)| {
                u.bytes().all(|b| b.is_ascii_digit()) && g.bytes().all(|b| b.is_ascii_digit())
            });
            let c = if is_ids {
                let payload =
                    shifter_api::credential::request_payload(method, uri, body.as_bytes());
                format!("{c}|{payload}")
            } else {
                c.to_owned()
            };
            req = req.header("authentication", c);
        }
        let resp = shifter_imagegw::app(self.state.clone())
            .oneshot(req.body(Body::from(body.to_owned())).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, v)
    }

    async fn get(&self, uri: &str, uid: u32) -> (StatusCode, Value) {
        self.call("GET", uri, Some(&format!("{uid}:{uid}")), "")
            .await
    }

    async fn pull(&self, path: &str, uid: u32, body: &str) -> (StatusCode, Value) {
        self.call(
            "POST",
            &format!("/api/pull/testbed/{path}/"),
            Some(&format!("{uid}:{uid}")),
            body,
        )
        .await
    }

    /// Polls the pull endpoint until the job is final.
    async fn pull_until_final(&self, path: &str, uid: u32, body: &str) -> ImageRecord {
        for _ in 0..200 {
            let (st, v) = self.pull(path, uid, body).await;
            assert_eq!(st, StatusCode::OK, "{v}");
            let rec: ImageRecord = serde_json::from_value(v).unwrap();
            if rec.status.is_final() && !self.state.jobs.is_running(&self.key(path)).await {
                return rec;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("pull of {path} never finished");
    }

    fn key(&self, path: &str) -> ImageKey {
        let (itype, tag) = path.split_once('/').unwrap();
        let tag = percent_encoding::percent_decode_str(tag)
            .decode_utf8()
            .unwrap();
        let r =
            shifter_api::ImageRef::from_parts(shifter_api::ImageType::parse(itype).unwrap(), &tag)
                .unwrap();
        ImageKey {
            system: "testbed".into(),
            itype: itype.into(),
            tag: r.tag(),
        }
    }

    fn files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.images.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    fn image_file(&self, id: &str, ext: &str) -> PathBuf {
        self.images.path().join(format!("{id}.{ext}"))
    }
}

fn assert_error_body(v: &Value, kind: &str) {
    assert_eq!(v["error"], kind, "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
}

#[tokio::test]
async fn missing_or_bad_credentials_get_401_json() {
    let gw = gateway();
    let uri = format!("/api/lookup/testbed/{BUSYBOX}/");
    for cred in [None, Some("expired"), Some("replayed"), Some("garbage")] {
        let (st, v) = gw.call("GET", &uri, cred, "").await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{cred:?}: {v}");
        assert_error_body(&v, "unauthorized");
    }
    let (_, v) = gw.call("GET", &uri, Some("replayed"), "").await;
    assert!(v["message"].as_str().unwrap().contains("replayed"), "{v}");
    let (_, v) = gw.call("GET", &uri, Some("expired"), "").await;
    assert!(v["message"].as_str().unwrap().contains("expired"), "{v}");
    let text = gw.state.metrics.render();
    for (reason, n) in [
        ("missing", 1),
        ("expired", 2),
        ("replayed", 2),
        ("invalid", 1),
    ] {
        let line = format!("shifter_imagegw_auth_failures_total{{reason=\"{reason}\"}} {n}");
        assert!(text.contains(&line), "{line} in\n{text}");
    }
}

#[tokio::test]
async fn bad_credential_on_unknown_system_is_401_not_404() {
    let gw = gateway();
    let (st, _) = gw
        .call("GET", "/api/list/nosuch/", Some("expired"), "")
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, v) = gw.get("/api/list/nosuch/", USER1).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert!(
        v["message"].as_str().unwrap().contains("testbed"),
        "names the known systems: {v}"
    );
}

#[tokio::test]
async fn munged_down_is_503_without_internals() {
    let gw = gateway();
    let (st, v) = gw.call("GET", "/api/list/testbed/", Some("down"), "").await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        !v["message"].as_str().unwrap().contains("/run/munge"),
        "{v}"
    );
}

#[tokio::test]
async fn pull_reaches_ready_and_publishes_meta_and_image() {
    let gw = gateway();
    let rec = gw.pull_until_final(BUSYBOX, USER1, "").await;
    assert_eq!(rec.status, ImageStatus::Ready, "{rec:?}");
    assert_eq!(rec.id, id_for("127.0.0.1:5000/busybox:latest"));
    assert_eq!(rec.tag, vec!["127.0.0.1:5000/busybox:latest".to_string()]);

    let (st, v) = gw
        .get(&format!("/api/lookup/testbed/{BUSYBOX}/"), USER2)
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let looked: ImageRecord = serde_json::from_value(v).unwrap();
    assert_eq!(looked.id, rec.id);
    assert_eq!(looked.env, vec!["PATH=/bin".to_string()]);
    assert_eq!(looked.cmd, vec!["/bin/sh".to_string()]);

    let meta =
        ImageMeta::from_json(&std::fs::read(gw.image_file(&rec.id, "json")).unwrap()).unwrap();
    assert_eq!(meta.id, rec.id);
    assert_eq!(meta.tags, vec!["127.0.0.1:5000/busybox:latest".to_string()]);
    assert!(meta.acl.is_public());
    let mode = std::fs::metadata(gw.image_file(&rec.id, "squashfs"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644);
    assert_eq!(
        gw.files(),
        vec![format!("{}.json", rec.id), format!("{}.squashfs", rec.id)],
        "no temp files left"
    );

    // By id, as the Slurm plugin pins it.
    let (st, _) = gw
        .get(&format!("/api/lookup/testbed/id/{}/", rec.id), USER2)
        .await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn concurrent_pulls_of_one_tag_run_one_job() {
    let gw = gateway_with(FakeEngine {
        delay: Duration::from_millis(300),
        ..Default::default()
    });
    let mut handles = Vec::new();
    let gw = Arc::new(gw);
    for i in 0..20 {
        let gw = gw.clone();
        handles.push(tokio::spawn(async move {
            gw.pull(BUSYBOX, USER1 + i, "").await
        }));
    }
    for h in handles {
        let (st, v) = h.await.unwrap();
        assert_eq!(st, StatusCode::OK, "{v}");
    }
    let rec = gw.pull_until_final(BUSYBOX, USER1, "").await;
    assert_eq!(rec.status, ImageStatus::Ready);
    assert_eq!(
        gw.engine.calls.load(Ordering::SeqCst),
        1,
        "one job for 20 pulls"
    );
    assert!(gw
        .state
        .metrics
        .render()
        .contains("shifter_imagegw_pull_jobs_started_total 1"));
}

#[tokio::test]
async fn pull_reports_in_flight_status_and_queue_shows_it() {
    let gw = gateway_with(FakeEngine {
        delay: Duration::from_millis(400),
        ..Default::default()
    });
    let (st, v) = gw.pull(BUSYBOX, USER1, "").await;
    assert_eq!(st, StatusCode::OK);
    let rec: ImageRecord = serde_json::from_value(v).unwrap();
    assert!(!rec.status.is_final(), "{rec:?}");
    let (st, v) = gw.get("/api/queue/testbed/", USER2).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["queue"][0]["tag"], "127.0.0.1:5000/busybox:latest", "{v}");
    let (st, v) = gw
        .get(&format!("/api/lookup/testbed/{BUSYBOX}/"), USER1)
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "not READY yet: {v}");
    assert!(v["message"].as_str().unwrap().contains("wait"), "{v}");
    gw.pull_until_final(BUSYBOX, USER1, "").await;
}

#[tokio::test]
async fn acl_image_is_forbidden_and_invisible_to_other_users() {
    let gw = gateway();
    let body = format!(r#"{{"allowed_uids":"{USER1}"}}"#);
    let rec = gw.pull_until_final(BUSYBOX, USER1, &body).await;
    assert_eq!(rec.status, ImageStatus::Ready);
    assert_eq!(rec.user_acl, vec![USER1]);

    let uri = format!("/api/lookup/testbed/{BUSYBOX}/");
    assert_eq!(gw.get(&uri, USER1).await.0, StatusCode::OK);
    let (st, v) = gw.get(&uri, USER2).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    assert_error_body(&v, "forbidden");
    assert_eq!(
        gw.get(&format!("/api/lookup/testbed/id/{}/", rec.id), USER2)
            .await
            .0,
        StatusCode::FORBIDDEN
    );

    let (_, v) = gw.get("/api/list/testbed/", USER1).await;
    assert_eq!(v["list"].as_array().unwrap().len(), 1, "{v}");
    let (_, v) = gw.get("/api/list/testbed/", USER2).await;
    assert_eq!(
        v["list"].as_array().unwrap().len(),
        0,
        "invisible to user2: {v}"
    );

    let meta =
        ImageMeta::from_json(&std::fs::read(gw.image_file(&rec.id, "json")).unwrap()).unwrap();
    assert_eq!(meta.acl.uids, vec![USER1]);
    let mode = std::fs::metadata(gw.image_file(&rec.id, "squashfs"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let (st, _) = gw.pull(BUSYBOX, USER2, "").await;
    assert_eq!(st, StatusCode::FORBIDDEN, "user2 cannot re-pull it public");
}

#[tokio::test]
async fn acl_lists_that_are_not_numbers_are_400() {
    let gw = gateway();
    let (st, v) = gw.pull(BUSYBOX, USER1, r#"{"allowed_uids":"alice"}"#).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(v["message"].as_str().unwrap().contains("alice"), "{v}");
    let (st, _) = gw.pull(BUSYBOX, USER1, "{not json").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn only_admins_expire_and_expiry_removes_files_and_record() {
    let gw = gateway();
    let rec = gw.pull_until_final(BUSYBOX, USER1, "").await;
    let uri = format!("/api/expire/testbed/{BUSYBOX}/");
    let (st, v) = gw.get(&uri, USER1).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    assert!(gw.image_file(&rec.id, "squashfs").exists());
    for admin_only in ["/api/autoexpire/testbed/", "/api/metrics/testbed/"] {
        assert_eq!(
            gw.get(admin_only, USER1).await.0,
            StatusCode::FORBIDDEN,
            "{admin_only}"
        );
    }
    let (st, v) = gw.get("/api/metrics/testbed/", ADMIN).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["images"], 1, "{v}");

    let (st, v) = gw.get(&uri, ADMIN).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "EXPIRED");
    assert!(gw.files().is_empty(), "{:?}", gw.files());
    assert_eq!(
        gw.get(&format!("/api/lookup/testbed/{BUSYBOX}/"), USER1)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(gw.get(&uri, ADMIN).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn autoexpire_removes_images_not_pulled_recently() {
    let gw = gateway();
    let rec = gw.pull_until_final(BUSYBOX, USER1, "").await;
    let key = gw.key(BUSYBOX);
    let mut row = gw.state.store.get(&key).await.unwrap().unwrap();
    row.last_pull -= 91 * 86400;
    gw.state.store.put(&row).await.unwrap();
    let (st, v) = gw.get("/api/autoexpire/testbed/", ADMIN).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        v["expired"][0], "docker:127.0.0.1:5000/busybox:latest",
        "{v}"
    );
    assert!(!gw.image_file(&rec.id, "squashfs").exists());
}

#[tokio::test]
async fn unknown_tag_fails_with_a_message_naming_tag_and_registry() {
    let engine = FakeEngine::default();
    *engine.fail.lock().unwrap() = Some(EngineError::NotFound("manifest unknown".into()));
    let gw = gateway_with(engine);
    let path = "docker/127.0.0.1%3A5000%2Fbusybox%3Anosuchtag";
    let rec = gw.pull_until_final(path, USER1, "").await;
    assert_eq!(rec.status, ImageStatus::Failure);
    assert!(
        rec.status_message.contains("nosuchtag"),
        "{}",
        rec.status_message
    );
    assert!(
        rec.status_message.contains("127.0.0.1:5000"),
        "{}",
        rec.status_message
    );
    let (st, v) = gw.get(&format!("/api/lookup/testbed/{path}/"), USER1).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert!(
        v["message"].as_str().unwrap().contains("manifest unknown"),
        "{v}"
    );
    assert!(
        gw.files().is_empty(),
        "failed pull leaves nothing: {:?}",
        gw.files()
    );
}

#[tokio::test]
async fn internal_failures_show_no_internals() {
    let engine = FakeEngine::default();
    *engine.fail.lock().unwrap() = Some(EngineError::Internal(
        "write /srv/secret/blob: ENOSPC".into(),
    ));
    let gw = gateway_with(engine);
    let rec = gw.pull_until_final(BUSYBOX, USER1, "").await;
    assert_eq!(rec.status, ImageStatus::Failure);
    assert!(
        !rec.status_message.contains("/srv/secret"),
        "{}",
        rec.status_message
    );
    assert!(
        rec.status_message.contains("administrator"),
        "{}",
        rec.status_message
    );
}

#[tokio::test]
async fn bad_references_and_types_are_400() {
    let gw = gateway();
    for path in ["docker/UPPER%3Acase", "weird/x", "custom/..%2Fetc"] {
        let (st, v) = gw.get(&format!("/api/lookup/testbed/{path}/"), USER1).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{path}: {v}");
        assert_error_body(&v, "bad_request");
    }
    let (st, v) = gw.pull("custom/site", USER1, "").await;
    assert_eq!(
        st,
        StatusCode::BAD_REQUEST,
        "custom images are imported: {v}"
    );
}

#[tokio::test]
async fn restart_marks_interrupted_jobs_failed_and_removes_leftovers() {
    let gw = gateway();
    let key = gw.key(BUSYBOX);
    let mut row = StoredImage::new_job(key.clone(), Default::default(), 1);
    row.status = ImageStatus::Conversion;
    row.replica = shifter_imagegw::publish::instance_name();
    gw.state.store.put(&row).await.unwrap();
    let staging = shifter_imagegw::publish::new_staging(gw.images.path()).unwrap();
    std::fs::write(staging.join("half.squashfs"), b"partial").unwrap();

    shifter_imagegw::jobs::recover(&gw.state).await.unwrap();
    let row = gw.state.store.get(&key).await.unwrap().unwrap();
    assert_eq!(row.status, ImageStatus::Failure);
    assert_eq!(row.status_message, shifter_imagegw::jobs::RESTART_MESSAGE);
    assert!(gw.files().is_empty(), "{:?}", gw.files());
}

#[tokio::test]
async fn import_publishes_custom_image_for_import_users_only() {
    let gw = gateway();
    let src_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(src_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let src = src_dir.path().join("site.sqfs");
    let mut bytes = vec![0u8; 96];
    bytes[0..4].copy_from_slice(b"hsqs");
    bytes[12..16].copy_from_slice(&131072u32.to_le_bytes());
    bytes[20..22].copy_from_slice(&1u16.to_le_bytes());
    bytes[22..24].copy_from_slice(&17u16.to_le_bytes());
    bytes[28..30].copy_from_slice(&4u16.to_le_bytes());
    bytes[40..48].copy_from_slice(&200u64.to_le_bytes());
    bytes.resize(200, 7);
    std::fs::write(&src, &bytes).unwrap();
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o644)).unwrap();
    let body = format!(
        r#"{{"filepath":{:?},"format":"squashfs"}}"#,
        src.to_str().unwrap()
    );
    let uri = "/api/doimport/testbed/custom/site-img/";
    let (st, _) = gw
        .call("POST", uri, Some(&format!("{USER1}:{USER1}")), &body)
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, v) = gw
        .call("POST", uri, Some(&format!("{IMPORTER}:{IMPORTER}")), &body)
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let rec: ImageRecord = serde_json::from_value(v).unwrap();
    use sha2::Digest;
    assert_eq!(rec.id, hex::encode(sha2::Sha256::digest(&bytes)));
    assert_eq!(
        std::fs::read(gw.image_file(&rec.id, "squashfs")).unwrap(),
        bytes
    );
    let (st, _) = gw.get("/api/lookup/testbed/custom/site-img/", USER2).await;
    assert_eq!(st, StatusCode::OK);

    let junk = src_dir.path().join("junk");
    std::fs::write(&junk, b"not a squashfs").unwrap();
    std::fs::set_permissions(&junk, std::fs::Permissions::from_mode(0o644)).unwrap();
    let body = format!(r#"{{"filepath":{:?}}}"#, junk.to_str().unwrap());
    let (st, v) = gw
        .call(
            "POST",
            "/api/doimport/testbed/custom/junk/",
            Some(&format!("{IMPORTER}:{IMPORTER}")),
            &body,
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["message"].as_str().unwrap().contains("squashfs"), "{v}");
}

#[tokio::test]
async fn openapi_documents_every_route_and_every_documented_route_answers() {
    let gw = gateway();
    let (st, doc) = gw.get("/openapi.json", USER1).await;
    assert_eq!(st, StatusCode::OK);
    let paths = doc["paths"].as_object().unwrap();
    let mut documented = Vec::new();
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    documented.sort();
    let mut table: Vec<(String, String)> = shifter_imagegw::openapi::ROUTES
        .iter()
        .map(|r| (r.method.to_owned(), r.path.to_owned()))
        .collect();
    table.sort();
    assert_eq!(documented, table, "the document is the route table");

    for (method, path) in &documented {
        let concrete = path
            .replace("{system}", "testbed")
            .replace("{type}", "docker")
            .replace("{tag}", "busybox");
        let (st, v) = gw
            .call(method, &concrete, Some(&format!("{ADMIN}:{ADMIN}")), "")
            .await;
        let fallback = v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("no such endpoint"));
        assert!(
            !fallback && st != StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}: {st} {v}"
        );
        let other = if method == "GET" { "POST" } else { "GET" };
        let (st, _) = gw
            .call(other, &concrete, Some(&format!("{ADMIN}:{ADMIN}")), "")
            .await;
        assert_eq!(
            st,
            StatusCode::METHOD_NOT_ALLOWED,
            "{other} {path} must not be routed"
        );
        let params = shifter_imagegw::openapi::path_params(path);
        let op = &paths[path][method.to_lowercase()];
        assert_eq!(
            op["parameters"].as_array().unwrap().len(),
            params.len(),
            "{path}"
        );
    }
    let (st, v) = gw.call("GET", "/api/nothing/here", None, "").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_error_body(&v, "not_found");
}

#[tokio::test]
async fn every_route_but_healthz_and_metrics_refuses_a_request_without_credential() {
    let gw = gateway();
    let mut public = Vec::new();
    for r in shifter_imagegw::openapi::ROUTES {
        let concrete = r
            .path
            .replace("{system}", "testbed")
            .replace("{type}", "docker")
            .replace("{tag}", "busybox");
        let (st, v) = gw.call(r.method, &concrete, None, "").await;
        if st == StatusCode::UNAUTHORIZED {
            assert_error_body(&v, "unauthorized");
        } else {
            public.push(r.path);
        }
        let documented_public = r.access == shifter_imagegw::openapi::Access::Public;
        assert_eq!(
            documented_public,
            st != StatusCode::UNAUTHORIZED,
            "{} {}",
            r.method,
            r.path
        );
    }
    assert_eq!(public, ["/healthz", "/metrics"]);
}

#[tokio::test]
async fn queue_lists_a_private_pull_only_to_its_acl_and_admins() {
    let gw = gateway_with(FakeEngine {
        delay: Duration::from_millis(400),
        ..Default::default()
    });
    let body = format!(r#"{{"allowed_uids":"{USER1}"}}"#);
    let (st, v) = gw.pull(BUSYBOX, USER1, &body).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, v) = gw.call("GET", "/api/queue/testbed/", None, "").await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");
    let (_, v) = gw.get("/api/queue/testbed/", USER2).await;
    assert_eq!(v["queue"], serde_json::json!([]), "hidden from user2: {v}");
    for uid in [USER1, ADMIN] {
        let (_, v) = gw.get("/api/queue/testbed/", uid).await;
        assert_eq!(
            v["queue"][0]["tag"], "127.0.0.1:5000/busybox:latest",
            "{uid}: {v}"
        );
    }
    gw.pull_until_final(BUSYBOX, USER1, &body).await;
}

#[tokio::test]
async fn a_credential_without_the_gateway_payload_is_refused_with_401() {
    let gw = gateway();
    let other = format!(
        "{USER1}:{USER1}|slurm v1 GET /api/list/testbed/ {}",
        shifter_api::credential::body_sha256(b"")
    );
    for (cred, needle) in [
        (format!("{USER1}:{USER1}|"), "no payload"),
        (other, "another service"),
        (
            format!("{USER1}:{USER1}|shifter-imagegw v1 GET"),
            "malformed",
        ),
    ] {
        let (st, v) = gw.call("GET", "/api/list/testbed/", Some(&cred), "").await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{cred}: {v}");
        assert_error_body(&v, "unauthorized");
        assert!(
            v["message"].as_str().unwrap().contains(needle),
            "{cred}: {v}"
        );
    }
    assert!(gw
        .state
        .metrics
        .render()
        .contains("shifter_imagegw_auth_failures_total{reason=\"unbound\"} 3"));
}

#[tokio::test]
async fn a_credential_for_another_method_path_query_or_body_is_refused_with_401() {
    let gw = gateway();
    let list = "/api/list/testbed/";
    let pull = format!("/api/pull/testbed/{BUSYBOX}/");
    let lookup = format!("/api/lookup/testbed/{BUSYBOX}/");
    // (signed for: method, uri, body) → (sent: method, uri, body)
    let cases = [
        (
            ("GET", list, ""),
            ("POST", "/api/login/testbed/".to_owned(), ""),
        ),
        (("GET", list, ""), ("GET", format!("{list}?x=1"), "")),
        (
            ("GET", lookup.as_str(), ""),
            ("GET", "/api/lookup/testbed/docker/other/".to_owned(), ""),
        ),
        (
            ("POST", pull.as_str(), r#"{"allowed_uids":"1001"}"#),
            ("POST", pull.clone(), ""),
        ),
        (
            ("POST", pull.as_str(), ""),
            ("POST", pull.clone(), r#"{"allowed_uids":"1001"}"#),
        ),
    ];
    for ((sm, su, sb), (m, u, b)) in cases {
        let cred = bound(USER1, sm, su, sb);
        let (st, v) = gw.call(m, &u, Some(&cred), b).await;
        assert_eq!(
            st,
            StatusCode::UNAUTHORIZED,
            "{sm} {su} used for {m} {u}: {v}"
        );
        let msg = v["message"].as_str().unwrap();
        assert!(
            msg.contains("cannot be used for") || msg.contains("body does not match"),
            "{msg}"
        );
    }
    // A body past the cap is refused before any handler sees it.
    let huge = "x".repeat(shifter_imagegw::auth::MAX_BODY + 1);
    let login = "/api/login/testbed/";
    let (st, v) = gw
        .call(
            "POST",
            login,
            Some(&bound(USER1, "POST", login, &huge)),
            &huge,
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("larger than"),
        "{v}"
    );
    // And the one it was made for works.
    let (st, v) = gw
        .call("GET", list, Some(&bound(USER1, "GET", list, "")), "")
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn health_and_prometheus_metrics_are_public() {
    let gw = gateway();
    let (st, v) = gw.call("GET", "/healthz", None, "").await;
    assert_eq!((st, v.as_str()), (StatusCode::OK, Some("ok\n")));
    gw.pull_until_final(BUSYBOX, USER1, "").await;
    let (st, v) = gw.call("GET", "/metrics", None, "").await;
    assert_eq!(st, StatusCode::OK);
    let text = v.as_str().unwrap();
    assert!(
        text.contains("shifter_imagegw_pulls_total{status=\"READY\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("route=\"/api/pull/{system}/{type}/{tag}/\""),
        "{text}"
    );
    assert!(
        text.contains("shifter_imagegw_bytes_published_total 15"),
        "{text}"
    );
}

#[tokio::test]
async fn registry_login_is_used_for_that_users_pulls_only() {
    let gw = gateway();
    let body = r#"{"registry":"127.0.0.1:5000","username":"alice","password":"s3cret"}"#;
    let (st, v) = gw
        .call(
            "POST",
            "/api/login/testbed/",
            Some(&format!("{USER1}:{USER1}")),
            body,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(
        !v.to_string().contains("s3cret"),
        "the password is not echoed: {v}"
    );
    gw.pull_until_final(BUSYBOX, USER1, "").await;
    let seen = gw.engine.seen.lock().unwrap().clone();
    let creds = seen[0].credentials.as_ref().expect("user1's login used");
    assert_eq!(
        (creds.username.as_str(), creds.password.as_str()),
        ("alice", "s3cret")
    );
    assert!(!format!("{creds:?}").contains("s3cret"));

    let other = "docker/127.0.0.1%3A5000%2Fbusybox%3Aoci";
    gw.pull_until_final(other, USER2, "").await;
    let seen = gw.engine.seen.lock().unwrap().clone();
    assert!(seen[1].credentials.is_none(), "user2 has no login");

    let (st, _) = gw
        .call(
            "POST",
            "/api/login/testbed/",
            Some(&format!("{USER1}:{USER1}")),
            r#"{"registry":"a b","username":"x","password":"y"}"#,
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn shutdown_marks_pulls_still_running_after_the_grace_failed() {
    let gw = gateway_with(FakeEngine {
        delay: Duration::from_millis(1500),
        ..Default::default()
    });
    let (st, _) = gw.pull(BUSYBOX, USER1, "").await;
    assert_eq!(st, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        gw.files().iter().any(|f| f.starts_with(".staging")),
        "{:?}",
        gw.files()
    );
    shifter_imagegw::jobs::drain(&gw.state, Duration::from_millis(200)).await;
    let row = gw.state.store.get(&gw.key(BUSYBOX)).await.unwrap().unwrap();
    assert_eq!(row.status, ImageStatus::Failure);
    assert_eq!(row.status_message, shifter_imagegw::jobs::SHUTDOWN_MESSAGE);
    assert!(gw.files().is_empty(), "staging removed: {:?}", gw.files());
}

#[tokio::test]
async fn shutdown_waits_for_pulls_that_finish_within_the_grace() {
    let gw = gateway_with(FakeEngine {
        delay: Duration::from_millis(200),
        ..Default::default()
    });
    gw.pull(BUSYBOX, USER1, "").await;
    shifter_imagegw::jobs::drain(&gw.state, Duration::from_secs(10)).await;
    let row = gw.state.store.get(&gw.key(BUSYBOX)).await.unwrap().unwrap();
    assert_eq!(row.status, ImageStatus::Ready);
}

#[tokio::test]
async fn repull_of_an_unchanged_tag_skips_conversion_and_applies_a_new_acl() {
    let gw = gateway();
    let first = gw.pull_until_final(BUSYBOX, USER1, "").await;
    assert_eq!(first.status, ImageStatus::Ready);
    let age = |gw: &Gw| {
        let key = gw.key(BUSYBOX);
        let state = gw.state.clone();
        async move {
            let mut row = state.store.get(&key).await.unwrap().unwrap();
            row.updated -= 60;
            state.store.put(&row).await.unwrap();
        }
    };
    age(&gw).await;
    let again = gw.pull_until_final(BUSYBOX, USER1, "").await;
    assert_eq!(
        (again.status, again.id.as_str()),
        (ImageStatus::Ready, first.id.as_str())
    );
    assert_eq!(
        gw.engine.calls.load(Ordering::SeqCst),
        1,
        "no second download/conversion"
    );
    assert_eq!(gw.engine.resolves.load(Ordering::SeqCst), 1);

    age(&gw).await;
    let body = format!(r#"{{"allowed_uids":"{USER1}"}}"#);
    let private = gw.pull_until_final(BUSYBOX, USER1, &body).await;
    assert_eq!(private.status, ImageStatus::Ready);
    assert_eq!(gw.engine.calls.load(Ordering::SeqCst), 1);
    let meta =
        ImageMeta::from_json(&std::fs::read(gw.image_file(&first.id, "json")).unwrap()).unwrap();
    assert_eq!(meta.acl.uids, vec![USER1], "the new ACL reached <id>.json");
    let mode = std::fs::metadata(gw.image_file(&first.id, "squashfs"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        gw.get(&format!("/api/lookup/testbed/{BUSYBOX}/"), USER2)
            .await
            .0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn autoexpire_removes_old_images_no_tag_points_at_and_keeps_current_ones() {
    let gw = gateway();
    let current = gw.pull_until_final(BUSYBOX, USER1, "").await;
    let orphan = "0f".repeat(32);
    let long_ago = std::time::SystemTime::now() - Duration::from_secs(100 * 86400);
    for ext in ["json", "squashfs"] {
        let p = gw.image_file(&orphan, ext);
        std::fs::write(&p, b"old").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
    }
    let (st, v) = gw.get("/api/autoexpire/testbed/", ADMIN).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        v["expired"],
        serde_json::json!([format!("id:{orphan}")]),
        "{v}"
    );
    assert!(!gw.image_file(&orphan, "squashfs").exists());
    assert!(
        gw.image_file(&current.id, "squashfs").exists(),
        "the current image stays"
    );
}

/// A store whose database is gone.
struct BrokenStore;

fn broken() -> StoreError {
    StoreError::Open {
        path: "/var/lib/secret/imagegw.sqlite".into(),
        source: std::io::Error::other("disk I/O error"),
    }
}

#[async_trait::async_trait]
impl Store for BrokenStore {
    async fn get(&self, _: &ImageKey) -> Result<Option<StoredImage>, StoreError> {
        Err(broken())
    }
    async fn put(&self, _: &StoredImage) -> Result<(), StoreError> {
        Err(broken())
    }
    async fn delete(&self, _: &ImageKey) -> Result<bool, StoreError> {
        Err(broken())
    }
    async fn list(&self, _: &str) -> Result<Vec<StoredImage>, StoreError> {
        Err(broken())
    }
    async fn with_id(&self, _: &str, _: &str) -> Result<Vec<StoredImage>, StoreError> {
        Err(broken())
    }
    async fn fail_in_flight(&self, _: &str, _: &str) -> Result<Vec<ImageKey>, StoreError> {
        Err(broken())
    }
    async fn put_login(&self, _: &RegistryLogin) -> Result<(), StoreError> {
        Err(broken())
    }
    async fn get_login(
        &self,
        _: &str,
        _: u32,
        _: &str,
    ) -> Result<Option<RegistryLogin>, StoreError> {
        Err(broken())
    }
}

#[tokio::test]
async fn server_errors_carry_no_internals_and_health_reports_them() {
    let mut gw = gateway();
    let sys = SystemState {
        name: "testbed".into(),
        cfg: toml::from_str(&format!("image_dir = {:?}", gw.images.path())).unwrap(),
        admins: vec![ADMIN],
        import_users: vec![],
        decoder: Arc::new(FakeMunge),
    };
    gw.state = Arc::new(AppState::new(
        vec![sys],
        Arc::new(BrokenStore),
        gw.engine.clone(),
        1,
    ));
    for (method, uri) in [
        ("GET", "/api/list/testbed/".to_string()),
        ("GET", format!("/api/lookup/testbed/{BUSYBOX}/")),
        ("POST", format!("/api/pull/testbed/{BUSYBOX}/")),
    ] {
        let (st, v) = gw
            .call(method, &uri, Some(&format!("{USER1}:{USER1}")), "")
            .await;
        assert_eq!(st, StatusCode::INTERNAL_SERVER_ERROR, "{uri}: {v}");
        assert_error_body(&v, "internal");
        let text = v.to_string();
        assert!(
            !text.contains("/var/lib") && !text.contains("disk I/O"),
            "{uri}: {text}"
        );
    }
    let (st, v) = gw.call("GET", "/healthz", None, "").await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{v}");
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let gw = gateway();
    for uri in ["/healthz", "/api/list/testbed/", "/nowhere"] {
        let resp = shifter_imagegw::app(gw.state.clone())
            .oneshot(Request::builder().uri(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let id = resp
            .headers()
            .get("x-request-id")
            .map(|v| v.to_str().unwrap().to_owned());
        assert!(id.is_some_and(|i| i.len() >= 32), "{uri}");
    }
}

/// Makes the last pull of `path` look older than the "recent pull" window, so
/// the next pull is a real re-pull.
async fn age(gw: &Gw, key: &ImageKey) {
    let mut row = gw.state.store.get(key).await.unwrap().unwrap();
    row.updated -= 60;
    gw.state.store.put(&row).await.unwrap();
}

fn file_meta(gw: &Gw, id: &str) -> ImageMeta {
    ImageMeta::from_json(&std::fs::read(gw.image_file(id, "json")).unwrap()).unwrap()
}

fn file_mode(gw: &Gw, id: &str) -> u32 {
    std::fs::metadata(gw.image_file(id, "squashfs"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test]
async fn another_users_private_repull_of_a_public_tag_is_refused_and_the_tag_stays_public() {
    let gw = gateway();
    let first = gw.pull_until_final(BUSYBOX, USER1, "").await;
    assert_eq!(first.owner, Some(USER1), "the first puller owns the tag");
    age(&gw, &gw.key(BUSYBOX)).await;

    let takeover = format!(r#"{{"allowed_uids":"{USER2}"}}"#);
    let (st, v) = gw.pull(BUSYBOX, USER2, &takeover).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    assert_error_body(&v, "forbidden");
    let msg = v["message"].as_str().unwrap();
    assert!(msg.contains("only its owner or an admin"), "{msg}");
    assert!(msg.contains("uid 1001"), "names the owner: {msg}");
    assert!(msg.contains("--private"), "says how to get a copy: {msg}");

    // A plain re-pull by someone else refreshes the image and keeps the ACL.
    let again = gw.pull_until_final(BUSYBOX, USER2, "").await;
    assert_eq!(again.status, ImageStatus::Ready);
    assert!(again.user_acl.is_empty() && again.group_acl.is_empty());
    assert_eq!(
        again.owner,
        Some(USER1),
        "a refresh does not move the owner"
    );

    let uri = format!("/api/lookup/testbed/{BUSYBOX}/");
    for uid in [USER1, USER2] {
        let (st, v) = gw.get(&uri, uid).await;
        assert_eq!(st, StatusCode::OK, "uid {uid}: {v}");
    }
    assert!(file_meta(&gw, &first.id).acl.is_public());
    assert_eq!(
        file_mode(&gw, &first.id),
        0o644,
        "jobs pinned to the id keep working"
    );

    // The owner still decides.
    age(&gw, &gw.key(BUSYBOX)).await;
    let mine = format!(r#"{{"allowed_uids":"{USER1}"}}"#);
    let private = gw.pull_until_final(BUSYBOX, USER1, &mine).await;
    assert_eq!(private.user_acl, vec![USER1]);
}

#[tokio::test]
async fn a_member_of_a_group_acl_cannot_widen_it() {
    let gw = gateway();
    let group = r#"{"allowed_gids":"50"}"#;
    let rec = gw.pull_until_final(BUSYBOX, USER1, group).await;
    assert_eq!(
        (rec.user_acl.clone(), rec.group_acl.clone()),
        (vec![USER1], vec![50])
    );
    age(&gw, &gw.key(BUSYBOX)).await;

    let member = format!("{USER2}:50");
    let pull_uri = format!("/api/pull/testbed/{BUSYBOX}/");
    let (st, v) = gw
        .call(
            "POST",
            &pull_uri,
            Some(&member),
            r#"{"allowed_gids":"50,51"}"#,
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "another group added: {v}");
    let (st, v) = gw
        .call(
            "POST",
            &pull_uri,
            Some(&member),
            &format!(r#"{{"allowed_uids":"{USER2}"}}"#),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "owner removed: {v}");

    // A plain re-pull by the member is a refresh, not "make it public".
    let (st, v) = gw.call("POST", &pull_uri, Some(&member), "").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    for _ in 0..200 {
        if !gw.state.jobs.is_running(&gw.key(BUSYBOX)).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let uri = format!("/api/lookup/testbed/{BUSYBOX}/");
    let (st, v) = gw.call("GET", &uri, Some(&member), "").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["groupACL"], serde_json::json!([50]), "{v}");
    assert_eq!(v["userACL"], serde_json::json!([USER1]), "{v}");
    assert_eq!(
        gw.get(&uri, 1005).await.0,
        StatusCode::FORBIDDEN,
        "still closed to others"
    );
    assert_eq!(file_mode(&gw, &rec.id), 0o600);
    let meta = file_meta(&gw, &rec.id);
    assert_eq!((meta.acl.uids, meta.acl.gids), (vec![USER1], vec![50]));
}

#[tokio::test]
async fn a_private_copy_shadows_the_public_tag_for_its_owner_only() {
    let gw = gateway();
    let public = gw.pull_until_final(BUSYBOX, USER1, "").await;
    let copy = gw
        .pull_until_final(BUSYBOX, USER2, r#"{"private":true}"#)
        .await;
    assert_eq!(copy.status, ImageStatus::Ready, "{copy:?}");
    assert_eq!(
        copy.user_acl,
        vec![USER2],
        "private to its owner by default"
    );
    assert_eq!(copy.owner, Some(USER2));

    let uri = format!("/api/lookup/testbed/{BUSYBOX}/");
    let (_, v) = gw.get(&uri, USER2).await;
    assert_eq!(v["private_copy"], true, "{v}");
    assert_eq!(v["userACL"], serde_json::json!([USER2]), "{v}");
    let (st, v) = gw.get(&uri, USER1).await;
    assert_eq!(st, StatusCode::OK);
    assert!(v.get("private_copy").is_none(), "{v}");
    assert_eq!(
        v["userACL"],
        serde_json::json!([]),
        "the public tag is untouched: {v}"
    );
    // Same content: the file stays public while a public tag points at it.
    assert_eq!(copy.id, public.id);
    assert!(file_meta(&gw, &public.id).acl.is_public());

    let (_, v) = gw.get("/api/list/testbed/", USER2).await;
    assert_eq!(v["list"].as_array().unwrap().len(), 2, "{v}");
    let (_, v) = gw.get("/api/list/testbed/", USER1).await;
    assert_eq!(
        v["list"].as_array().unwrap().len(),
        1,
        "not others' copies: {v}"
    );
}

#[tokio::test]
async fn expiring_a_tag_recomputes_the_image_file_from_the_tags_that_remain() {
    let gw = gateway();
    let public = gw.pull_until_final(BUSYBOX, USER1, "").await;
    gw.pull_until_final(BUSYBOX, USER2, r#"{"private":true}"#)
        .await;
    assert_eq!(file_mode(&gw, &public.id), 0o644);

    let (st, v) = gw
        .get(&format!("/api/expire/testbed/{BUSYBOX}/"), ADMIN)
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let meta = file_meta(&gw, &public.id);
    assert_eq!(
        meta.acl.uids,
        vec![USER2],
        "only the private copy is left: {meta:?}"
    );
    assert_eq!(file_mode(&gw, &public.id), 0o600);
    let uri = format!("/api/lookup/testbed/{BUSYBOX}/");
    assert_eq!(gw.get(&uri, USER2).await.0, StatusCode::OK);
    assert_eq!(gw.get(&uri, USER1).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        gw.get(&format!("/api/lookup/testbed/id/{}/", public.id), USER1)
            .await
            .0,
        StatusCode::FORBIDDEN
    );
}

/// A minimal squashfs 4.0 superblock padded to its `bytes_used`; `fill`
/// makes distinct contents.
fn fake_squashfs(dir: &Path, name: &str, fill: u8) -> PathBuf {
    let mut bytes = vec![0u8; 96];
    bytes[0..4].copy_from_slice(b"hsqs");
    bytes[12..16].copy_from_slice(&131072u32.to_le_bytes());
    bytes[20..22].copy_from_slice(&1u16.to_le_bytes());
    bytes[22..24].copy_from_slice(&17u16.to_le_bytes());
    bytes[28..30].copy_from_slice(&4u16.to_le_bytes());
    bytes[40..48].copy_from_slice(&200u64.to_le_bytes());
    bytes.resize(200, fill);
    let p = dir.join(name);
    std::fs::write(&p, &bytes).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    p
}

#[tokio::test]
async fn an_importer_cannot_overwrite_another_importers_custom_image() {
    let gw = gateway();
    let src = tempfile::tempdir().unwrap();
    std::fs::set_permissions(src.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let import = |uid: u32, fill: u8| {
        let file = fake_squashfs(src.path(), &format!("{uid}-{fill}.sqfs"), fill);
        let body = format!(r#"{{"filepath":{:?}}}"#, file.to_str().unwrap());
        let gw = &gw;
        async move {
            gw.call(
                "POST",
                "/api/doimport/testbed/custom/site-env/",
                Some(&format!("{uid}:{uid}")),
                &body,
            )
            .await
        }
    };
    let (st, v) = import(IMPORTER, 1).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let original: ImageRecord = serde_json::from_value(v).unwrap();
    assert_eq!(original.owner, Some(IMPORTER));

    let (st, v) = import(IMPORTER2, 2).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("only its owner or an admin"),
        "{v}"
    );
    let (_, v) = gw.get("/api/lookup/testbed/custom/site-env/", USER1).await;
    assert_eq!(
        v["id"],
        original.id.as_str(),
        "the first import is still served"
    );

    let (st, v) = import(IMPORTER, 3).await;
    assert_eq!(st, StatusCode::OK, "its owner replaces it: {v}");
    let (st, v) = import(ADMIN, 4).await;
    assert_eq!(st, StatusCode::OK, "an admin replaces it: {v}");
    assert_eq!(v["owner"], IMPORTER, "and the owner stays: {v}");
}
