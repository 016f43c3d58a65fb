//! Encoding of the inode records (squashfs 4.0 layout, little endian).

/// Basic inode types; directory entries always carry these even for extended inodes.
pub(crate) const DIR: u16 = 1;
pub(crate) const FILE: u16 = 2;
pub(crate) const SYMLINK: u16 = 3;
const EXT_DIR: u16 = 8;
const EXT_FILE: u16 = 9;

pub(crate) const NO_FRAGMENT: u32 = u32::MAX;
const NO_XATTR: u32 = u32::MAX;

/// The fields every inode starts with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Header {
    pub mode: u16,
    pub uid_idx: u16,
    pub gid_idx: u16,
    pub mtime: u32,
    pub number: u32,
}

impl Header {
    fn put(&self, kind: u16, b: &mut Vec<u8>) {
        put16(b, kind);
        put16(b, self.mode);
        put16(b, self.uid_idx);
        put16(b, self.gid_idx);
        put32(b, self.mtime);
        put32(b, self.number);
    }
}

pub(crate) struct FileInode<'a> {
    pub blocks_start: u64,
    pub size: u64,
    pub sparse: u64,
    pub nlink: u32,
    pub fragment: u32,
    pub fragment_offset: u32,
    pub block_words: &'a [u32],
}

pub(crate) fn file(h: &Header, f: &FileInode<'_>, b: &mut Vec<u8>) {
    let basic_fits = f.nlink == 1
        && f.sparse == 0
        && f.size <= u32::MAX.into()
        && f.blocks_start <= u32::MAX.into();
    if basic_fits {
        h.put(FILE, b);
        put32(b, f.blocks_start as u32);
        put32(b, f.fragment);
        put32(b, f.fragment_offset);
        put32(b, f.size as u32);
    } else {
        h.put(EXT_FILE, b);
        put64(b, f.blocks_start);
        put64(b, f.size);
        put64(b, f.sparse);
        put32(b, f.nlink);
        put32(b, f.fragment);
        put32(b, f.fragment_offset);
        put32(b, NO_XATTR);
    }
    for w in f.block_words {
        put32(b, *w);
    }
}

pub(crate) fn symlink(h: &Header, target: &[u8], b: &mut Vec<u8>) {
    h.put(SYMLINK, b);
    put32(b, 1);
    put32(b, target.len() as u32);
    b.extend_from_slice(target);
}

pub(crate) struct DirInode<'a> {
    pub start_block: u32,
    pub offset: u16,
    /// The listing's length plus 3, as squashfs counts it.
    pub file_size: u32,
    pub nlink: u32,
    pub parent: u32,
    pub index: &'a [IndexEntry<'a>],
}

/// Points lookups in a large directory at the header starting a later metadata block.
pub(crate) struct IndexEntry<'a> {
    /// Offset of the header in the listing.
    pub index: u32,
    /// The metadata block holding that header, relative to the directory table.
    pub start_block: u32,
    /// The first name under that header.
    pub name: &'a [u8],
}

pub(crate) fn dir(h: &Header, d: &DirInode<'_>, b: &mut Vec<u8>) {
    if d.index.is_empty() && d.file_size <= u16::MAX.into() {
        h.put(DIR, b);
        put32(b, d.start_block);
        put32(b, d.nlink);
        put16(b, d.file_size as u16);
        put16(b, d.offset);
        put32(b, d.parent);
    } else {
        h.put(EXT_DIR, b);
        put32(b, d.nlink);
        put32(b, d.file_size);
        put32(b, d.start_block);
        put32(b, d.parent);
        put16(b, d.index.len() as u16);
        put16(b, d.offset);
        put32(b, NO_XATTR);
        for e in d.index {
            put32(b, e.index);
            put32(b, e.start_block);
            put32(b, e.name.len() as u32 - 1);
            b.extend_from_slice(e.name);
        }
    }
}

pub(crate) fn put16(b: &mut Vec<u8>, v: u16) {
    b.extend_from_slice(&v.to_le_bytes());
}
pub(crate) fn put32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_le_bytes());
}
pub(crate) fn put64(b: &mut Vec<u8>, v: u64) {
    b.extend_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Header = Header {
        mode: 0o4755,
        uid_idx: 1,
        gid_idx: 2,
        mtime: 3,
        number: 4,
    };

    fn file_with(nlink: u32, size: u64) -> Vec<u8> {
        let mut b = Vec::new();
        let f = FileInode {
            blocks_start: 96,
            size,
            sparse: 0,
            nlink,
            fragment: NO_FRAGMENT,
            fragment_offset: 0,
            block_words: &[10, 20],
        };
        file(&H, &f, &mut b);
        b
    }

    #[test]
    fn plain_files_use_the_basic_record() {
        let b = file_with(1, 200_000);
        assert_eq!(b.len(), 16 + 16 + 8);
        assert_eq!(u16::from_le_bytes([b[0], b[1]]), FILE);
        assert_eq!(u16::from_le_bytes([b[2], b[3]]), 0o4755);
    }

    #[test]
    fn hardlinked_and_huge_files_use_the_extended_record() {
        for b in [file_with(2, 10), file_with(1, 5 << 30)] {
            assert_eq!(b.len(), 16 + 40 + 8);
            assert_eq!(u16::from_le_bytes([b[0], b[1]]), EXT_FILE);
        }
    }

    #[test]
    fn directories_with_an_index_use_the_extended_record() {
        let idx = [IndexEntry {
            index: 8200,
            start_block: 3000,
            name: b"zz",
        }];
        let mut d = DirInode {
            start_block: 0,
            offset: 0,
            file_size: 20000,
            nlink: 2,
            parent: 9,
            index: &[],
        };
        let mut b = Vec::new();
        dir(&H, &d, &mut b);
        assert_eq!((u16::from_le_bytes([b[0], b[1]]), b.len()), (DIR, 32));
        d.index = &idx;
        b.clear();
        dir(&H, &d, &mut b);
        assert_eq!(
            (u16::from_le_bytes([b[0], b[1]]), b.len()),
            (EXT_DIR, 40 + 12 + 2)
        );
    }
}
