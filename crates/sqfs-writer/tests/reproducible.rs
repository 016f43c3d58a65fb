//! The same calls give the same bytes; metadata does not depend on call order.

mod common;

use common::*;
use sqfs_writer::Compression;

const BS: u32 = 128 * 1024;

fn bytes(entries: &[E], threads: usize, c: Compression) -> Vec<u8> {
    let (_tmp, image, _) = build(entries, opts(c, BS, threads));
    std::fs::read(image).unwrap()
}

#[test]
fn same_calls_give_identical_bytes_whatever_the_thread_count() {
    for c in [
        Compression::Gzip { level: 9 },
        Compression::Zstd { level: 3 },
        Compression::Lz4,
    ] {
        let entries = mixed_tree(BS as usize);
        let one = bytes(&entries, 1, c);
        assert_eq!(one, bytes(&entries, 1, c), "{c:?}: two runs differ");
        assert_eq!(
            one,
            bytes(&entries, 3, c),
            "{c:?}: thread count changes the output"
        );
    }
}

/// Entries without data (directories, symlinks, empty files, hardlinks, implicit
/// parents) may arrive in any order: the image is the same.
#[test]
fn entries_without_data_in_any_order_give_identical_bytes() {
    let t = 1_600_000_000;
    let mut entries = vec![
        dir("", meta(0, 0, 0o755, t)),
        dir("usr", meta(0, 0, 0o755, t + 1)),
        dir("usr/lib", meta(0, 0, 0o755, t + 2)),
        dir("var/empty", meta(0, 0, 0o700, t + 3)),
        symlink("lib", meta(0, 0, 0o777, t + 4), "usr/lib"),
        symlink("usr/lib/libx.so", meta(0, 0, 0o777, t + 5), "libx.so.1"),
        file("usr/lib/libx.so.1", meta(0, 0, 0o644, t + 6), vec![]),
        file("etc/motd", meta(0, 0, 0o644, t + 7), vec![]),
        dir("home/u", meta(1000, 1000, 0o750, t + 8)),
    ];
    for i in 0..300 {
        entries.push(file(
            &format!("home/u/f{i}"),
            meta(1000, 1000, 0o600, i),
            vec![],
        ));
        entries.push(symlink(
            &format!("opt/s{i}"),
            meta(i % 5, 0, 0o777, i),
            "target",
        ));
    }
    let c = Compression::Gzip { level: 9 };
    let mut ordered = entries.clone();
    ordered.push(hardlink("usr/lib/libx-copy", "usr/lib/libx.so.1"));
    ordered.push(hardlink("home/u/motd", "etc/motd"));
    let want = bytes(&ordered, 1, c);
    let mut rng = 12345u64;
    for round in 0..6 {
        let mut shuffled = entries.clone();
        for i in (1..shuffled.len()).rev() {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            shuffled.swap(i, (rng % (i as u64 + 1)) as usize);
        }
        // Hardlinks need their target first: append them after the shuffle.
        shuffled.push(hardlink("usr/lib/libx-copy", "usr/lib/libx.so.1"));
        shuffled.push(hardlink("home/u/motd", "etc/motd"));
        assert_eq!(
            bytes(&shuffled, 2, c),
            want,
            "order {round} changed the image"
        );
    }
}

/// Files with data land in call order, but what a user sees does not depend on it.
#[test]
fn files_in_any_order_give_the_same_tree() {
    if !can_extract() {
        return;
    }
    let entries = mixed_tree(BS as usize);
    let mut reversed: Vec<E> = entries
        .iter()
        .filter(|e| !matches!(e, E::Hardlink(..)))
        .cloned()
        .collect();
    reversed.reverse();
    reversed.extend(
        entries
            .iter()
            .filter(|e| matches!(e, E::Hardlink(..)))
            .cloned(),
    );
    let (_a, one, _) = build(&entries, opts(Compression::Lz4, BS, 2));
    let (_b, two, _) = build(&reversed, opts(Compression::Lz4, BS, 2));
    assert_eq!(lln(&one), lln(&two));
    let (_x, r1) = extract(&one);
    let (_y, r2) = extract(&two);
    assert_same_tree(&walk(&r2), &walk(&r1));
}

#[test]
fn superblock_time_is_the_newest_mtime_not_the_clock() {
    let entries = vec![
        file("a", meta(0, 0, 0o644, 1000), "x"),
        dir("d", meta(0, 0, 0o755, 5000)),
        symlink("d/l", meta(0, 0, 0o777, 3000), "a"),
    ];
    let b = bytes(&entries, 1, Compression::Lz4);
    assert_eq!(u32::from_le_bytes(b[8..12].try_into().unwrap()), 5000);
}
