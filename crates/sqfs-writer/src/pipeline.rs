//! Parallel block compression with in-order output.
//!
//! The caller's thread reads data and submits blocks; a fixed pool of threads compresses
//! them; finished blocks are written in submission order so every block's position is
//! independent of thread timing. At most `2 × threads + 1` blocks are in flight, which
//! bounds memory whatever the size of the image.

use std::collections::BTreeMap;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};

use crate::compress::Compressor;
use crate::{Compression, Error};

/// Size-word bit marking a block stored uncompressed.
pub(crate) const DATA_UNCOMPRESSED: u32 = 1 << 24;

struct Job {
    seq: u64,
    data: Vec<u8>,
    /// Full data blocks of zeros become holes; fragment blocks never do.
    may_be_sparse: bool,
}

enum Outcome {
    Compressed,
    Raw,
    Sparse,
    Panicked,
}

struct Done {
    seq: u64,
    data: Vec<u8>,
    out: Vec<u8>,
    outcome: Outcome,
}

/// Where one block went: its offset in the image and its squashfs size word
/// (compressed length, or length | [`DATA_UNCOMPRESSED`], or 0 for a hole).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Placed {
    pub offset: u64,
    pub word: u32,
}

pub(crate) struct Pipeline {
    jobs: Option<Sender<Job>>,
    done: Receiver<Done>,
    workers: Vec<JoinHandle<()>>,
    next_seq: u64,
    next_write: u64,
    reorder: BTreeMap<u64, Done>,
    max_in_flight: u64,
    spare: Vec<Vec<u8>>,
    block_size: usize,
    placed: Vec<Placed>,
    pos: u64,
    pub sparse_blocks: u64,
}

impl Pipeline {
    /// Starts `threads` compression threads; output begins at byte `start`.
    pub fn new(
        threads: usize,
        comp: Compression,
        block_size: usize,
        start: u64,
    ) -> Result<Self, Error> {
        let threads = threads.max(1);
        let max_in_flight = 2 * threads + 1;
        let (job_tx, job_rx) = bounded::<Job>(max_in_flight);
        let (done_tx, done_rx) = unbounded::<Done>();
        let mut workers = Vec::with_capacity(threads);
        for i in 0..threads {
            let compressor = Compressor::new(comp)?;
            let (rx, tx) = (job_rx.clone(), done_tx.clone());
            let handle = std::thread::Builder::new()
                .name(format!("sqfs-compress-{i}"))
                .spawn(move || work(compressor, block_size, &rx, &tx))?;
            workers.push(handle);
        }
        Ok(Pipeline {
            jobs: Some(job_tx),
            done: done_rx,
            workers,
            next_seq: 0,
            next_write: 0,
            reorder: BTreeMap::new(),
            max_in_flight: max_in_flight as u64,
            spare: Vec::new(),
            block_size,
            placed: Vec::new(),
            pos: start,
            sparse_blocks: 0,
        })
    }

