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

/// Credentials are `uid:gid`; `expired`, `replayed` and anything else mimic munged.
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
                let (u, g) = c
                    .split_once(':')
                    .ok_or_else(|| AuthError::Invalid("unreadable".into()))?;
                Ok(Credential {
                    uid: u.parse().map_err(|_| AuthError::Invalid("uid".into()))?,
                    gid: g.parse().map_err(|_| AuthError::Invalid("gid".into()))?,
                })
            }
        }
    }
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
        import_users: vec![IMPORTER],
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
    let (st, v) = gw.call("GET", "/api/queue/testbed/", None, "").await;
    assert_eq!(st, StatusCode::OK, "queue needs no credential");
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
    row.owner = shifter_imagegw::publish::instance_name();
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
    let (st, doc) = gw.call("GET", "/openapi.json", None, "").await;
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
