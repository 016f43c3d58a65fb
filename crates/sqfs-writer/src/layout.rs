//! Lays out everything after the data blocks: inode, directory, fragment, export and
//! id tables, then the superblock that points at them.
//!
//! Inodes are numbered and written in one depth-first post-order walk with children in
//! byte order of their names, so numbering depends only on the tree, never on the order
//! in which entries were added. Table order follows mksquashfs, which the kernel's
//! sanity checks expect: inodes, directories, fragments, export, ids.

use std::collections::BTreeSet;

use crate::compress::{self, Compressor};
use crate::dir::{self, Entry};
use crate::inode::{self, DirInode, FileInode, Header, NO_FRAGMENT};
use crate::meta::MetaWriter;
use crate::pipeline::Placed;
use crate::superblock::{flags, Superblock};
use crate::tree::{Kind, NodeId, Tree, ROOT};
use crate::{Error, Options};

pub(crate) struct Tables {
    /// Bytes to write at the table start.
    pub bytes: Vec<u8>,
    pub superblock: Superblock,
}

/// `placed`: where each pipeline job went; `fragment_jobs`: the job of each fragment block.
pub(crate) fn build(
    tree: &Tree,
    placed: &[Placed],
    fragment_jobs: &[u64],
    opts: &Options,
    table_start: u64,
) -> Result<Tables, Error> {
    let nodes = tree.nodes();
    let mut comp = Compressor::new(opts.compression)?;
    let ids = IdTable::new(tree)?;
    let (order, numbers) = number(tree);
    let inode_count = order.len() as u32;

    let mut inodes = MetaWriter::new();
    let mut dirs = MetaWriter::new();
    let mut refs = vec![0u64; nodes.len()];
    let mut buf = Vec::new();
    let mut words = Vec::new();
    for &id in &order {
        let node = &nodes[id as usize];
        let header = Header {
            mode: node.meta.mode,
            uid_idx: ids.index(node.meta.uid),
            gid_idx: ids.index(node.meta.gid),
            mtime: node.meta.mtime,
            number: numbers[id as usize],
        };
        buf.clear();
        match &node.kind {
            Kind::File { data, nlink } => {
                let jobs = &placed[data.first_job as usize..][..data.blocks as usize];
                words.clear();
                words.extend(jobs.iter().map(|p| p.word));
                let holes = jobs.iter().filter(|p| p.word == 0).count() as u64;
                let (fragment, fragment_offset) = data
                    .fragment
                    .map_or((NO_FRAGMENT, 0), |f| (f.index, f.offset));
                let f = FileInode {
                    blocks_start: jobs.first().map_or(0, |p| p.offset),
                    size: data.size,
                    sparse: holes * u64::from(opts.block_size),
                    nlink: *nlink,
                    fragment,
                    fragment_offset,
                    block_words: &words,
                };
                inode::file(&header, &f, &mut buf);
            }
            Kind::Symlink(target) => inode::symlink(&header, target, &mut buf),
            Kind::Dir(d) => {
                let entries: Vec<Entry<'_>> = d
                    .children
                    .iter()
                    .map(|(name, &child)| Entry {
                        name,
                        inode_ref: refs[child as usize],
                        number: numbers[child as usize],
                        kind: match nodes[child as usize].kind {
                            Kind::Dir(_) => inode::DIR,
                            Kind::File { .. } => inode::FILE,
                            Kind::Symlink(_) => inode::SYMLINK,
                        },
                    })
                    .collect();
                let subdirs = entries.iter().filter(|e| e.kind == inode::DIR).count();
                let listing = dir::write(&mut dirs, &mut comp, &entries);
                let parent = if id == ROOT {
                    // As mksquashfs does: one past the last inode.
                    inode_count + 1
                } else {
                    numbers[d.parent as usize]
                };
                let d = DirInode {
                    start_block: listing.start.block,
                    offset: listing.start.offset,
                    file_size: listing.len + 3,
                    nlink: 2 + subdirs as u32,
                    parent,
                    index: &listing.index,
                };
                inode::dir(&header, &d, &mut buf);
            }
        }
        refs[id as usize] = inodes.pos().reference();
        inodes.write(&buf, &mut comp);
    }

    let mut out = Vec::new();
    let mut sb = Superblock {
        inode_count,
        mkfs_time: nodes.iter().map(|n| n.meta.mtime).max().unwrap_or(0),
        block_size: opts.block_size,
        fragment_count: fragment_jobs.len() as u32,
        compression: compress::id(opts.compression),
        flags: flags::NO_XATTRS | flags::EXPORTABLE | flags::DUPLICATES | flags::ALWAYS_FRAGMENTS,
        id_count: ids.ids.len() as u16,
        root_inode: refs[ROOT as usize],
        ..Default::default()
    };
    if compress::options_record(opts.compression).is_some() {
        sb.flags |= flags::COMPRESSOR_OPTIONS;
    }
    sb.inode_table = table_start;
    out.extend_from_slice(&inodes.finish(&mut comp).0);
    sb.directory_table = table_start + out.len() as u64;
    out.extend_from_slice(&dirs.finish(&mut comp).0);

    let mut fragments = Vec::with_capacity(fragment_jobs.len() * 16);
    for &job in fragment_jobs {
        let p = placed[job as usize];
        inode::put64(&mut fragments, p.offset);
        inode::put32(&mut fragments, p.word);
        inode::put32(&mut fragments, 0);
    }
    sb.fragment_table = lookup_table(&mut out, table_start, &fragments, &mut comp);

    let mut export = vec![0u8; order.len() * 8];
    for &id in &order {
        let at = (numbers[id as usize] - 1) as usize * 8;
        export[at..at + 8].copy_from_slice(&refs[id as usize].to_le_bytes());
    }
    sb.export_table = lookup_table(&mut out, table_start, &export, &mut comp);

    let id_bytes: Vec<u8> = ids.ids.iter().flat_map(|i| i.to_le_bytes()).collect();
    sb.id_table = lookup_table(&mut out, table_start, &id_bytes, &mut comp);
    sb.bytes_used = table_start + out.len() as u64;
    Ok(Tables {
        bytes: out,
        superblock: sb,
    })
}

