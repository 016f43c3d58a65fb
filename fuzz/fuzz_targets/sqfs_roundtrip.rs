//! What the writer is given must read back identically with squashfs-tools: every
//! path, type, permission (setuid/setgid/sticky included), owner, size, symlink
//! target and file content, checked with `unsquashfs -lln` and a full extraction.
//! Trees are kept small (a few dozen entries, a few KiB) so each run takes
//! milliseconds of writing and one or two `unsquashfs` processes.
//!
//! With `SHIFTER_FUZZ_MOUNT=1` and root (the short run in `make test` sets it), the
//! kernel must agree too: each image is loop-mounted read-only as squashfs and the
//! mounted tree compared entry by entry with what was written, and a write into it
//! must fail. That costs a mount and an umount per input, so the long `make fuzz`
//! run leaves it off and spends its time on new inputs.
#![no_main]

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sqfs_writer::{Compression, Meta, Options, Writer};

#[derive(Debug, Arbitrary)]
enum Kind {
    Dir,
    File { content: Vec<u8>, repeat: u8 },
    Symlink { target: u8 },
    Hardlink { to: u8 },
}

#[derive(Debug, Arbitrary)]
struct Entry {
    parent: u8,
    name: u8,
    uid: u16,
    gid: u16,
    mode: u16,
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Want {
    Dir(Meta),
    File(Meta, Vec<u8>),
    Symlink(Vec<u8>),
}

fn build(entries: &[Entry]) -> (BTreeMap<String, Want>, Vec<(String, Option<String>)>) {
    let mut dirs = vec![String::new()];
    let mut files: Vec<String> = Vec::new();
    let mut tree = BTreeMap::new();
    // (path, Some(target)) for hardlinks, added after everything else.
    let mut links = Vec::new();
    for e in entries.iter().take(48) {
        let parent = &dirs[e.parent as usize % dirs.len()];
        let name = format!("n{}", e.name % 24);
        let path = if parent.is_empty() { name } else { format!("{parent}/{name}") };
        if tree.contains_key(&path) || path.len() > 200 {
            continue;
        }
        let meta = Meta {
            uid: e.uid.into(),
            gid: e.gid.into(),
            mode: e.mode & 0o7777,
            mtime: 0,
        };
        let want = match &e.kind {
            Kind::Dir => {
                dirs.push(path.clone());
                Want::Dir(meta)
            }
            Kind::File { content, repeat } => {
                // Repeats reach past one block, so block and fragment paths both run.
                let mut data = Vec::new();
                for _ in 0..=(*repeat as usize % 8) {
                    data.extend_from_slice(&content[..content.len().min(2048)]);
                }
                files.push(path.clone());
                Want::File(meta, data)
            }
            Kind::Symlink { target } => Want::Symlink(format!("t{target}/../x").into_bytes()),
            Kind::Hardlink { to } => {
                if files.is_empty() {
                    continue;
                }
                let target = files[*to as usize % files.len()].clone();
                links.push((path.clone(), Some(target.clone())));
                let Some(Want::File(m, d)) = tree.get(&target).cloned() else {
                    unreachable!()
                };
                Want::File(m, d)
            }
        };
        if !matches!(e.kind, Kind::Hardlink { .. }) {
            links.push((path.clone(), None));
        }
        tree.insert(path, want);
    }
    (tree, links)
}

fn perms(kind: char, mode: u16) -> String {
    let bit = |m: u16, c: char| if mode & m != 0 { c } else { '-' };
    let special = |x: u16, s: u16, lower: char, upper: char| match (mode & x != 0, mode & s != 0) {
        (true, true) => lower,
        (false, true) => upper,
        (true, false) => 'x',
        (false, false) => '-',
    };
    [
        kind,
        bit(0o400, 'r'),
        bit(0o200, 'w'),
        special(0o100, 0o4000, 's', 'S'),
        bit(0o040, 'r'),
        bit(0o020, 'w'),
        special(0o010, 0o2000, 's', 'S'),
        bit(0o004, 'r'),
        bit(0o002, 'w'),
        special(0o001, 0o1000, 't', 'T'),
    ]
    .iter()
    .collect()
}

fn expected_listing(tree: &BTreeMap<String, Want>) -> BTreeMap<String, String> {
    tree.iter()
        .map(|(p, w)| {
            let line = match w {
                Want::Dir(m) => format!("{} {}/{}", perms('d', m.mode), m.uid, m.gid),
                Want::File(m, d) => format!("{} {}/{} {}", perms('-', m.mode), m.uid, m.gid, d.len()),
                Want::Symlink(t) => format!("lrwxrwxrwx 0/0 {} -> {}", t.len(), String::from_utf8_lossy(t)),
            };
            (p.clone(), line)
        })
        .collect()
}

/// `unsquashfs -lln` lines, keyed by path below the root, without the date columns
/// and without directory sizes (those are the writer's layout, not the input).
fn actual_listing(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || !f[5].starts_with("squashfs-root") {
            continue;
        }
        let Some(path) = f[5].strip_prefix("squashfs-root/") else { continue };
        let rest = f[6..].join(" ");
        let v = if f[0].starts_with('d') {
            format!("{} {}", f[0], f[1])
        } else if rest.is_empty() {
            format!("{} {} {}", f[0], f[1], f[2])
        } else {
            // Symlinks are owned by whoever the meta said; compare type and target only.
            format!("{} 0/0 {} {}", f[0], f[2], rest)
        };
        out.insert(path.to_owned(), v);
    }
    out
}

fn kernel_check_enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        let on = std::env::var_os("SHIFTER_FUZZ_MOUNT").is_some_and(|v| v == "1");
        let root = std::fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false);
        if on && !root {
            panic!("SHIFTER_FUZZ_MOUNT=1 needs root to loop-mount the images");
        }
        on
    })
}

