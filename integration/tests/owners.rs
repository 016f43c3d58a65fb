//! End-to-end: tag owners (issue 15), with the cluster's two real users and
//! real munged. The takeover test goes through the cluster's own gateway,
//! `shifterimg` and `srun --image`, as a user would; the others start their
//! own gateway (see `gateway.rs`) and speak its API directly.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use shifter_integration::slurm::serial;
use shifter_integration::{gid_of, image_path, registry, uid_of, Gateway, GatewayOptions, Testbed};

const T: Duration = Duration::from_secs(60);

/// Pushes busybox:oci's manifest with an annotation `mark` under `tag`: the
/// same `mark` gives the same manifest (so the same image id) under every tag,
/// a new one an image no other test shares.
fn push_copy(tb: &Testbed, mark: &str, tag: &str) {
    let m = registry::get_manifest(tb.registry(), "busybox", "oci").unwrap();
    let mut v: Value = serde_json::from_slice(&m.body).unwrap();
    v["annotations"] = json!({ "org.shifter-rs.test": mark });
    let url = format!("http://{}/v2/busybox/manifests/{tag}", tb.registry());
    ureq::put(&url)
        .set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        .send_string(&v.to_string())
        .unwrap_or_else(|e| panic!("PUT {url}: {e}"));
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

fn file_acl(dir: &Path, id: &str) -> Value {
    let meta: Value =
        serde_json::from_slice(&std::fs::read(dir.join(format!("{id}.json"))).unwrap()).unwrap();
    meta["acl"].clone()
}

fn own_gateway(name: &str) -> Option<Gateway> {
    let tb = Testbed::get()?;
    Some(Gateway::start(
        &tb,
        &format!("owners-{name}"),
        GatewayOptions::default(),
    ))
}

#[test]
fn another_users_private_pull_of_a_public_tag_is_refused_and_the_tag_stays_usable_by_all() {
    let Some(tb) = Testbed::get() else { return };
    let _serial = serial();
    if tb.gateway().is_none() {
        return;
    }
    let (user, user2) = (tb.user().to_owned(), tb.user2().to_owned());
    let tag = format!("owners-takeover-{}", std::process::id());
    push_copy(&tb, &tag, &tag);
    let image = format!("docker:{}/busybox:{tag}", tb.registry());

    tb.shifterimg(&user, &["pull", &image]).assert_ok();
    let r = tb.shifterimg(&user2, &["pull", "--user", &user2, &image]);
    r.assert_failed();
    assert!(
        r.stderr.contains("only its owner or an admin"),
        "the refusal names the owner rule: {r}"
    );
    assert!(r.stderr.contains("--private"), "and how to get a copy: {r}");

    let id = tb
        .shifterimg(&user, &["lookup", &image])
        .assert_ok()
        .stdout
        .trim()
        .to_owned();
    assert_eq!(id.len(), 64, "{id}");
    let id2 = tb
        .shifterimg(&user2, &["lookup", &image])
        .assert_ok()
        .stdout
        .trim()
        .to_owned();
    assert_eq!(id2, id, "both users still get the public image");
    let dir = Path::new(tb.var("SHIFTER_IMAGE_DIR"));
    assert_eq!(mode(&dir.join(format!("{id}.squashfs"))), 0o644);
    assert_eq!(file_acl(dir, &id), json!({"uids": [], "gids": []}));
    let r = tb.run_as(&user, &["srun", &format!("--image={image}"), "true"], T);
    r.assert_ok();

    // A plain re-pull by the other user refreshes the image and keeps it public.
    tb.shifterimg(&user2, &["pull", &image]).assert_ok();
    // A private copy is the way to an ACL of one's own; the public tag is untouched.
    tb.shifterimg(&user2, &["pull", "--private", &image])
        .assert_ok();
    let copy = tb
        .shifterimg(&user2, &["lookup", &image])
        .assert_ok()
        .stdout
        .trim()
        .to_owned();
    assert_eq!(copy, id, "same content, same id");
    let r = tb.shifterimg(&user2, &["images"]);
    r.assert_ok();
    assert!(r.stdout.contains("(private copy of uid"), "{r}");
    let r = tb.shifterimg(&user, &["images"]);
    assert!(
        !r.stdout.contains("private copy"),
        "not shown to others: {r}"
    );
    assert_eq!(mode(&dir.join(format!("{id}.squashfs"))), 0o644);
    let r = tb.run_as(&user, &["srun", &format!("--image={image}"), "true"], T);
    r.assert_ok();
    tb.assert_nothing_left();
}

#[test]
fn a_member_of_a_group_acl_cannot_widen_it() {
    let Some(gw) = own_gateway("group") else {
        return;
    };
    let (user, user2) = (gw.tb.user().to_owned(), gw.tb.user2().to_owned());
    let tag = format!("owners-group-{}", std::process::id());
    push_copy(&gw.tb, &tag, &tag);
    let path = image_path(&gw.tb, &format!("busybox:{tag}"));
    // user2's primary group: the gateway counts them a member by their credential.
    let group = gid_of(&user2);
    let rec = gw.pull_until_final(
        &user,
        &path,
        Some(&json!({"allowed_gids": group.to_string()})),
    );
    assert_eq!(rec["status"], "READY", "{rec}");
    let id = rec["id"].as_str().unwrap().to_owned();
    let acl = json!({"uids": [uid_of(&user)], "gids": [group]});
    assert_eq!(file_acl(&gw.images(), &id), acl);

    let pull = format!("/api/pull/{}/{path}/", gw.system);
    let wider = json!({"allowed_gids": format!("{group},{}", gid_of(&user))});
    let (st, v) = gw.as_user(&user2, "POST", &pull, Some(&wider));
    assert_eq!(st, 403, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("only its owner"),
        "{v}"
    );
    let owner_dropped = json!({"allowed_uids": uid_of(&user2).to_string()});
    let (st, v) = gw.as_user(&user2, "POST", &pull, Some(&owner_dropped));
    assert_eq!(st, 403, "{v}");

    // Wait out the "recent pull" window so this is a real re-pull.
    std::thread::sleep(Duration::from_secs(11));
    let rec = gw.pull_until_final(&user2, &path, None);
    assert_eq!(rec["status"], "READY", "{rec}");
    let (st, v) = gw.lookup(&user2, &path);
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (&v["userACL"], &v["groupACL"]),
        (&acl["uids"], &acl["gids"]),
        "{v}"
    );
    assert_eq!(file_acl(&gw.images(), &id), acl, "not widened to public");
    assert_eq!(mode(&gw.images().join(format!("{id}.squashfs"))), 0o600);
}