    /// An empty buffer with room for one block, recycled when possible.
    pub fn buffer(&mut self) -> Vec<u8> {
        self.spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.block_size))
    }

    /// Returns a buffer from [`Pipeline::buffer`] that was not submitted.
    pub fn recycle(&mut self, mut buf: Vec<u8>) {
        buf.clear();
        self.spare.push(buf);
    }

    /// Queues `data` for compression; returns its job number.
    pub fn submit(
        &mut self,
        out: &mut dyn Write,
        data: Vec<u8>,
        may_be_sparse: bool,
    ) -> Result<u64, Error> {
        while self.next_seq - self.next_write >= self.max_in_flight {
            self.wait_one(out)?;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let job = Job {
            seq,
            data,
            may_be_sparse,
        };
        self.jobs
            .as_ref()
            .and_then(|j| j.send(job).ok())
            .ok_or_else(worker_died)?;
        while let Ok(done) = self.done.try_recv() {
            self.reorder.insert(done.seq, done);
        }
        self.write_ready(out)?;
        Ok(seq)
    }

    /// Waits for every queued block to be written.
    pub fn flush(&mut self, out: &mut dyn Write) -> Result<(), Error> {
        while self.next_write < self.next_seq {
            self.wait_one(out)?;
        }
        Ok(())
    }

    /// Forgets job `first` and every later one, all of which must have been written
    /// (call [`Pipeline::flush`] first); the next block goes where `first` went.
    /// Returns that offset and the end of what had been written.
    pub fn rewind(&mut self, first: u64) -> (u64, u64) {
        debug_assert_eq!(self.next_write, self.next_seq);
        let dropped = self.placed.split_off(first as usize);
        self.sparse_blocks -= dropped.iter().filter(|p| p.word == 0).count() as u64;
        let end = self.pos;
        self.pos = dropped.first().map_or(end, |p| p.offset);
        self.next_seq = first;
        self.next_write = first;
        (self.pos, end)
    }

    /// Where each job written so far went, by job number.
    pub fn placed(&self) -> &[Placed] {
        &self.placed
    }

    /// The offset just past the last block written.
    pub fn end(&self) -> u64 {
        self.pos
    }

    fn wait_one(&mut self, out: &mut dyn Write) -> Result<(), Error> {
        let done = self.done.recv().map_err(|_| worker_died())?;
        self.reorder.insert(done.seq, done);
        self.write_ready(out)
    }

    fn write_ready(&mut self, out: &mut dyn Write) -> Result<(), Error> {
        while let Some(done) = self.reorder.remove(&self.next_write) {
            let word = match done.outcome {
                Outcome::Compressed => {
                    out.write_all(&done.out)?;
                    done.out.len() as u32
                }
                Outcome::Raw => {
                    out.write_all(&done.data)?;
                    done.data.len() as u32 | DATA_UNCOMPRESSED
                }
                Outcome::Sparse => {
                    self.sparse_blocks += 1;
                    0
                }
                Outcome::Panicked => return Err(worker_died()),
            };
            self.placed.push(Placed {
                offset: self.pos,
                word,
            });
            self.pos += u64::from(word & !DATA_UNCOMPRESSED);
            self.next_write += 1;
            let mut data = done.data;
            data.clear();
            self.spare.push(data);
        }
        Ok(())
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        // Closing the job channel ends the threads once they finish their current block.
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn worker_died() -> Error {
    Error::Io(std::io::Error::other("a compression thread died"))
}

fn work(mut comp: Compressor, block_size: usize, jobs: &Receiver<Job>, done: &Sender<Done>) {
    let mut out = Vec::with_capacity(block_size);
    for job in jobs.iter() {
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            if job.may_be_sparse && job.data.len() == block_size && is_zero(&job.data) {
                Outcome::Sparse
            } else if comp.compress(&job.data, &mut out) {
                Outcome::Compressed
            } else {
                Outcome::Raw
            }
        }))
        .unwrap_or(Outcome::Panicked);
        let result = Done {
            seq: job.seq,
            data: job.data,
            out: std::mem::replace(&mut out, Vec::with_capacity(block_size)),
            outcome,
        };
        if done.send(result).is_err() {
            return;
        }
    }
}

/// Blocks are at most 1 MiB; comparing with zeros is one memcmp.
static ZEROS: [u8; 1 << 20] = [0; 1 << 20];

fn is_zero(data: &[u8]) -> bool {
    data.len() <= ZEROS.len() && data == &ZEROS[..data.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_written_in_submission_order_whatever_the_thread_count() {
        let bs = 4096;
        let blocks: Vec<Vec<u8>> = (0..40u32)
            .map(|i| (0..bs as u32).map(|j| ((j * (i + 1)) % 97) as u8).collect())
            .collect();
        let run = |threads| {
            let mut p = Pipeline::new(threads, Compression::Lz4, bs, 100).unwrap();
            let mut out = Vec::new();
            for b in &blocks {
                p.submit(&mut out, b.clone(), true).unwrap();
            }
            p.flush(&mut out).unwrap();
            (out, p.placed().to_vec())
        };
        let (one, placed) = run(1);
        assert_eq!(run(4), (one.clone(), placed.clone()));
        assert_eq!(placed.len(), 40);
        assert_eq!(placed[0].offset, 100);
        for (i, b) in blocks.iter().enumerate() {
            let start = (placed[i].offset - 100) as usize;
            let len = placed[i].word as usize;
            let back = lz4_flex::block::decompress(&one[start..start + len], bs).unwrap();
            assert_eq!(&back, b);
        }
    }

    #[test]
    fn zero_blocks_become_holes_and_random_blocks_are_stored_raw() {
        let bs = 4096;
        let mut p = Pipeline::new(2, Compression::Gzip { level: 9 }, bs, 0).unwrap();
        let mut out = Vec::new();
        let mut x = 1u32;
        let random: Vec<u8> = (0..bs)
            .map(|_| {
                x = x.wrapping_mul(1664525).wrapping_add(1013904223);
                (x >> 24) as u8
            })
            .collect();
        p.submit(&mut out, vec![0; bs], true).unwrap();
        p.submit(&mut out, random.clone(), true).unwrap();
        p.submit(&mut out, vec![0; bs], false).unwrap();
        p.flush(&mut out).unwrap();
        let placed = p.placed().to_vec();
        assert_eq!(placed[0], Placed { offset: 0, word: 0 });
        assert_eq!(
            placed[1],
            Placed {
                offset: 0,
                word: bs as u32 | DATA_UNCOMPRESSED
            }
        );
        assert_eq!(&out[..bs], &random[..]);
        assert!(placed[2].word > 0 && placed[2].word < 100);
        assert_eq!(p.sparse_blocks, 1);
    }
}
