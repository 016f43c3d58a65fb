//! Randomised check of the merger against the obvious model: apply the layers one
//! after the other to an in-memory filesystem, as `umoci unpack` does on disk. Names
//! come from a tiny alphabet so that layers collide, replace and white out each other.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use tar::EntryType;

use super::tests::Tar;
use super::*;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, v: &'a [&'a str]) -> &'a str {
        v[self.below(v.len() as u64) as usize]
    }
}

#[derive(Debug, Clone)]
enum Op {
    Dir(String, Meta),
    File(String, Meta, String),
    Symlink(String, String),
    Hardlink(String, String),
    Whiteout(String),
    Opaque(String),
}

#[derive(Debug, Clone, PartialEq)]
enum MKind {
    Dir,
    /// Inode number; contents and meta live in the inode table.
    File(usize),
    Symlink(String),
}

#[derive(Default)]
struct Model {
    nodes: BTreeMap<String, (MKind, Meta)>,
    inodes: Vec<(String, Meta)>,
}

fn ancestors_of(p: &str) -> Vec<String> {
    let parts: Vec<&str> = p.split('/').collect();
    (1..parts.len()).map(|i| parts[..i].join("/")).collect()
}

fn under(p: &str, dir: &str) -> bool {
    p.len() > dir.len() && p.starts_with(dir) && p.as_bytes()[dir.len()] == b'/'
}

impl Model {
    fn remove_tree(&mut self, p: &str, keep_self: bool) {
        self.nodes
            .retain(|k, _| !(under(k, p) || (!keep_self && k == p)));
    }
    fn ensure_parents(&mut self, p: &str) {
        for a in ancestors_of(p) {
            self.nodes
                .entry(a)
                .or_insert((MKind::Dir, Meta::IMPLICIT_DIR));
        }
    }
    fn is_dir_or_absent(&self, p: &str) -> bool {
        self.nodes.get(p).is_none_or(|(k, _)| *k == MKind::Dir)
    }
    fn put(&mut self, p: &str, kind: MKind, meta: Meta) {
        self.ensure_parents(p);
        match (&kind, self.nodes.get(p)) {
            (MKind::Dir, Some((MKind::Dir, _))) => {}
            _ => self.remove_tree(p, false),
        }
        self.nodes.insert(p.to_owned(), (kind, meta));
    }
}

/// One random layer, already filtered to what an honest image builder could
/// produce on top of `model` (no entries through non-directories).
fn gen_layer(rng: &mut Rng, model: &Model, l: usize) -> Vec<Op> {
    const NAMES: &[&str] = &["a", "b", "c"];
    let path = |rng: &mut Rng| {
        let depth = 1 + rng.below(3);
        (0..depth)
            .map(|_| rng.pick(NAMES))
            .collect::<Vec<_>>()
            .join("/")
    };
    let meta = |rng: &mut Rng| Meta {
        uid: rng.below(3) as u32,
        gid: rng.below(3) as u32,
        mode: [0o755, 0o700, 0o644, 0o600][rng.below(4) as usize],
        mtime: rng.below(5) as u32,
    };
    let mut ops = Vec::new();
    let mut used = BTreeMap::new();
    for i in 0..(2 + rng.below(7)) {
        let p = path(rng);
        let op = match rng.below(10) {
            0..=1 => Op::Dir(p.clone(), meta(rng)),
            2..=4 => Op::File(p.clone(), meta(rng), format!("L{l}E{i}")),
            5 => Op::Symlink(p.clone(), format!("/t{i}")),
            6 => Op::Hardlink(p.clone(), path(rng)),
            7..=8 => Op::Whiteout(p.clone()),
            _ => Op::Opaque(p.clone()),
        };
        // Builders write a path once per layer. A file or symlink written again
        // (`tar --append`; the later entry wins) is rare but legal, and the
        // single-read merge must start over for it.
        let plain = matches!(op, Op::File(..) | Op::Symlink(..));
        if !matches!(op, Op::Whiteout(_)) {
            match used.get(&p) {
                None => {
                    used.insert(p.clone(), plain);
                }
                Some(&was_plain) if was_plain && plain && rng.below(3) == 0 => {}
                Some(_) => continue,
            }
        }
        ops.push(op);
    }
    // Apply the layer's whiteouts to a copy to see what entries will sit on.
    let mut after = Model {
        nodes: model.nodes.clone(),
        inodes: Vec::new(),
    };
    for op in &ops {
        match op {
            Op::Whiteout(p) => after.remove_tree(p, false),
            Op::Opaque(p) => after.remove_tree(p, true),
            _ => {}
        }
    }
    let entry_paths: Vec<String> = ops
        .iter()
        .filter(|o| !matches!(o, Op::Whiteout(_)))
        .map(|o| match o {
            Op::Dir(p, _)
            | Op::File(p, _, _)
            | Op::Symlink(p, _)
            | Op::Hardlink(p, _)
            | Op::Opaque(p) => p.clone(),
            Op::Whiteout(_) => unreachable!(),
        })
        .collect();
    ops.into_iter()
        .filter_map(|op| {
            let p = match &op {
                Op::Whiteout(_) => return Some(op),
                Op::Dir(p, _)
                | Op::File(p, _, _)
                | Op::Symlink(p, _)
                | Op::Hardlink(p, _)
                | Op::Opaque(p) => p.clone(),
            };
            // Parents must be directories (or absent) below this layer.
            if !ancestors_of(&p).iter().all(|a| after.is_dir_or_absent(a)) {
                return None;
            }
            // Inside the layer, anything with entries below it must be a directory.
            let is_parent = entry_paths.iter().any(|q| under(q, &p));
            if let Op::Opaque(_) = op {
                return after.is_dir_or_absent(&p).then_some(op);
            }
            if is_parent && !matches!(op, Op::Dir(..)) {
                return None;
            }
            // Hardlinks to anything but an existing file are invalid input (Docker
            // fails the layer); the merger's handling of them has its own tests.
            if let Op::Hardlink(_, t) = &op {
                let target_ok = matches!(after.nodes.get(t), Some((MKind::File(_), _)));
                let touched = entry_paths.iter().any(|q| q == t || under(t, q));
                if !target_ok || touched {
                    return None;
                }
            }
            Some(op)
        })
        .collect()
}

