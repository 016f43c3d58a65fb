//! The merger against hand-built tars: every whiteout/replacement rule and every
//! kind of hostile layer.

use std::io::Write;

use tar::{EntryType, Header};

use super::*;

/// A tar stream built header by header, with names written raw so hostile names
/// (`..`, absolute) reach the merger unaltered.
#[derive(Default)]
pub(super) struct Tar {
    out: Vec<u8>,
}

const M0: Meta = Meta {
    uid: 0,
    gid: 0,
    mode: 0o644,
    mtime: 0,
};

impl Tar {
    pub(super) fn raw(
        &mut self,
        name: &[u8],
        et: EntryType,
        meta: Meta,
        link: &[u8],
        data: &[u8],
    ) -> &mut Self {
        let mut h = Header::new_ustar();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
        h.set_entry_type(et);
        h.set_mode(meta.mode as u32);
        h.set_uid(meta.uid as u64);
        h.set_gid(meta.gid as u64);
        h.set_mtime(meta.mtime as u64);
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.out.extend_from_slice(h.as_bytes());
        self.out.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.out.extend(std::iter::repeat_n(0u8, pad));
        self
    }
    pub(super) fn dir(&mut self, name: &str) -> &mut Self {
        self.raw(
            name.as_bytes(),
            EntryType::Directory,
            Meta { mode: 0o755, ..M0 },
            b"",
            b"",
        )
    }
    pub(super) fn dir_meta(&mut self, name: &str, meta: Meta) -> &mut Self {
        self.raw(name.as_bytes(), EntryType::Directory, meta, b"", b"")
    }
    pub(super) fn file(&mut self, name: &str, data: &str) -> &mut Self {
        self.raw(
            name.as_bytes(),
            EntryType::Regular,
            M0,
            b"",
            data.as_bytes(),
        )
    }
    pub(super) fn file_meta(&mut self, name: &str, meta: Meta, data: &str) -> &mut Self {
        self.raw(
            name.as_bytes(),
            EntryType::Regular,
            meta,
            b"",
            data.as_bytes(),
        )
    }
    pub(super) fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(
            name.as_bytes(),
            EntryType::Symlink,
            Meta { mode: 0o777, ..M0 },
            target.as_bytes(),
            b"",
        )
    }
    pub(super) fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(name.as_bytes(), EntryType::Link, M0, target.as_bytes(), b"")
    }
    /// A PAX extended header applying to the next entry.
    pub(super) fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut body = Vec::new();
        for (k, v) in records {
            let rest = format!(" {k}=").len() + v.len() + 1;
            let mut len = rest + 1;
            while len.to_string().len() + rest != len {
                len += 1;
            }
            body.extend_from_slice(format!("{len} {k}=").as_bytes());
            body.extend_from_slice(v);
            body.push(b'\n');
        }
        self.raw(b"././@PaxHeader", EntryType::XHeader, M0, b"", &body)
    }
    pub(super) fn finish(&mut self) -> Vec<u8> {
        let mut v = std::mem::take(&mut self.out);
        v.extend(std::iter::repeat_n(0u8, 1024));
        v
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

fn layers(tars: Vec<Vec<u8>>) -> Vec<Layer> {
    tars.into_iter()
        .enumerate()
        .map(|(i, t)| Layer::from_bytes(format!("layer{i}"), t))
        .collect()
}

fn merge_with(tars: Vec<Vec<u8>>, opts: MergeOptions) -> Result<RecordingSink, MergeError> {
    let mut sink = RecordingSink::default();
    merge_layers(&layers(tars), &opts, &mut sink, &mut |_| {})?;
    Ok(sink)
}

fn merge(tars: Vec<Vec<u8>>) -> RecordingSink {
    merge_with(tars, MergeOptions::default()).expect("merge succeeds")
}

fn merge_err(tars: Vec<Vec<u8>>) -> MergeError {
    merge_with(tars, MergeOptions::default()).expect_err("merge must fail")
}

fn content(s: &RecordingSink, p: &str) -> String {
    String::from_utf8(
        s.content(p)
            .unwrap_or_else(|| panic!("{p} missing: {:?}", s.paths()))
            .to_vec(),
    )
    .unwrap()
}

fn base() -> Tar {
    let mut t = Tar::default();
    t.dir("./")
        .dir("etc")
        .file("etc/passwd", "root\n")
        .file("etc/deleteme", "x")
        .dir("opt")
        .dir("opt/old")
        .file("opt/old/a", "a")
        .file("opt/old/b", "b");
    t
}

#[test]
fn whiteout_hides_the_older_file_only() {
    let l1 = base().finish();
    let l2 = Tar::default().file("etc/.wh.deleteme", "").finish();
    let s = merge(vec![l1, l2]);
    assert!(s.get("etc/deleteme").is_none());
    assert!(
        s.get("etc/.wh.deleteme").is_none(),
        "whiteout markers never reach the image"
    );
    assert_eq!(content(&s, "etc/passwd"), "root\n");
}

#[test]
fn whiteout_of_a_directory_hides_everything_below_it() {
    let l2 = Tar::default().file("opt/.wh.old", "").finish();
    let s = merge(vec![base().finish(), l2]);
    assert!(s.get("opt/old").is_none() && s.get("opt/old/a").is_none());
    assert!(matches!(s.get("opt"), Some(Recorded::Dir(_))));
}

#[test]
fn whiteout_does_not_hide_an_entry_of_its_own_layer() {
    let l2 = Tar::default()
        .file("etc/.wh.deleteme", "")
        .file("etc/deleteme", "again")
        .finish();
    let s = merge(vec![base().finish(), l2]);
    assert_eq!(content(&s, "etc/deleteme"), "again");
}

#[test]
fn opaque_directory_hides_older_contents_and_keeps_its_own() {
    let l2 = Tar::default()
        .dir("opt/old")
        .file("opt/old/.wh..wh..opq", "")
        .file("opt/old/new", "n")
        .finish();
    let s = merge(vec![base().finish(), l2]);
    let under: Vec<_> = s
        .paths()
        .into_iter()
        .filter(|p| p.starts_with("opt/old/"))
        .collect();
    assert_eq!(under, vec!["opt/old/new"]);
}

#[test]
fn opaque_marker_without_directory_entry_keeps_the_older_directory_metadata() {
    let mut l1 = Tar::default();
    l1.dir_meta(
        "srv",
        Meta {
            uid: 7,
            gid: 8,
            mode: 0o750,
            mtime: 5,
        },
    )
    .file("srv/x", "x");
    let l2 = Tar::default().file("srv/.wh..wh..opq", "").finish();
    let s = merge(vec![l1.finish(), l2]);
    assert_eq!(
        s.get("srv"),
        Some(&Recorded::Dir(Meta {
            uid: 7,
            gid: 8,
            mode: 0o750,
            mtime: 5
        }))
    );
    assert!(s.get("srv/x").is_none());
}

#[test]
fn file_is_replaced_by_a_directory_and_a_directory_by_a_file() {
    let mut l1 = Tar::default();
    l1.file("srv", "file").dir("data").file("data/inner", "i");
    let l2 = Tar::default()
        .dir("srv")
        .file("srv/child", "c")
        .file("data", "now a file")
        .finish();
    let s = merge(vec![l1.finish(), l2]);
    assert!(matches!(s.get("srv"), Some(Recorded::Dir(_))));
    assert_eq!(content(&s, "srv/child"), "c");
    assert_eq!(content(&s, "data"), "now a file");
    assert!(s.get("data/inner").is_none());
}

#[test]
fn newest_layer_decides_content_and_exact_metadata() {
    let odd = Meta {
        uid: 1234,
        gid: 4321,
        mode: 0o600,
        mtime: 1_700_000_000,
    };
    let l2 = Tar::default()
        .file_meta("etc/passwd", odd, "new")
        .dir_meta(
            "etc",
            Meta {
                uid: 1,
                gid: 2,
                mode: 0o711,
                mtime: 9,
            },
        )
        .finish();
    let s = merge(vec![base().finish(), l2]);
    assert_eq!(
        s.get("etc/passwd"),
        Some(&Recorded::File(odd, b"new".to_vec()))
    );
    assert_eq!(
        s.get("etc"),
        Some(&Recorded::Dir(Meta {
            uid: 1,
            gid: 2,
            mode: 0o711,
            mtime: 9
        }))
    );
}

#[test]
fn later_duplicate_in_the_same_layer_wins() {
    let l1 = Tar::default()
        .file("a", "first")
        .file("a", "second")
        .finish();
    let s = merge(vec![l1]);
    assert_eq!(content(&s, "a"), "second");
}

#[test]
fn parents_missing_from_the_tar_are_created_root_owned_0755() {
    let s = merge(vec![Tar::default().file("deep/er/f", "x").finish()]);
    assert_eq!(s.get("deep/er"), Some(&Recorded::Dir(Meta::IMPLICIT_DIR)));
    assert_eq!(s.get(""), Some(&Recorded::Dir(Meta::IMPLICIT_DIR)));
}

#[test]
fn an_older_directory_entry_supplies_metadata_of_an_implied_parent() {
    let mut l1 = Tar::default();
    l1.dir_meta(
        "home",
        Meta {
            uid: 0,
            gid: 100,
            mode: 0o775,
            mtime: 3,
        },
    );
    let l2 = Tar::default().file("home/u/f", "x").finish();
    let s = merge(vec![l1.finish(), l2]);
    assert_eq!(
        s.get("home"),
        Some(&Recorded::Dir(Meta {
            uid: 0,
            gid: 100,
            mode: 0o775,
            mtime: 3
        }))
    );
}

#[test]
fn symlinks_are_stored_verbatim_even_when_absolute() {
    let l1 = Tar::default()
        .symlink("abs", "/etc/os-release")
        .symlink("rel", "../../x")
        .symlink("root", "/")
        .finish();
    let s = merge(vec![l1]);
    assert!(matches!(s.get("abs"), Some(Recorded::Symlink(_, t)) if t == b"/etc/os-release"));
    assert!(matches!(s.get("rel"), Some(Recorded::Symlink(_, t)) if t == b"../../x"));
    assert!(matches!(s.get("root"), Some(Recorded::Symlink(_, t)) if t == b"/"));
}

#[test]
fn hardlink_to_an_older_layer_file_stays_a_hardlink() {
    let l1 = Tar::default()
        .dir("data")
        .file("data/orig", "shared")
        .finish();
    let l2 = Tar::default()
        .hardlink("data/hard1", "data/orig")
        .hardlink("data/hard2", "./data/orig")
        .finish();
    let l3 = Tar::default().file("data/.wh.hard1", "").finish();
    let s = merge(vec![l1, l2, l3]);
    assert_eq!(
        s.get("data/hard2"),
        Some(&Recorded::Hardlink(b"data/orig".to_vec()))
    );
    assert!(s.get("data/hard1").is_none());
    assert_eq!(content(&s, "data/hard2"), "shared");
}

#[test]
fn hardlink_keeps_the_old_content_when_its_target_is_replaced_or_whited_out() {
    let l1 = Tar::default()
        .file("a", "old a")
        .file("b", "old b")
        .hardlink("la", "a")
        .hardlink("lb", "b")
        .finish();
    let l2 = Tar::default().file("a", "new a").file(".wh.b", "").finish();
    let s = merge(vec![l1, l2]);
    assert_eq!(content(&s, "a"), "new a");
    assert_eq!(
        content(&s, "la"),
        "old a",
        "like a real filesystem, the link kept the old inode"
    );
    assert!(s.get("b").is_none());
    assert_eq!(content(&s, "lb"), "old b");
}

#[test]
fn hardlink_to_a_missing_or_non_file_target_is_dropped() {
    let l1 = Tar::default()
        .dir("d")
        .hardlink("nowhere", "missing")
        .hardlink("todir", "d")
        .finish();
    let s = merge(vec![l1]);
    assert!(s.get("nowhere").is_none() && s.get("todir").is_none());
}

#[test]
fn hardlink_to_a_path_whited_out_before_the_link_was_made_is_dropped() {
    let l1 = Tar::default().file("t", "x").finish();
    let l2 = Tar::default().file(".wh.t", "").finish();
    let l3 = Tar::default().hardlink("link", "t").finish();
    let s = merge(vec![l1, l2, l3]);
    assert!(s.get("link").is_none() && s.get("t").is_none());
}

#[test]
fn dotdot_and_absolute_names_are_refused() {
    for name in [&b"../etc/passwd"[..], b"a/../../x", b"/etc/passwd"] {
        let l = Tar::default()
            .raw(name, EntryType::Regular, M0, b"", b"x")
            .finish();
        assert!(
            matches!(merge_err(vec![l]), MergeError::BadPath { .. }),
            "{}",
            String::from_utf8_lossy(name)
        );
    }
    let l = Tar::default()
        .file("ok", "x")
        .hardlink("evil", "../../etc/shadow")
        .finish();
    assert!(matches!(
        merge_err(vec![l]),
        MergeError::BadLinkTarget { .. }
    ));
    let l = Tar::default().hardlink("evil", "/etc/shadow").finish();
    assert!(matches!(
        merge_err(vec![l]),
        MergeError::BadLinkTarget { .. }
    ));
    let l = Tar::default().file("etc/.wh...", "").finish();
    assert!(matches!(merge_err(vec![l]), MergeError::BadPath { .. }));
}

#[test]
fn entries_through_a_symlink_of_an_older_layer_are_refused() {
    let l1 = Tar::default().symlink("etc", "/etc").finish();
    let l2 = Tar::default()
        .file("etc/cron.d/x", "* * * * * root sh")
        .finish();
    let e = merge_err(vec![l1, l2]);
    assert!(
        matches!(&e, MergeError::Traversal { through, kind: "symlink", .. } if through == "etc"),
        "{e}"
    );
}

#[test]
fn entries_through_a_symlink_of_the_same_layer_are_refused() {
    let l1 = Tar::default()
        .symlink("etc", "/etc")
        .file("etc/passwd", "x")
        .finish();
    let e = merge_err(vec![l1]);
    assert!(matches!(e, MergeError::Traversal { .. }), "{e}");
}

#[test]
fn a_newer_directory_replacing_an_older_symlink_is_fine() {
    let l1 = Tar::default().symlink("etc", "/etc").finish();
    let l2 = Tar::default().dir("etc").file("etc/x", "x").finish();
    let s = merge(vec![l1, l2]);
    assert!(matches!(s.get("etc"), Some(Recorded::Dir(_))));
    assert_eq!(content(&s, "etc/x"), "x");
}

#[test]
fn devices_fifos_are_dropped() {
    let l1 = Tar::default()
        .dir("dev")
        .raw(b"dev/null", EntryType::Char, M0, b"", b"")
        .raw(b"dev/sda", EntryType::Block, M0, b"", b"")
        .raw(b"dev/fifo", EntryType::Fifo, M0, b"", b"")
        .file("dev/keep", "k")
        .finish();
    let s = merge(vec![l1]);
    assert_eq!(s.paths(), vec!["", "dev", "dev/keep"]);
}

#[test]
fn pax_xattrs_are_ignored_and_pax_mtime_and_path_honoured() {
    let l1 = Tar::default()
        .pax(&[
            (
                "SCHILY.xattr.security.capability",
                b"\x01\x00\x00\x02\xff\xff\xff\xff",
            ),
            ("mtime", b"1234.75"),
            ("path", b"usr/bin/capcheck-xattr"),
        ])
        .file_meta("short", Meta { mode: 0o755, ..M0 }, "ELF")
        .finish();
    let s = merge(vec![l1]);
    assert_eq!(
        s.get("usr/bin/capcheck-xattr"),
        Some(&Recorded::File(
            Meta {
                mode: 0o755,
                mtime: 1234,
                ..M0
            },
            b"ELF".to_vec()
        ))
    );
    assert!(s.get("short").is_none());
}

#[test]
fn setuid_and_setgid_are_stripped_unless_kept() {
    let l = || {
        Tar::default()
            .file_meta("suid", Meta { mode: 0o4755, ..M0 }, "x")
            .file_meta(
                "sgid",
                Meta {
                    mode: 0o2755,
                    gid: 50,
                    ..M0
                },
                "x",
            )
            .dir_meta("shared", Meta { mode: 0o3777, ..M0 })
            .finish()
    };
    let s = merge(vec![l()]);
    assert_eq!(
        s.get("suid"),
        Some(&Recorded::File(Meta { mode: 0o755, ..M0 }, b"x".to_vec()))
    );
    assert_eq!(
        s.get("sgid"),
        Some(&Recorded::File(
            Meta {
                mode: 0o755,
                gid: 50,
                ..M0
            },
            b"x".to_vec()
        ))
    );
    assert_eq!(
        s.get("shared"),
        Some(&Recorded::Dir(Meta { mode: 0o3777, ..M0 })),
        "directory bits grant nothing and stay"
    );
    let kept = merge_with(
        vec![l()],
        MergeOptions {
            keep_setuid: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        kept.get("suid"),
        Some(&Recorded::File(Meta { mode: 0o4755, ..M0 }, b"x".to_vec()))
    );
}

#[test]
fn gzip_zstd_and_plain_layers_are_recognised_by_their_bytes() {
    let l1 = gzip(&Tar::default().file("g", "gz").finish());
    let l2 = zstd(&Tar::default().file("z", "zs").finish());
    let l3 = Tar::default().file("p", "plain").finish();
    let s = merge(vec![l1, l2, l3]);
    assert_eq!(
        (content(&s, "g"), content(&s, "z"), content(&s, "p")),
        ("gz".into(), "zs".into(), "plain".into())
    );
}

#[test]
fn decompression_bomb_over_the_byte_cap_is_refused() {
    let big = "0".repeat(4 << 20);
    let l1 = gzip(&Tar::default().file("bomb", &big).finish());
    assert!(l1.len() < 64 << 10, "the test layer is a real bomb");
    let opts = MergeOptions {
        max_bytes: 1 << 20,
        ..Default::default()
    };
    let e = merge_with(vec![l1], opts).expect_err("over the cap");
    assert!(
        matches!(e, MergeError::TooLarge { max } if max == 1 << 20),
        "{e}"
    );
}

#[test]
fn the_byte_cap_counts_all_layers_together() {
    let half = "0".repeat(600 << 10);
    let l = || zstd(&Tar::default().file("f", &half).finish());
    let opts = MergeOptions {
        max_bytes: 1 << 20,
        ..Default::default()
    };
    assert!(merge_with(vec![l()], opts).is_ok());
    assert!(matches!(
        merge_with(vec![l(), l()], opts),
        Err(MergeError::TooLarge { .. })
    ));
}

#[test]
fn too_many_entries_are_refused() {
    let mut t = Tar::default();
    for i in 0..50 {
        t.file(&format!("f{i}"), "");
    }
    let opts = MergeOptions {
        max_entries: 20,
        ..Default::default()
    };
    assert!(matches!(
        merge_with(vec![t.finish()], opts),
        Err(MergeError::TooManyEntries { max: 20 })
    ));
}

#[test]
fn truncated_gzip_and_zstd_layers_are_refused() {
    let tar = Tar::default()
        .file("a", &"abc".repeat(10_000))
        .file("b", "b")
        .finish();
    for (kind, mut blob) in [("gzip", gzip(&tar)), ("zstd", zstd(&tar))] {
        blob.truncate(blob.len() - 8);
        let e = merge_err(vec![blob]);
        assert!(matches!(e, MergeError::Corrupt { .. }), "{kind}: {e}");
    }
}

#[test]
fn bad_tar_checksum_is_refused() {
    let mut tar = Tar::default().file("a", "x").finish();
    tar[0] = b'b';
    assert!(matches!(merge_err(vec![tar]), MergeError::Corrupt { .. }));
}

#[test]
fn bzip2_and_xz_layers_are_refused_by_name() {
    let e = merge_err(vec![b"BZh91AY&SY".to_vec()]);
    assert!(matches!(
        e,
        MergeError::UnsupportedCompression { what: "bzip2", .. }
    ));
}

#[test]
fn opaque_root_hides_every_older_entry() {
    let l2 = Tar::default()
        .file(".wh..wh..opq", "")
        .file("only", "o")
        .finish();
    let s = merge(vec![base().finish(), l2]);
    assert_eq!(s.paths(), vec!["", "only"]);
}

#[test]
fn progress_counts_layer_bytes_from_zero_to_the_announced_total() {
    let mut sink = RecordingSink::default();
    let mut seen = Vec::new();
    let tars = vec![
        gzip(
            &Tar::default()
                .file("a", &"old content ".repeat(50_000))
                .file("gone", "xxxxxxxx")
                .finish(),
        ),
        Tar::default()
            .file("a", "12345")
            .file("b", "678")
            .file(".wh.gone", "")
            .finish(),
    ];
    let stored: u64 = tars.iter().map(|t| t.len() as u64).sum();
    let stats = merge_layers(
        &layers(tars),
        &MergeOptions::default(),
        &mut sink,
        &mut |p| seen.push((p.read, p.total)),
    )
    .unwrap();
    assert_eq!(seen.first(), Some(&(0, stored)), "the total comes first");
    assert_eq!(seen.last(), Some(&(stored, stored)));
    assert!(seen.len() > 2, "progress between start and end: {seen:?}");
    assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0));
    assert_eq!((stats.file_bytes, stats.files, stats.passes), (8, 2, 1));
}