/// Loop-mounts `image` read-only and compares the kernel's view with `tree`.
fn check_with_kernel(image: &Path, mnt: &Path, tree: &BTreeMap<String, Want>) {
    std::fs::create_dir(mnt).unwrap();
    let st = Command::new("mount")
        .args(["-t", "squashfs", "-o", "loop,ro"])
        .arg(image)
        .arg(mnt)
        .output()
        .unwrap();
    assert!(st.status.success(), "the kernel refused the image: {}", String::from_utf8_lossy(&st.stderr));
    // libFuzzer aborts on the first panic, so the comparison returns its finding
    // and the image is unmounted before it is reported: a failing input must not
    // leave a mount and a loop device behind on the machine.
    let outcome = compare_mounted(mnt, tree);
    let um = Command::new("umount").arg(mnt).output().unwrap();
    assert!(um.status.success(), "umount {}: {}", mnt.display(), String::from_utf8_lossy(&um.stderr));
    if let Err(why) = outcome {
        panic!("the kernel reads the image differently: {why}");
    }
}

fn compare_mounted(mnt: &Path, tree: &BTreeMap<String, Want>) -> Result<(), String> {
    let mut seen = Vec::new();
    walk(mnt, "", &mut seen)?;
    seen.sort();
    let want: Vec<&String> = tree.keys().collect();
    if seen.iter().collect::<Vec<_>>() != want {
        return Err(format!("paths {seen:?}, written {want:?}"));
    }
    for (p, w) in tree {
        let path = mnt.join(p);
        let md = std::fs::symlink_metadata(&path).map_err(|e| format!("{p}: {e}"))?;
        if let Want::Dir(m) | Want::File(m, _) = w {
            let (mode, owner) = (md.permissions().mode() & 0o7777, (md.uid(), md.gid()));
            if mode != u32::from(m.mode) || owner != (m.uid, m.gid) {
                return Err(format!("{p}: mode {mode:o} owner {owner:?}, written {:o} {:?}", m.mode, (m.uid, m.gid)));
            }
        }
        match w {
            Want::Dir(_) if !md.is_dir() => return Err(format!("{p} is not a directory")),
            Want::File(_, d) => {
                let got = std::fs::read(&path).map_err(|e| format!("reading {p}: {e}"))?;
                if !md.is_file() || got != *d {
                    return Err(format!("{p}: {} bytes read, {} written", got.len(), d.len()));
                }
            }
            Want::Symlink(t) => {
                let got = std::fs::read_link(&path).map_err(|e| format!("{p} is not a symlink: {e}"))?;
                if got.as_os_str().as_encoded_bytes() != t.as_slice() {
                    return Err(format!("{p} -> {got:?}, written {:?}", String::from_utf8_lossy(t)));
                }
            }
            Want::Dir(_) => {}
        }
    }
    match std::fs::write(mnt.join("written-by-fuzz"), b"x") {
        Err(e) if e.raw_os_error() == Some(30) => Ok(()),
        other => Err(format!("a write into the read-only mount gave {other:?}, not EROFS")),
    }
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) -> Result<(), String> {
    for e in std::fs::read_dir(dir).map_err(|e| format!("listing {}: {e}", dir.display()))? {
        let e = e.map_err(|e| format!("listing {}: {e}", dir.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
        if e.file_type().map_err(|e| format!("{rel}: {e}"))?.is_dir() {
            walk(&e.path(), &rel, out)?;
        }
        out.push(rel);
    }
    Ok(())
}

fuzz_target!(|entries: Vec<Entry>| {
    let (tree, order) = build(&entries);
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("t.sqfs");
    let opts = Options {
        compression: Compression::Gzip { level: 1 },
        block_size: 4096,
        threads: 1,
    };
    let mut w = Writer::new(std::fs::File::create(&image).unwrap(), opts).unwrap();
    for (path, link) in &order {
        if link.is_some() {
            continue;
        }
        match &tree[path] {
            Want::Dir(m) => w.add_dir(path.as_bytes(), *m).unwrap(),
            Want::File(m, d) => {
                let n = w.add_file(path.as_bytes(), *m, &mut d.as_slice()).unwrap();
                assert_eq!(n, d.len() as u64);
            }
            Want::Symlink(t) => w.add_symlink(path.as_bytes(), Meta::default(), t).unwrap(),
        }
    }
    for (path, link) in &order {
        if let Some(target) = link {
            w.add_hardlink(path.as_bytes(), target.as_bytes()).unwrap();
        }
    }
    w.finish().unwrap();

    let list = Command::new("unsquashfs").arg("-lln").arg(&image).output().unwrap();
    assert!(list.status.success(), "unsquashfs -lln failed: {}", String::from_utf8_lossy(&list.stderr));
    let got = actual_listing(&String::from_utf8_lossy(&list.stdout));
    assert_eq!(got, expected_listing(&tree), "listing differs from what was written");

    if tree.values().any(|w| matches!(w, Want::File(..))) {
        let out = dir.path().join("x");
        let st = Command::new("unsquashfs")
            .args(["-q", "-n", "-no-xattrs", "-d"])
            .arg(&out)
            .arg(&image)
            .output()
            .unwrap();
        assert!(st.status.success(), "extraction failed: {}", String::from_utf8_lossy(&st.stderr));
        for (p, w) in &tree {
            if let Want::File(_, d) = w {
                let got = std::fs::read(out.join(p)).unwrap();
                assert!(got == *d, "content of {p} differs ({} bytes read, {} written)", got.len(), d.len());
            }
        }
    }

    if kernel_check_enabled() {
        check_with_kernel(&image, &dir.path().join("mnt"), &tree);
    }
});