/// Writes `table` as metadata blocks followed by the list of their absolute offsets;
/// returns the offset of that list, which is what the superblock points at.
fn lookup_table(out: &mut Vec<u8>, table_start: u64, table: &[u8], comp: &mut Compressor) -> u64 {
    let blocks_at = table_start + out.len() as u64;
    let mut w = MetaWriter::new();
    w.write(table, comp);
    let (bytes, starts) = w.finish(comp);
    out.extend_from_slice(&bytes);
    let list_at = table_start + out.len() as u64;
    for s in starts {
        inode::put64(out, blocks_at + u64::from(s));
    }
    list_at
}

/// Post-order walk with children in name order. Returns the nodes in write order and
/// each node's inode number (1-based, equal to its position in that order).
fn number(tree: &Tree) -> (Vec<NodeId>, Vec<u32>) {
    let nodes = tree.nodes();
    let mut numbers = vec![0u32; nodes.len()];
    let mut order = Vec::with_capacity(nodes.len());
    let children = |id: NodeId| -> Vec<NodeId> {
        match &nodes[id as usize].kind {
            Kind::Dir(d) => d.children.values().copied().collect(),
            _ => Vec::new(),
        }
    };
    // An explicit stack: image trees from hostile layers may be arbitrarily deep.
    let mut stack = vec![(ROOT, children(ROOT), 0usize)];
    while let Some((id, kids, next)) = stack.last_mut() {
        if let Some(&child) = kids.get(*next) {
            *next += 1;
            if numbers[child as usize] != 0 {
                continue; // a hardlink to a file already numbered
            }
            if matches!(nodes[child as usize].kind, Kind::Dir(_)) {
                stack.push((child, children(child), 0));
            } else {
                order.push(child);
                numbers[child as usize] = order.len() as u32;
            }
        } else {
            let id = *id;
            stack.pop();
            order.push(id);
            numbers[id as usize] = order.len() as u32;
        }
    }
    (order, numbers)
}

/// The distinct uids and gids, sorted so the table does not depend on insertion order.
struct IdTable {
    ids: Vec<u32>,
}

impl IdTable {
    fn new(tree: &Tree) -> Result<Self, Error> {
        let set: BTreeSet<u32> = tree
            .nodes()
            .iter()
            .flat_map(|n| [n.meta.uid, n.meta.gid])
            .collect();
        if set.len() > usize::from(u16::MAX) {
            return Err(Error::TooLarge("more than 65535 distinct uids and gids"));
        }
        Ok(IdTable {
            ids: set.into_iter().collect(),
        })
    }

    fn index(&self, id: u32) -> u16 {
        self.ids.binary_search(&id).unwrap_or_default() as u16
    }
}