#[test]
fn an_image_without_repeated_paths_is_read_once() {
    let l2 = Tar::default()
        .dir("etc")
        .file("etc/passwd", "new")
        .file("etc/.wh.deleteme", "")
        .hardlink("etc/pw2", "etc/passwd")
        .finish();
    let mut sink = RecordingSink::default();
    let stats = merge_layers(
        &layers(vec![base().finish(), l2]),
        &MergeOptions::default(),
        &mut sink,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!((stats.passes, sink.restarts), (1, 0));
    assert_eq!(content(&sink, "etc/pw2"), "new");
    assert_eq!(stats.hardlinks, 1);
}

#[test]
fn a_layer_repeating_a_written_file_starts_over_in_two_passes() {
    // The later entry wins whatever it is; the first one's data was already written.
    type Second = fn(&mut Tar) -> &mut Tar;
    let cases: [(&str, Second, Recorded); 3] = [
        (
            "file",
            |t| t.file("x", "second"),
            Recorded::File(M0, b"second".to_vec()),
        ),
        (
            "dir",
            |t| t.dir("x"),
            Recorded::Dir(Meta { mode: 0o755, ..M0 }),
        ),
        (
            "symlink",
            |t| t.symlink("x", "/t"),
            Recorded::Symlink(Meta { mode: 0o777, ..M0 }, b"/t".to_vec()),
        ),
    ];
    for (what, second, want) in cases {
        let mut top = Tar::default();
        top.file("x", "first").file("y", "y");
        second(&mut top);
        let mut progress = Vec::new();
        let mut sink = RecordingSink::default();
        let stats = merge_layers(
            &layers(vec![base().finish(), top.finish()]),
            &MergeOptions::default(),
            &mut sink,
            &mut |p| progress.push(p),
        )
        .unwrap();
        assert_eq!((stats.passes, sink.restarts), (2, 1), "{what}");
        assert_eq!(sink.get("x"), Some(&want), "{what}");
        assert_eq!(content(&sink, "y"), "y", "{what}");
        assert_eq!(content(&sink, "etc/passwd"), "root\n", "{what}");
        assert!(
            progress.windows(2).all(|w| w[0].read <= w[1].read),
            "{what}: {progress:?}"
        );
        let last = progress.last().unwrap();
        assert_eq!(last.read, last.total, "{what}");
    }
}

#[test]
fn links_to_a_replaced_target_share_one_copy_of_the_old_content() {
    let l1 = Tar::default()
        .file("t", "old")
        .hardlink("l1", "t")
        .hardlink("l2", "t")
        .finish();
    let l2 = Tar::default().file("t", "new").finish();
    let s = merge(vec![l1, l2]);
    assert_eq!(s.get("l1"), Some(&Recorded::File(M0, b"old".to_vec())));
    assert_eq!(s.get("l2"), Some(&Recorded::Hardlink(b"l1".to_vec())));
    assert_eq!(content(&s, "t"), "new");
}

#[test]
fn a_link_to_a_link_of_an_older_layer_reaches_the_file() {
    let l1 = Tar::default().file("f", "data").hardlink("a", "f").finish();
    let l2 = Tar::default().hardlink("b", "a").finish();
    let s = merge(vec![l1, l2]);
    assert_eq!(s.get("b"), Some(&Recorded::Hardlink(b"f".to_vec())));
    assert_eq!(s.get("a"), Some(&Recorded::Hardlink(b"f".to_vec())));
}

#[test]
fn a_directory_over_a_file_over_a_directory_starts_empty() {
    let l1 = Tar::default().dir("etc").file("etc/passwd", "old").finish();
    let l2 = Tar::default().symlink("etc", "/elsewhere").finish();
    let l3 = Tar::default().dir("etc").file("etc/new", "n").finish();
    let s = merge(vec![l1, l2, l3]);
    assert!(
        s.get("etc/passwd").is_none(),
        "the symlink of layer 2 replaced the old directory"
    );
    assert_eq!(content(&s, "etc/new"), "n");
}

#[test]
fn a_whited_out_entry_still_made_its_parent_directories() {
    let l1 = Tar::default().file("made/by/file", "x").finish();
    let l2 = Tar::default().file("made/by/.wh.file", "").finish();
    let s = merge(vec![l1, l2]);
    assert_eq!(s.get("made/by"), Some(&Recorded::Dir(Meta::IMPLICIT_DIR)));
    assert!(s.get("made/by/file").is_none());
}

#[test]
fn a_gigantic_gnu_long_name_is_refused_before_it_is_buffered() {
    let huge = vec![b'a'; 4 << 20];
    let l = Tar::default()
        .raw(b"././@LongLink", EntryType::GNULongName, M0, b"", &huge)
        .file("x", "x")
        .finish();
    let e = merge_err(vec![zstd(&l)]);
    assert!(matches!(e, MergeError::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains("extension headers"), "{e}");
}

#[test]
fn long_names_and_big_files_within_limits_still_work() {
    let long = format!("{}/file", "d".repeat(300));
    let mut h = Header::new_gnu();
    h.set_size(3);
    h.set_mode(0o644);
    h.set_entry_type(EntryType::Regular);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    let mut b = tar::Builder::new(Vec::new());
    b.append_data(&mut h, &long, &b"abc"[..]).unwrap();
    let big = vec![1u8; 3 << 20];
    let mut h = Header::new_gnu();
    h.set_size(big.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    b.append_data(&mut h, "big", &big[..]).unwrap();
    let s = merge(vec![b.into_inner().unwrap()]);
    assert_eq!(content(&s, &long), "abc");
    assert_eq!(s.content("big").map(<[u8]>::len), Some(3 << 20));
}

#[test]
fn hardlink_to_a_path_whose_parent_was_replaced_by_a_file_is_dropped() {
    let l1 = Tar::default().dir("d").file("d/t", "old").finish();
    let l2 = Tar::default().file("d", "now a file").finish();
    let l3 = Tar::default().hardlink("link", "d/t").finish();
    let s = merge(vec![l1, l2, l3]);
    assert!(
        s.get("link").is_none(),
        "d/t no longer existed when the link was made"
    );
    assert_eq!(content(&s, "d"), "now a file");
}

#[test]
fn a_layer_still_downloading_is_waited_for_and_a_lost_one_fails_the_merge() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blob");
    std::fs::write(&path, gzip(&base().finish())).unwrap();
    let size = std::fs::metadata(&path).unwrap().len();
    let (arriving, delivery) = ArrivingBlob::new(size);
    let top = Layer::from_bytes("top", Tar::default().file("etc/motd", "hi").finish());
    let base = Layer {
        name: "base".into(),
        data: LayerData::Arriving(arriving),
    };
    let late = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(200));
        delivery.deliver(std::sync::Arc::new(std::fs::File::open(&path).unwrap()));
    });
    let mut sink = RecordingSink::default();
    let mut totals = Vec::new();
    merge_layers(
        &[base, top],
        &MergeOptions::default(),
        &mut sink,
        &mut |p| totals.push(p.total),
    )
    .unwrap();
    late.join().unwrap();
    assert_eq!(content(&sink, "etc/passwd"), "root\n");
    assert_eq!(content(&sink, "etc/motd"), "hi");
    assert!(
        totals.iter().all(|&t| t > size),
        "the announced size counts before the blob is there: {totals:?}"
    );

    let merge_alone = |name: &str, blob: std::sync::Arc<ArrivingBlob>| {
        let layer = Layer {
            name: name.into(),
            data: LayerData::Arriving(blob),
        };
        let mut sink = RecordingSink::default();
        merge_layers(&[layer], &MergeOptions::default(), &mut sink, &mut |_| {}).unwrap_err()
    };

    // Given up after it arrived: the next read fails the same way.
    let dir2 = tempfile::tempdir().unwrap();
    let blob = dir2.path().join("blob");
    std::fs::write(&blob, Tar::default().file("x", "x").finish()).unwrap();
    let (gone, delivery) = ArrivingBlob::new(10240);
    delivery.deliver(std::sync::Arc::new(std::fs::File::open(&blob).unwrap()));
    gone.abandon();
    let e = merge_alone("gone", gone);
    assert!(matches!(e, MergeError::NotDownloaded { .. }), "{e}");

    let (lost, delivery) = ArrivingBlob::new(100);
    drop(delivery);
    let e = merge_alone("lost", lost);
    assert!(
        matches!(&e, MergeError::NotDownloaded { layer } if layer == "lost"),
        "{e}"
    );
}

