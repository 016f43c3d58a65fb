//! The 96-byte squashfs 4.0 superblock at the start of the image.

pub(crate) const SUPERBLOCK_SIZE: u64 = 96;
const MAGIC: u32 = 0x7371_7368; // "hsqs"
/// Marks an absent table (here: xattrs).
pub(crate) const NO_TABLE: u64 = u64::MAX;

pub(crate) mod flags {
    pub const DUPLICATES: u16 = 0x0040;
    pub const EXPORTABLE: u16 = 0x0080;
    pub const ALWAYS_FRAGMENTS: u16 = 0x0020;
    pub const NO_XATTRS: u16 = 0x0200;
    pub const COMPRESSOR_OPTIONS: u16 = 0x0400;
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Superblock {
    pub inode_count: u32,
    pub mkfs_time: u32,
    pub block_size: u32,
    pub fragment_count: u32,
    pub compression: u16,
    pub flags: u16,
    pub id_count: u16,
    pub root_inode: u64,
    pub bytes_used: u64,
    pub id_table: u64,
    pub inode_table: u64,
    pub directory_table: u64,
    pub fragment_table: u64,
    pub export_table: u64,
}

impl Superblock {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(SUPERBLOCK_SIZE as usize);
        b.extend_from_slice(&MAGIC.to_le_bytes());
        b.extend_from_slice(&self.inode_count.to_le_bytes());
        b.extend_from_slice(&self.mkfs_time.to_le_bytes());
        b.extend_from_slice(&self.block_size.to_le_bytes());
        b.extend_from_slice(&self.fragment_count.to_le_bytes());
        b.extend_from_slice(&self.compression.to_le_bytes());
        b.extend_from_slice(&(self.block_size.trailing_zeros() as u16).to_le_bytes());
        b.extend_from_slice(&self.flags.to_le_bytes());
        b.extend_from_slice(&self.id_count.to_le_bytes());
        b.extend_from_slice(&4u16.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        for v in [
            self.root_inode,
            self.bytes_used,
            self.id_table,
            NO_TABLE,
            self.inode_table,
            self.directory_table,
            self.fragment_table,
            self.export_table,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn superblock_is_96_bytes_with_magic_version_and_block_log() {
        let b = Superblock {
            block_size: 131072,
            ..Default::default()
        }
        .to_bytes();
        assert_eq!(b.len(), 96);
        assert_eq!(&b[..4], b"hsqs");
        assert_eq!(u16::from_le_bytes([b[22], b[23]]), 17);
        assert_eq!(u16::from_le_bytes([b[28], b[29]]), 4);
        assert_eq!(&b[56..64], &[0xff; 8], "no xattr table");
    }
}
