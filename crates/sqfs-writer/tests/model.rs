//! Random sequences of calls, checked against a model of what should be accepted,
//! refused, and finally seen by unsquashfs.

mod common;

use std::collections::BTreeMap;
use std::fs::File;

use common::*;
use sqfs_writer::{Compression, Error, Writer};

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Dir { explicit: bool },
    File,
    Symlink,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn random_path(rng: &mut Rng) -> Vec<u8> {
    const NAMES: [&[u8]; 6] = [b"a", b"b", b"c d", b"\xe9", b"long-name-x", b"z"];
    let depth = 1 + rng.below(4) as usize;
    let comps: Vec<&[u8]> = (0..depth).map(|_| NAMES[rng.below(6) as usize]).collect();
    comps.join(&b'/')
}

/// What the writer must say about adding `kind` at `path`, given the model.
fn verdict(model: &BTreeMap<Vec<u8>, Kind>, path: &[u8], kind: Kind) -> Result<(), &'static str> {
    for (i, _) in path.iter().enumerate().filter(|(_, &b)| b == b'/') {
        if let Some(Kind::File | Kind::Symlink) = model.get(&path[..i]) {
            return Err("NotADirectory");
        }
    }
    match (model.get(path), kind) {
        (None, _) => Ok(()),
        (Some(Kind::Dir { explicit: false }), Kind::Dir { .. }) => Ok(()),
        (Some(Kind::Dir { explicit: false }), _) => Err("IsADirectory"),
        (Some(_), _) => Err("Duplicate"),
    }
}

fn name(e: &Error) -> &'static str {
    match e {
        Error::Duplicate { .. } => "Duplicate",
        Error::NotADirectory { .. } => "NotADirectory",
        Error::IsADirectory { .. } => "IsADirectory",
        other => panic!("unexpected error {other}"),
    }
}

#[test]
fn random_call_sequences_are_accepted_refused_and_stored_as_modelled() {
    if !can_extract() {
        return;
    }
    let mut refusals: BTreeMap<&'static str, u32> = BTreeMap::new();
    for seed in 1..=12u64 {
        let mut rng = Rng(seed * 0x9E37_79B9);
        let tmp = tempfile::tempdir().unwrap();
        let image = tmp.path().join("m.sqfs");
        let c = [
            Compression::Gzip { level: 9 },
            Compression::Zstd { level: 3 },
            Compression::Lz4,
        ][seed as usize % 3];
        let mut w = Writer::new(File::create(&image).unwrap(), opts(c, 4096, 2)).unwrap();
        let mut model: BTreeMap<Vec<u8>, Kind> = BTreeMap::new();
        let mut accepted: Vec<E> = Vec::new();
        let mut files: Vec<Vec<u8>> = Vec::new();
        for step in 0..300 {
            let path = random_path(&mut rng);
            let m = meta(
                rng.below(3) as u32,
                rng.below(3) as u32,
                0o640 + rng.below(64) as u16,
                step,
            );
            let op = rng.below(10);
            let (kind, entry) = match op {
                0..=2 => (Kind::Dir { explicit: true }, E::Dir(path.clone(), m)),
                3..=6 => {
                    let len = [0, 10, 4095, 4096, 4097, 9000][rng.below(6) as usize];
                    let data = if rng.below(2) == 0 {
                        text_bytes(step.into(), len)
                    } else {
                        random_bytes(step.into(), len)
                    };
                    (Kind::File, E::File(path.clone(), m, data))
                }
                7 => (Kind::Symlink, E::Symlink(path.clone(), m, b"../x".to_vec())),
                _ => {
                    if files.is_empty() {
                        continue;
                    }
                    let target = files[rng.below(files.len() as u64) as usize].clone();
                    (Kind::File, E::Hardlink(path.clone(), target))
                }
            };
            let want = verdict(&model, &path, kind);
            let got = match &entry {
                E::Dir(p, m) => w.add_dir(p, *m),
                E::File(p, m, d) => w.add_file(p, *m, &mut &d[..]).map(|_| ()),
                E::Symlink(p, m, t) => w.add_symlink(p, *m, t),
                E::Hardlink(p, t) => w.add_hardlink(p, t),
            };
            let shown = String::from_utf8_lossy(&path);
            match (want, got) {
                (Ok(()), Ok(())) => {
                    for (i, _) in path.iter().enumerate().filter(|(_, &b)| b == b'/') {
                        model
                            .entry(path[..i].to_vec())
                            .or_insert(Kind::Dir { explicit: false });
                    }
                    model.insert(path.clone(), kind);
                    if let E::File(..) = entry {
                        files.push(path.clone());
                    }
                    accepted.push(entry);
                }
                (Err(why), Err(e)) => {
                    assert_eq!(name(&e), why, "seed {seed} step {step} {shown:?}");
                    *refusals.entry(why).or_default() += 1;
                }
                (want, got) => {
                    panic!("seed {seed} step {step} {shown:?}: want {want:?}, got {got:?}")
                }
            }
        }
        let (f, stats) = w.finish().unwrap();
        f.set_len(stats.image_bytes).unwrap();
        let (_x, root) = extract(&image);
        assert_same_tree(&walk(&root), &expected(&accepted));
    }
    eprintln!("refusals: {refusals:?}");
    assert_eq!(
        refusals.len(),
        3,
        "every kind of refusal was exercised: {refusals:?}"
    );
}
