//! Conversion progress in the one unit every pass shares: stored (compressed)
//! layer bytes read, out of what the passes will read.

use super::layer::ReadCounter;

/// How far the conversion is: layer bytes (as stored in the blob cache) read so
/// far, of the total the conversion will read. The total is known before the first
/// byte; it grows once if the image needs the two-pass fallback.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DataProgress {
    pub read: u64,
    pub total: u64,
}

/// Turns the shared read counter into callbacks, only when the figure moved.
pub struct Reporter<'a> {
    counter: ReadCounter,
    total: u64,
    last: Option<DataProgress>,
    callback: &'a mut dyn FnMut(DataProgress),
}

impl<'a> Reporter<'a> {
    pub fn new(total: u64, callback: &'a mut dyn FnMut(DataProgress)) -> Self {
        let mut r = Reporter {
            counter: ReadCounter::default(),
            total,
            last: None,
            callback,
        };
        r.tick();
        r
    }

    pub fn counter(&self) -> ReadCounter {
        self.counter.clone()
    }

    /// Reports the counter (never past the total: the last pass may stop reading a
    /// layer early).
    pub fn tick(&mut self) {
        self.send(self.counter.get().min(self.total));
    }

    /// Another `more` bytes will be read from here on.
    pub fn extend(&mut self, more: u64) {
        self.total = self.counter.get().min(self.total) + more;
        self.tick();
    }

    /// Everything announced was done.
    pub fn finish(&mut self) {
        self.send(self.total);
    }

    fn send(&mut self, read: u64) {
        let now = DataProgress {
            read,
            total: self.total,
        };
        if self.last != Some(now) {
            self.last = Some(now);
            (self.callback)(now);
        }
    }
}