fn apply(model: &mut Model, ops: &[Op]) {
    // Whiteouts hide what is below the layer; an opaque marker's directory belongs
    // to the layer itself, so it is made after them.
    for op in ops {
        if let Op::Whiteout(p) = op {
            model.remove_tree(p, false);
        }
    }
    for op in ops {
        if let Op::Opaque(p) = op {
            model.remove_tree(p, true);
        }
    }
    for op in ops {
        if let Op::Opaque(p) = op {
            if !matches!(model.nodes.get(p), Some((MKind::Dir, _))) {
                model.put(p, MKind::Dir, Meta::IMPLICIT_DIR);
            }
        }
    }
    for op in ops {
        match op {
            Op::Dir(p, m) => model.put(p, MKind::Dir, *m),
            Op::File(p, m, c) => {
                model.inodes.push((c.clone(), *m));
                let ino = model.inodes.len() - 1;
                model.put(p, MKind::File(ino), *m);
            }
            Op::Symlink(p, t) => {
                model.put(p, MKind::Symlink(t.clone()), Meta { mode: 0o777, ..M0 })
            }
            Op::Hardlink(p, t) => {
                // A dropped link still implies its parent directories.
                model.ensure_parents(p);
                if let Some((MKind::File(ino), m)) = model.nodes.get(t).cloned() {
                    if p != t {
                        model.put(p, MKind::File(ino), m);
                    }
                }
            }
            Op::Whiteout(_) | Op::Opaque(_) => {}
        }
    }
}

const M0: Meta = Meta {
    uid: 0,
    gid: 0,
    mode: 0o644,
    mtime: 0,
};

fn to_tar(ops: &[Op]) -> Vec<u8> {
    let mut t = Tar::default();
    for op in ops {
        match op {
            Op::Dir(p, m) => t.dir_meta(p, *m),
            Op::File(p, m, c) => t.file_meta(p, *m, c),
            Op::Symlink(p, target) => t.symlink(p, target),
            Op::Hardlink(p, target) => {
                t.raw(p.as_bytes(), EntryType::Link, M0, target.as_bytes(), b"")
            }
            Op::Whiteout(p) => {
                let (dir, name) = p.rsplit_once('/').map_or(("", p.as_str()), |(d, n)| (d, n));
                let wh = if dir.is_empty() {
                    format!(".wh.{name}")
                } else {
                    format!("{dir}/.wh.{name}")
                };
                t.file(&wh, "")
            }
            Op::Opaque(p) => t.file(&format!("{p}/.wh..wh..opq"), ""),
        };
    }
    t.finish()
}