#[test]
fn an_import_user_cannot_overwrite_another_importers_custom_image() {
    let Some(gw) = own_gateway("import") else {
        return;
    };
    let (user, user2) = (gw.tb.user().to_owned(), gw.tb.user2().to_owned());
    let work = gw
        .tb
        .workdir()
        .join(format!("owners-import-{}", std::process::id()));
    let build = |who: &str, content: &str| {
        let w = work.join(who);
        let script = format!(
            "set -e; mkdir -p {w}/src; echo {content} > {w}/src/hello; \
             mksquashfs {w}/src {w}/site.sqfs -noappend -quiet >/dev/null; chmod 0644 {w}/site.sqfs",
            w = w.display()
        );
        gw.tb.run_as(who, &["sh", "-c", &script], T).assert_ok();
        json!({"filepath": w.join("site.sqfs").to_str().unwrap(), "format": "squashfs"})
    };
    std::fs::create_dir_all(&work).unwrap();
    std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o777)).unwrap();
    let uri = format!("/api/doimport/{}/custom/owners-site-env/", gw.system);
    let (st, v) = gw.as_user(&user, "POST", &uri, Some(&build(&user, "first")));
    assert_eq!(st, 200, "{v}\n{}", gw.log_tail());
    let first = v["id"].as_str().unwrap().to_owned();

    let (st, v) = gw.as_user(&user2, "POST", &uri, Some(&build(&user2, "second")));
    assert_eq!(st, 403, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("only its owner or an admin"),
        "{v}"
    );
    let lookup = format!("/api/lookup/{}/custom/owners-site-env/", gw.system);
    let (st, v) = gw.as_user(&user2, "GET", &lookup, None);
    assert_eq!((st, v["id"].as_str()), (200, Some(first.as_str())), "{v}");
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn expiring_a_tag_recomputes_the_image_file_from_the_tags_that_remain() {
    let Some(gw) = own_gateway("expire") else {
        return;
    };
    let user = gw.tb.user().to_owned();
    let mark = format!("owners-expire-{}", std::process::id());
    let (public, private) = (format!("{mark}-pub"), format!("{mark}-priv"));
    push_copy(&gw.tb, &mark, &public);
    push_copy(&gw.tb, &mark, &private);
    let public_path = image_path(&gw.tb, &format!("busybox:{public}"));
    let private_path = image_path(&gw.tb, &format!("busybox:{private}"));

    let a = gw.pull_until_final(&user, &public_path, None);
    let uid = uid_of(&user);
    let b = gw.pull_until_final(
        &user,
        &private_path,
        Some(&json!({"allowed_uids": uid.to_string()})),
    );
    assert_eq!(
        (a["status"].as_str(), b["status"].as_str()),
        (Some("READY"), Some("READY"))
    );
    let id = a["id"].as_str().unwrap().to_owned();
    assert_eq!(b["id"], id.as_str(), "one manifest, one image");
    let sq = gw.images().join(format!("{id}.squashfs"));
    assert_eq!(mode(&sq), 0o644, "a public tag makes the content public");

    let (st, v) = gw.as_user(
        "root",
        "GET",
        &format!("/api/expire/{}/{public_path}/", gw.system),
        None,
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        file_acl(&gw.images(), &id),
        json!({"uids": [uid], "gids": []})
    );
    assert_eq!(mode(&sq), 0o600, "only the private tag is left");
    assert_eq!(mode(&gw.images().join(format!("{id}.json"))), 0o600);
    let (st, _) = gw.lookup(gw.tb.user2(), &format!("id/{id}"));
    assert_eq!(st, 403);
    assert_eq!(gw.lookup(&user, &private_path).0, 200);
}