/// A GNU sparse entry of `real` bytes that are all hole: a few hundred bytes of tar
/// that the tar reader expands without reading anything.
fn sparse_hole(name: &str, real: u64) -> Vec<u8> {
    let mut h = Header::new_gnu();
    h.set_path(name).unwrap();
    h.set_entry_type(EntryType::GNUSparse);
    h.set_size(0);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    let gnu = h.as_gnu_mut().unwrap();
    gnu.sparse[0].set_offset(real);
    gnu.sparse[0].set_length(0);
    gnu.set_real_size(real);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

#[test]
fn a_sparse_hole_counts_against_the_byte_cap() {
    let opts = MergeOptions {
        max_bytes: 1 << 20,
        ..MergeOptions::default()
    };
    // Within the cap it is an ordinary file of zeros.
    let s = merge_with(vec![sparse_hole("small", 4096)], opts).unwrap();
    assert_eq!(s.content("small"), Some(&[0u8; 4096][..]));
    // A terabyte of hole is refused at the cap, not expanded for hours, whether the
    // entry survives into the image or is shadowed by a newer layer.
    let start = std::time::Instant::now();
    let e = merge_with(vec![sparse_hole("big", 1 << 40)], opts).unwrap_err();
    assert!(matches!(e, MergeError::TooLarge { .. }), "{e}");
    let shadowed = vec![
        sparse_hole("big", 1 << 40),
        Tar::default().file("big", "new").finish(),
    ];
    let e = merge_with(shadowed.clone(), opts).unwrap_err();
    assert!(matches!(e, MergeError::TooLarge { .. }), "{e}");
    let mut two = RecordingSink::default();
    let e =
        merge_layers_in_two_passes(&layers(shadowed), &opts, &mut two, &mut |_| {}).unwrap_err();
    assert!(matches!(e, MergeError::TooLarge { .. }), "{e}");
    assert!(start.elapsed() < std::time::Duration::from_secs(10));
}

#[test]
fn padding_after_the_end_of_the_archive_is_not_taken_for_headers() {
    // Some writers pad to a large blocking factor; past the end marker it is not
    // an extension header, however long.
    let mut t = Tar::default().file("a", "a").finish();
    t.extend(std::iter::repeat_n(0u8, 3 << 20));
    let s = merge(vec![gzip(&t)]);
    assert_eq!(content(&s, "a"), "a");
}
