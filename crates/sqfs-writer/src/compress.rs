//! Block compressors and the superblock's compressor id and options record.

use crate::{Compression, Error};

/// One compressor instance; each pipeline thread owns its own.
pub(crate) enum Compressor {
    Gzip(Box<libdeflater::Compressor>),
    Zstd(Box<zstd::bulk::Compressor<'static>>),
    Lz4,
}

impl Compressor {
    pub fn new(c: Compression) -> Result<Self, Error> {
        Ok(match c {
            Compression::Gzip { level } => {
                let lvl = libdeflater::CompressionLvl::new(level as i32).map_err(|_| {
                    Error::BadOption(format!("gzip level {level} is not supported"))
                })?;
                Compressor::Gzip(Box::new(libdeflater::Compressor::new(lvl)))
            }
            Compression::Zstd { level } => Compressor::Zstd(Box::new(
                zstd::bulk::Compressor::new(level)
                    .map_err(|e| Error::BadOption(format!("zstd level {level}: {e}")))?,
            )),
            Compression::Lz4 => Compressor::Lz4,
        })
    }

    /// Compresses `input` into `out`. Returns false, leaving `out` unspecified, when the
    /// result would not be smaller than the input: squashfs then stores the block as is.
    pub fn compress(&mut self, input: &[u8], out: &mut Vec<u8>) -> bool {
        out.clear();
        let n = match self {
            Compressor::Gzip(c) => {
                out.resize(input.len(), 0);
                c.zlib_compress(input, out).ok()
            }
            Compressor::Zstd(c) => {
                out.reserve(input.len());
                c.compress_to_buffer(input, out).ok()
            }
            Compressor::Lz4 => {
                out.resize(lz4_flex::block::get_maximum_output_size(input.len()), 0);
                lz4_flex::block::compress_into(input, out).ok()
            }
        };
        match n {
            Some(n) if n < input.len() => {
                out.truncate(n);
                true
            }
            _ => false,
        }
    }
}

/// The superblock's compression id.
pub(crate) fn id(c: Compression) -> u16 {
    match c {
        Compression::Gzip { .. } => 1,
        Compression::Lz4 => 5,
        Compression::Zstd { .. } => 6,
    }
}

/// The compressor options record, written like mksquashfs does: only for non-default
/// levels, and always for lz4, whose kernel decompressor refuses an image without one.
pub(crate) fn options_record(c: Compression) -> Option<Vec<u8>> {
    match c {
        Compression::Gzip { level: 9 } | Compression::Zstd { level: 15 } => None,
        Compression::Gzip { level } => {
            let mut r = level.to_le_bytes().to_vec();
            r.extend_from_slice(&15u16.to_le_bytes()); // window bits, zlib's maximum
            r.extend_from_slice(&0u16.to_le_bytes()); // no strategies
            Some(r)
        }
        Compression::Zstd { level } => Some((level as u32).to_le_bytes().to_vec()),
        Compression::Lz4 => {
            let mut r = 1u32.to_le_bytes().to_vec(); // LZ4_LEGACY, the block format
            r.extend_from_slice(&0u32.to_le_bytes()); // not LZ4 HC
            Some(r)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Compression; 3] = [
        Compression::Gzip { level: 9 },
        Compression::Zstd { level: 3 },
        Compression::Lz4,
    ];

    #[test]
    fn repetitive_data_compresses_and_decompresses_to_the_input() {
        let input: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
        for c in ALL {
            let mut out = Vec::new();
            assert!(
                Compressor::new(c).unwrap().compress(&input, &mut out),
                "{c:?}"
            );
            assert!(out.len() < input.len() / 4);
            let back = match c {
                Compression::Gzip { .. } => {
                    let mut d = libdeflater::Decompressor::new();
                    let mut back = vec![0; input.len()];
                    let n = d.zlib_decompress(&out, &mut back).unwrap();
                    back.truncate(n);
                    back
                }
                Compression::Zstd { .. } => zstd::bulk::decompress(&out, input.len()).unwrap(),
                Compression::Lz4 => lz4_flex::block::decompress(&out, input.len()).unwrap(),
            };
            assert_eq!(back, input, "{c:?}");
        }
    }

    #[test]
    fn incompressible_data_is_reported_as_not_smaller() {
        let mut x = 0x9e3779b97f4a7c15u64;
        let input: Vec<u8> = (0..8192)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        for c in ALL {
            let mut out = Vec::new();
            assert!(
                !Compressor::new(c).unwrap().compress(&input, &mut out),
                "{c:?}"
            );
        }
    }

    #[test]
    fn options_match_mksquashfs_records() {
        // Bytes taken from mksquashfs 4.5.1 images made with these settings.
        let hex = |v: Option<Vec<u8>>| {
            v.map(|b| b.iter().map(|x| format!("{x:02x}")).collect::<String>())
        };
        assert_eq!(hex(options_record(Compression::Gzip { level: 9 })), None);
        assert_eq!(
            hex(options_record(Compression::Gzip { level: 6 })).as_deref(),
            Some("060000000f000000")
        );
        assert_eq!(hex(options_record(Compression::Zstd { level: 15 })), None);
        assert_eq!(
            hex(options_record(Compression::Zstd { level: 3 })).as_deref(),
            Some("03000000")
        );
        assert_eq!(
            hex(options_record(Compression::Lz4)).as_deref(),
            Some("0100000000000000")
        );
    }
}