#[test]
fn merging_equals_applying_layers_one_by_one() {
    for seed in 1..=1500u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut model = Model::default();
        let mut tars = Vec::new();
        let mut all_ops = Vec::new();
        for l in 0..(1 + rng.below(4) as usize) {
            let ops = gen_layer(&mut rng, &model, l);
            apply(&mut model, &ops);
            tars.push(to_tar(&ops));
            all_ops.push(ops);
        }
        let got =
            merge_with_default(tars).unwrap_or_else(|e| panic!("seed {seed}: {e}\n{all_ops:#?}"));

        let ours: BTreeSet<&str> = got.paths().into_iter().filter(|p| !p.is_empty()).collect();
        let theirs: BTreeSet<&str> = model.nodes.keys().map(String::as_str).collect();
        assert_eq!(ours, theirs, "seed {seed}: paths differ\n{all_ops:#?}");
        // Inode identity: which paths share data.
        let mut group_of: HashMap<usize, &str> = HashMap::new();
        for (p, (kind, meta)) in &model.nodes {
            let rec = got.get(p).unwrap();
            match (kind, rec) {
                (MKind::Dir, Recorded::Dir(m)) => {
                    assert_eq!(m, meta, "seed {seed}: meta of dir {p}")
                }
                (MKind::Symlink(t), Recorded::Symlink(_, rt)) => {
                    assert_eq!(t.as_bytes(), &rt[..], "seed {seed}: {p}")
                }
                (MKind::File(ino), Recorded::File(..) | Recorded::Hardlink(_)) => {
                    let (content, m) = &model.inodes[*ino];
                    assert_eq!(
                        got.content(p),
                        Some(content.as_bytes()),
                        "seed {seed}: content of {p}\n{all_ops:#?}"
                    );
                    let root = match rec {
                        Recorded::Hardlink(t) => String::from_utf8(t.clone()).unwrap(),
                        _ => p.clone(),
                    };
                    let Some(Recorded::File(rm, _)) = got.get(&root) else {
                        panic!("seed {seed}: {p} -> {root}")
                    };
                    assert_eq!(rm, m, "seed {seed}: meta of file {p}");
                    let first = *group_of.entry(*ino).or_insert(p);
                    let first_root = match got.get(first).unwrap() {
                        Recorded::Hardlink(t) => String::from_utf8(t.clone()).unwrap(),
                        _ => first.to_owned(),
                    };
                    assert_eq!(
                        root, first_root,
                        "seed {seed}: {p} and {first} should share an inode\n{all_ops:#?}"
                    );
                }
                (k, r) => panic!("seed {seed}: {p}: model {k:?}, merged {r:?}\n{all_ops:#?}"),
            }
        }
    }
    let restarts = STARTED_OVER.with(|c| c.get());
    assert!(
        restarts > 20,
        "the seeds should exercise the start-over path, not just {restarts} times"
    );
}

/// The merge as the gateway runs it, after checking that the two-pass fallback on
/// its own gives the same tree.
fn merge_with_default(tars: Vec<Vec<u8>>) -> Result<RecordingSink, MergeError> {
    let layers: Vec<Layer> = tars
        .into_iter()
        .enumerate()
        .map(|(i, t)| Layer::from_bytes(format!("layer{i}"), t))
        .collect();
    let opts = MergeOptions::default();
    let mut sink = RecordingSink::default();
    let streamed = merge_layers(&layers, &opts, &mut sink, &mut |_| {});
    let mut two = RecordingSink::default();
    let two_pass = merge_layers_in_two_passes(&layers, &opts, &mut two, &mut |_| {});
    match (&streamed, &two_pass) {
        (Ok(a), Ok(b)) => {
            assert_eq!(sink.entries, two.entries, "one read and two passes differ");
            assert_eq!(
                MergeStats { passes: 0, ..*a },
                MergeStats { passes: 0, ..*b }
            );
            STARTED_OVER.with(|c| c.set(c.get() + sink.restarts));
        }
        (Err(_), Err(_)) => {}
        _ => panic!("one read gave {streamed:?}, two passes {two_pass:?}"),
    }
    streamed?;
    Ok(sink)
}

thread_local! {
    static STARTED_OVER: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}
